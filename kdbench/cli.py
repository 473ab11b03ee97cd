"""The kdbench console script (user commands; ``stage`` is what the workflow's rules run)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

from kdbench.errors import KDBenchError

DESCRIPTION = """\
kdbench: a reproducibility benchmark for curriculum knowledge distillation.

The workflow runs with Snakemake (snakemake --cores all [--configfile config/<profile>.yaml]); these
commands check a profile, rebuild its tables from finished results, score other codebases' predictions,
and scaffold or check a method. A profile is a name (default, smoke, real-cpu, ...: config/<name>.yaml,
default is config/config.yaml) or a config file; like the workflow, kdbench reads it merged over
config/config.yaml.
"""


# Every job's log ends with this line: the wall time of the job's own work inside the process (from the start
# of the stage function to its end, imports and process start-up excluded). kdbench.benchmarks.overhead joins
# it with Snakemake's benchmark file (the job's whole wall time) to measure the per-job overhead.
JOB_TIME_LINE = "kdbench: job_s={:.3f}"
JOB_TIME_RE = re.compile(r"kdbench: job_s=([0-9.]+)")


@contextlib.contextmanager
def job_clock():
    t0 = time.perf_counter()
    yield
    print(JOB_TIME_LINE.format(time.perf_counter() - t0), file=sys.stderr, flush=True)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_stage(args: argparse.Namespace) -> None:
    from kdbench import stages

    _set_threads(args.threads)
    with job_clock():
        _run_stage(stages, args)


def _run_stage(stages, args: argparse.Namespace) -> None:
    spec = json.loads(args.spec) if args.spec else {}
    job = args.job
    if job == "prepare-data":
        stages.prepare_data(spec, Path(args.out_dir))
    elif job == "eval-set":
        stages.prepare_eval_set(spec, Path(args.data_dir), _path(args.workflow_split), Path(args.out), Path(args.info))
    elif job == "tokenizer":
        stages.build_tokenizer(spec, Path(args.train), Path(args.out_dir))
    elif job == "teacher":
        stages.train_teacher(spec, [Path(p) for p in args.data], Path(args.tokenizer), Path(args.out_dir),
                             Path(args.metrics))
    elif job == "student-init":
        stages.init_student(spec, [Path(p) for p in args.data], Path(args.tokenizer), Path(args.out_dir),
                            Path(args.metrics))
    elif job == "profile":
        stages.profile_difficulty(spec, Path(args.train), Path(args.student), Path(args.teacher), Path(args.out),
                                  Path(args.summary))
    elif job == "distill":
        stages.distill(spec, args.run, Path(args.methods_root), Path(args.train), Path(args.student),
                       _path(args.teacher), _path(args.profile), Path(args.out_dir), Path(args.metrics),
                       _path(args.cache), _path(args.cache_meta))
    elif job == "teacher-cache":
        stages.build_teacher_cache(spec, Path(args.train), Path(args.teacher), Path(args.tokenizer), Path(args.out),
                                   Path(args.metrics))
    elif job == "evaluate":
        seeds = [int(x) for x in args.eval_seeds.split(",")]
        stages.evaluate(spec, Path(args.model), Path(args.eval_set), seeds, args.label, Path(args.out_dir),
                        args.device)
    else:  # argparse restricts choices; kept for a clear message if they drift
        raise KDBenchError(f"unknown stage '{job}'")


def _profile_label(files: list[Path]) -> str:
    return " + ".join(str(f) for f in files)


def check_results_belong(results: Path, cfg: dict, label: str) -> None:
    """Results and config must describe the same experiment: the teacher recorded in the results was trained
    with the spec the config asks for (where the data live and the device aside). Otherwise every row would
    come out "missing" with no hint why; name the profile the results do match, if a shipped one does."""
    from kdbench.config import differing_keys, load_profile, shipped_profiles, teacher_spec
    from kdbench.errors import ResultError
    from kdbench.results import read_result

    def where_not_what(value):     # where the data live and the device say nothing about the experiment
        if isinstance(value, dict):
            return {k: where_not_what(v) for k, v in value.items() if k not in ("device", "data_dir")}
        return value

    def identity(config: dict) -> dict:
        return where_not_what(json.loads(json.dumps(teacher_spec(config))))

    trained = results / "teacher" / "train.json"
    if not trained.is_file():
        raise ResultError(f"{results}: no results of profile '{cfg['name']}' ({trained} is missing); "
                          f"run the workflow for it first (snakemake --cores all --configfile <its file>)")
    recorded = where_not_what(read_result(trained, "train").get("spec") or {})
    differ = differing_keys(identity(cfg), recorded)
    if not differ:
        return
    matches = []
    for name in shipped_profiles():
        with contextlib.suppress(KDBenchError):      # a broken profile elsewhere must not hide this error
            if not differing_keys(identity(load_profile(name)), recorded):
                matches.append(name)
    hint = (f"; they match profile '{matches[0]}': kdbench tables --profile {matches[0]}" if matches
            else "; give the profile (and --overrides) they were run with")
    raise ResultError(f"{results}: these results were not produced by profile '{cfg['name']}' ({label}): its teacher "
                      f"({trained}) was trained with other settings at {', '.join(differ[:5])}"
                      f"{' and more' if len(differ) > 5 else ''}{hint}")


def cmd_tables(args: argparse.Namespace) -> None:
    from kdbench.tables import build_tables

    if args.config_json:      # the workflow's paper_tables rule: the expected rows from its own resolved config
        with job_clock():
            written = build_tables(Path(args.results), Path(args.out), config_json=json.loads(args.config_json))
    else:
        from kdbench.config import load_config, profile_files, results_dir, tables_dir

        files = profile_files(args.profile, args.overrides or [])
        config = load_config(files[0], files[1:])
        results = Path(args.results) if args.results else results_dir(config)
        out = Path(args.out) if args.out else tables_dir(config)
        check_results_belong(results, config, _profile_label(files))
        with job_clock():
            written = build_tables(results, out, config=config)
    for path in written:
        print(path)


def cmd_score(args: argparse.Namespace) -> None:
    from kdbench.config import load_profile
    from kdbench.score import score_predictions

    data_dir = Path(args.data_dir) if args.data_dir else Path(load_profile("default")["data_dir"])
    result = score_predictions(Path(args.predictions), args.eval_set, data_dir=data_dir, fmt=args.format,
                               max_examples=args.max_examples)
    print(json.dumps(result, indent=2, ensure_ascii=False))


def cmd_new_method(args: argparse.Namespace) -> None:
    from kdbench.scaffold import new_method

    created = new_method(args.name, Path(args.methods_root))
    print(f"created {created}; edit method.py, method.yaml and README.md, then run: kdbench check-method {args.name}")


def cmd_check_method(args: argparse.Namespace) -> None:
    from kdbench.scaffold import check_method

    report = check_method(args.name, Path(args.methods_root))
    print(json.dumps(report, indent=2))
    if report["placeholders"]:
        print(f"kdbench: warning: {len(report['placeholders'])} template placeholder(s) left in "
              f"{report['directory']} (fill in the paper, the faithfulness and the deviations):", file=sys.stderr)
        for where in report["placeholders"]:
            print(f"  {where}", file=sys.stderr)


def cmd_validate_config(args: argparse.Namespace) -> None:
    from kdbench.config import WORKFLOW_CONFIG, load_config, profile_files, results_dir, tables_dir
    from kdbench.methods import SFT_RUN, discover_methods, resolve_runs

    files = profile_files(args.profile, args.overrides or [], standalone=args.standalone)
    cfg = load_config(files[0], files[1:])
    runs = resolve_runs(cfg, discover_methods(cfg["methods"]["root"]))
    seeds, eval_sets, eval_seeds = cfg["training"]["seeds"], cfg["evaluation"]["sets"], cfg["evaluation"]["seeds"]
    profile = files[0] if args.standalone or len(files) == 1 else files[1]
    command = "snakemake --cores all" + ("" if profile == WORKFLOW_CONFIG else f" --configfile {profile}")
    print(f"profile '{cfg['name']}' ({_profile_label(files)}): valid")
    print(f"  runs ({len(runs) + 1}, each × {len(seeds)} training seed(s) {seeds}): {', '.join([SFT_RUN, *runs])}")
    print(f"  evaluation: {', '.join(eval_sets)} × {len(eval_seeds)} eval seed(s); results in {results_dir(cfg)}/, "
          f"tables in {tables_dir(cfg)}/")
    print(f"  run it: {command}" + ("" if not args.overrides else " (with the --overrides as further --configfile)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    stage = sub.add_parser(
        "stage", help="run one workflow job (what the Snakemake rules call)",
        description="One workflow job as the Snakemake rules call it (workflow/rules/*.smk): not meant to be typed. "
                    "The job's resolved spec comes as JSON; its inputs and outputs as paths.")
    stage.add_argument("job", choices=["prepare-data", "eval-set", "tokenizer", "teacher", "student-init",
                                       "profile", "distill", "evaluate", "teacher-cache"], help="which workflow job to run")
    stage.add_argument("--spec", help="the job's resolved spec (JSON); its hash is the run id")
    stage.add_argument("--threads", type=int, help="torch intra-op threads (the rule's threads:)")
    for name in ("out-dir", "out", "info", "data-dir", "workflow-split", "train", "tokenizer", "metrics",
                 "student", "teacher", "summary", "profile", "methods-root", "run", "model", "eval-set",
                 "label", "eval-seeds", "cache", "cache-meta"):
        stage.add_argument(f"--{name}", help=f"the job's {name.replace('-', ' ')} (a path, name or list; see the rule)")
    stage.add_argument("--data", nargs="+", help="training splits (teacher, student-init)")
    stage.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    stage.set_defaults(func=cmd_stage)

    profile_help = ("a profile: a name (default, smoke, real-cpu, ...: config/<name>.yaml) or a config file; "
                    "read merged over config/config.yaml, as the workflow does (default: %(default)s)")
    tables = sub.add_parser(
        "tables", help="rebuild a profile's paper tables from its finished results (no training)",
        description="Rebuild the tables and figures of a profile from the results its workflow run left, "
                    "without training. The profile says which rows and eval sets are expected: a missing "
                    "result is an error, and so are results that another profile produced.")
    tables.add_argument("--profile", "--config", dest="profile", default="default", help=profile_help)
    tables.add_argument("--overrides", nargs="*", metavar="FILE",
                        help="further config files merged over the profile (as further --configfile)")
    tables.add_argument("--results", help="results directory (default: results/<the profile's name>)")
    tables.add_argument("--out", help="where the tables go (default: <tables.output_dir>/<the profile's name>)")
    tables.add_argument("--config-json", help=argparse.SUPPRESS)
    tables.set_defaults(func=cmd_tables)

    score = sub.add_parser(
        "score", help="score another codebase's predictions against an eval set (prints JSON)",
        description="Score a predictions file with kdbench's Rouge-L and exact match and the same protocol checks "
                    "(one prediction per record, nothing missing or extra). Reads the MiniLLM/DistiLLM/POCL "
                    "lineage's answers.jsonl ({\"text\": ...} per line, eval-set order) and preds.txt (prompt and "
                    "response per line, joined by two tabs), or a JSONL with 'id' and 'prediction'. Prints rouge_l "
                    "and exact_match (x100), n, and under 'lineage' the lineage evaluator's own rounded numbers.")
    score.add_argument("predictions", help="the predictions file (answers.jsonl, preds.txt or a keyed JSONL)")
    score.add_argument("--eval-set", required=True,
                       help="an eval set of the registry (evals/<name>: dolly, selfinst, vicuna, sinst, unni, ...) or a "
                            "records file the workflow prepared (results/<profile>/evalsets/<name>.jsonl)")
    score.add_argument("--data-dir", help="folder holding the eval sets' files (default: the default profile's "
                                          "data_dir, ../shared/data)")
    score.add_argument("--format", default="auto", choices=["auto", "answers", "preds", "jsonl"],
                       help="predictions format (default: %(default)s: .txt is preds, JSONL with 'id' is jsonl, "
                            "other JSONL answers)")
    score.add_argument("--max-examples", type=int,
                       help="score only the eval set's first N records (the lineage's --dev-num)")
    score.set_defaults(func=cmd_score)

    for command, func, summary, description, name_help in (
            ("new-method", cmd_new_method, "scaffold methods/NAME from methods/_template",
             "Create methods/NAME from methods/_template (method.py, method.yaml, README.md), ready for check-method.",
             "the new method's directory name (lowercase letters, digits, underscores)"),
            ("check-method", cmd_check_method, "run a method on a tiny model and data in seconds",
             "Load methods/NAME, check its metadata and README, and train every variant for a few steps on a tiny "
             "model and data; prints a JSON report, warns about template placeholders, exits 2 on a problem.",
             "the method's directory name")):
        method_command = sub.add_parser(command, help=summary, description=description)
        method_command.add_argument("name", help=name_help)
        method_command.add_argument("--methods-root", default="methods", help="where methods live (default: %(default)s)")
        method_command.set_defaults(func=func)

    validate = sub.add_parser(
        "validate-config", help="validate a profile and list the runs it asks for",
        description="Validate a profile as the workflow would load it and print its name, runs, seeds, eval sets, "
                    "where its results and tables go, and the command that runs it. Errors name the file and "
                    "line or the config key.")
    validate.add_argument("profile", nargs="?", default="default", help=profile_help)
    validate.add_argument("--overrides", nargs="*", metavar="FILE",
                          help="further config files merged over the profile (as further --configfile)")
    validate.add_argument("--standalone", action="store_true",
                          help="the profile alone, not merged over config/config.yaml "
                               "(as snakemake --replace-workflow-config)")
    validate.set_defaults(func=cmd_validate_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script: a workflow job (``stage``) runs in the warm worker when one can take it
    (kdbench.worker: torch and transformers already imported), every other command in this process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["stage"]:
        from kdbench import worker

        status = worker.run_job(argv)
        if status is not None:
            return status
    return run(argv)


def run(argv: list[str]) -> int:
    """Run one command in this process."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KDBenchError as exc:
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
