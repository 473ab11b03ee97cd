"""The ``kdbench`` console script.

User commands:  kdbench tables | new-method NAME | check-method NAME | validate-config FILE
Workflow jobs:  kdbench stage <job> --spec JSON ...   (called by the Snakemake rules)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

from kdbench.errors import KDBenchError


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


def cmd_tables(args: argparse.Namespace) -> None:
    from kdbench.tables import build_tables

    config = None
    if args.config:
        from kdbench.config import load_config

        config = load_config(args.config, args.overrides or [])
    with job_clock():
        written = build_tables(Path(args.results), Path(args.out), config=config,
                               config_json=json.loads(args.config_json) if args.config_json else None)
    for path in written:
        print(path)


def cmd_new_method(args: argparse.Namespace) -> None:
    from kdbench.scaffold import new_method

    created = new_method(args.name, Path(args.methods_root))
    print(f"created {created}; edit method.py, method.yaml and README.md, then run: kdbench check-method {args.name}")


def cmd_check_method(args: argparse.Namespace) -> None:
    from kdbench.scaffold import check_method

    report = check_method(args.name, Path(args.methods_root))
    print(json.dumps(report, indent=2))


def cmd_validate_config(args: argparse.Namespace) -> None:
    from kdbench.config import load_config
    from kdbench.methods import discover_methods, resolve_runs

    cfg = load_config(args.config, args.overrides or [])
    runs = resolve_runs(cfg, discover_methods(cfg["methods"]["root"]))
    print(f"{args.config}: valid; {len(runs)} runs: {', '.join(runs)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    stage = sub.add_parser("stage", help="run one workflow job (used by the Snakemake rules)")
    stage.add_argument("job", choices=["prepare-data", "eval-set", "tokenizer", "teacher", "student-init",
                                       "profile", "distill", "evaluate", "teacher-cache"])
    stage.add_argument("--spec")
    stage.add_argument("--threads", type=int)
    for name in ("out-dir", "out", "info", "data-dir", "workflow-split", "train", "tokenizer", "metrics",
                 "student", "teacher", "summary", "profile", "methods-root", "run", "model", "eval-set",
                 "label", "eval-seeds", "cache", "cache-meta"):
        stage.add_argument(f"--{name}")
    stage.add_argument("--data", nargs="+", help="training splits (teacher, student-init)")
    stage.add_argument("--device", default="auto")
    stage.set_defaults(func=cmd_stage)

    tables = sub.add_parser("tables", help="rebuild the paper tables from finished results (no training)")
    tables.add_argument("--results", default="results/default")
    tables.add_argument("--out", default="paper_tables/default")
    tables.add_argument("--config", help="config file (for table settings and expected rows)")
    tables.add_argument("--overrides", nargs="*", help="further config files merged over --config")
    tables.add_argument("--config-json", help=argparse.SUPPRESS)
    tables.set_defaults(func=cmd_tables)

    new = sub.add_parser("new-method", help="scaffold methods/NAME from methods/_template")
    new.add_argument("name")
    new.add_argument("--methods-root", default="methods")
    new.set_defaults(func=cmd_new_method)

    check = sub.add_parser("check-method", help="run a method on a tiny model and data in seconds")
    check.add_argument("name")
    check.add_argument("--methods-root", default="methods")
    check.set_defaults(func=cmd_check_method)

    validate = sub.add_parser("validate-config", help="validate a config file and list the runs it asks for")
    validate.add_argument("config")
    validate.add_argument("--overrides", nargs="*")
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
