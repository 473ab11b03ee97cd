"""Paper tables from a synthetic results tree: statistics, loud errors, escaping, determinism.

``make_results`` writes the same layout and result JSONs as the workflow (kdbench.results.write_result),
with per-example Rouge-L drawn from a model where each run has a known effect; test_plots.py reuses it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdbench.errors import ResultError
from kdbench.integrity import seal
from kdbench.io import sha256_file, write_jsonl_atomic, write_text_atomic
from kdbench.results import write_result
from kdbench.tables import (MARK_BETTER, MARK_NOISE, MARK_WORSE, bootstrap_p_value, build_tables, holm_adjust,
                            latex_escape)

EVAL_SETS = ["set_a", "set_b"]
SEEDS, EVAL_SEEDS, TEACHER_SEED = [1, 2], [10, 20], 7
RUNS = {  # run -> (label, method, loss)
    "vanilla_kd-fkl": ("KD (FKL)", "vanilla_kd", "fkl"),
    "vanilla_kd-srkl": ("KD (SRKL)", "vanilla_kd", "srkl"),
    "pocl-fkl": ("POCL (FKL)", "pocl", "fkl"),
    "cpd": ("CPD", "cpd", "srkl"),
    "taid": ("TAID", "taid", None),
}


def _trace(method: str, n_train: int, epochs: int = 4, steps_per_epoch: int = 5) -> tuple[list, list, int]:
    """(trace, history, total steps) shaped like kdbench.train's metrics for each method."""
    trace, history, step = [], [], 0
    for epoch in range(epochs):
        frac = (epoch + 1) / epochs
        entry = {"stage": 0, "stage_name": "all", "epoch": epoch, "step": step, "n_examples": n_train}
        if method == "pocl":
            entry.update(stage=epoch, stage_name=f"stage{epoch}", n_examples=int(n_train * frac),
                         temperature=1 + epoch / (epochs - 1), kd_ratio=0.7 + 0.3 * epoch / (epochs - 1),
                         mean_true_level=1.5 + epoch, families={"sum": int(n_train * frac) // 2,
                                                                "sort": int(n_train * frac) - int(n_train * frac) // 2})
        elif method == "cpd":
            entry.update(stage_name="cpd", n_examples=int(n_train * (0.25 + 0.75 * epoch / (epochs - 1))),
                         mean_difficulty=0.1 + 0.4 * epoch / (epochs - 1), alpha=0.2 * epoch / (epochs - 1),
                         temperature=1 + epoch / (epochs - 1), kd_ratio=1.0, progression=epoch / (epochs - 1))
        elif method == "taid":
            entry.update(t=0.4 + 0.6 * epoch / epochs, momentum=0.0)
        trace.append(entry)
        for _ in range(steps_per_epoch):
            step += 1
            row = {"step": step, "loss": 6.0 * np.exp(-step / 8) + 0.5, "lr": 1e-3, "grad_norm": 1.0}
            if method in ("vanilla_kd", "pocl", "cpd"):
                row.update(temperature=entry.get("temperature", 1.0), kd_ratio=entry.get("kd_ratio", 1.0))
            if method == "taid":
                row.update(t=min(1.0, 0.4 + 0.6 * step / (epochs * steps_per_epoch)))
            history.append(row)
    return trace, history, step


def _train_doc(path: Path, run: str, seed: int, method: str, loss: str | None, n_train: int, wall: float) -> None:
    trace, history, total = _trace(method, n_train)
    hparams = {} if loss is None else {"loss": loss}
    names = list(dict.fromkeys(e["stage_name"] for e in trace))
    stages = [{"name": name, "epochs": sum(e["stage_name"] == name for e in trace),
               "steps": total // len(names), "wall_s": wall / len(names),
               "examples": sum(e["n_examples"] for e in trace if e["stage_name"] == name)} for name in names]
    metrics = {"wall_s": wall, "tokens": 1000, "peak_rss_mb": 100.0, "teacher_forward_passes": total,
               "examples": sum(e["n_examples"] for e in trace), "steps": total, "total_steps": total,
               "stages": stages, "history": history, "trace": trace}
    write_result(path, "train", {"run": {"method": method, "hparams": hparams}, "seed": seed},
                 {"role": "distill", "run": run, "seed": seed, "metrics": metrics})


def write_scores(directory: Path, run: str, eval_set: str, eval_seed: int, ids: list[str],
                 values: np.ndarray, levels: list[int] | None = None) -> None:
    rows = [{"id": i, "prediction": "p", "references": ["r"], "rouge_l": float(v), "exact_match": 0.0,
             **({"true_difficulty": levels[k]} if levels else {})} for k, (i, v) in enumerate(zip(ids, values))]
    write_jsonl_atomic(directory / "predictions.jsonl", rows)
    write_result(directory / "scores.json", "scores", {"eval_set": eval_set, "eval_seed": eval_seed},
                 {"model": run, "eval_set": eval_set, "eval_seed": eval_seed, "n": len(rows),
                  "rouge_l": float(np.mean(values)), "exact_match": 0.0, "predictions_file": "predictions.jsonl",
                  "predictions_sha256": sha256_file(directory / "predictions.jsonl"),
                  "generation": {"wall_s": 0.5, "new_tokens": 10 * len(rows)}, "scoring_s": 0.1,
                  "peak_rss_mb": 200.0 + eval_seed})


def make_results(root: Path, effects: dict[str, float] | None = None, seed_sd: float = 0.3,
                 n_examples: int = 80, runs: dict | None = None, profile: bool = True) -> tuple[Path, dict]:
    """A finished results tree and the --config-json the workflow would pass. Per-example Rouge-L =
    example base + run effect + training-seed shift (±seed_sd, the same for every run) + noise (sd 2);
    ``effects`` adds to a run's every score."""
    runs = dict(RUNS if runs is None else runs)
    effects = effects or {}
    results = root / "results"
    rng = np.random.default_rng(0)
    n_train = 40
    base = {es: rng.uniform(10, 60, n_examples) for es in EVAL_SETS}
    levels = [int(v) for v in rng.integers(1, 6, n_examples)]
    models = [("teacher", TEACHER_SEED)] + [(run, s) for run in ["sft", *runs] for s in SEEDS]
    for run, seed in models:
        shift = seed_sd * (1.0 if seed == SEEDS[0] else -1.0)     # the training seed moves every run alike
        for es in EVAL_SETS:
            ids = [f"{es}-{i:04d}" for i in range(n_examples)]
            for q in EVAL_SEEDS:
                noise = np.random.default_rng([seed, q, zlib.crc32(f"{run}/{es}".encode())]).normal(0, 2.0, n_examples)
                values = np.clip(base[es] + effects.get(run, 0.0) + shift + noise, 0, 100)
                write_scores(results / "eval" / run / f"seed{seed}" / es / f"es{q}", run, es, q, ids, values, levels)
    wall = {"sft": 5.0, "vanilla_kd-fkl": 20.0, "vanilla_kd-srkl": 21.0, "pocl-fkl": 26.0, "cpd": 15.0, "taid": 22.0}
    for run in ["sft", *runs]:
        method, loss = ("sft", None) if run == "sft" else runs[run][1:]
        for seed in SEEDS:
            _train_doc(results / "runs" / run / f"seed{seed}" / "train.json", run, seed, method, loss, n_train,
                       wall.get(run, 10.0) + seed)
    for role in ("teacher", "student_init"):
        _train_doc(results / role / "train.json", role, TEACHER_SEED, "sft", None, n_train, 3.0)
    write_result(results / "data" / "manifest.json", "data", {"seed": 0},
                 {"source": {}, "seed": 0, "splits": {"train": {"file": "train.jsonl", "count": n_train}}})
    for es in EVAL_SETS:
        write_result(results / "evalsets" / f"{es}.json", "eval_set", {"eval_set": es},
                     {"info": {"footnotes": [], "count": n_examples}, "display_name": es.replace("_", " ").upper()})
    if profile:
        true = rng.integers(1, 6, n_train)
        frame = pd.DataFrame({"id": [f"train-{i}" for i in range(n_train)],
                              "student_ce": true * 0.5 + rng.normal(0, 0.4, n_train),
                              "student_rouge_l": np.clip(80 - 12 * true + rng.normal(0, 8, n_train), 0, 100),
                              "teacher_ce": true * 0.2 + rng.normal(0, 0.5, n_train),
                              "true_difficulty": true, "family": "sum"})
        write_text_atomic(results / "profile" / "difficulty.csv", frame.to_csv(index=False))
        seal(results / "profile" / "difficulty.csv")
        write_result(results / "profile" / "summary.json", "profile", {"profile": {}},
                     {"n_examples": n_train, "wall_s": 4.0, "timings": {}, "peak_rss_mb": 300.0,
                      "tokens": {"student_ce": 1000, "teacher_ce": 1000, "generation": 600}, "tokens_per_s": 650.0,
                      "signal_quality": [{"signal": "student_ce", "spearman": 0.7, "n": n_train}]})
    config = {"tables": {"baseline": "vanilla_kd", "significance_level": 0.05, "bootstrap_samples": 500},
              "runs": {r: v[0] for r, v in runs.items()}, "methods": {r: v[1] for r, v in runs.items()},
              "losses": {r: v[2] or "fkl" for r, v in runs.items()}, "eval_sets": EVAL_SETS, "seeds": SEEDS,
              "eval_seeds": EVAL_SEEDS, "teacher_seed": TEACHER_SEED}
    return results, config


def build(tmp_path: Path, results: Path, config: dict, out: str = "tables") -> dict[str, pd.DataFrame]:
    build_tables(results, tmp_path / out, config_json=config, plots=False)
    return {"csv": pd.read_csv(tmp_path / out / "scores.csv").set_index("run"),
            "md": (tmp_path / out / "scores.md").read_text(encoding="utf-8")}


def md_row(markdown: str, label: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{markdown}")


# --------------------------------------------------------------------------- tests
def test_mean_sd_and_n_match_the_result_files(tmp_path):
    results, config = make_results(tmp_path)
    table = build(tmp_path, results, config)["csv"]
    values = [json.loads((results / f"eval/cpd/seed{s}/set_a/es{q}/scores.json").read_text())["rouge_l"]
              for s in SEEDS for q in EVAL_SEEDS]
    assert table.loc["cpd", "set_a_mean"] == pytest.approx(np.mean(values))
    assert table.loc["cpd", "set_a_sd"] == pytest.approx(np.std(values, ddof=1))
    assert table.loc["cpd", "n"] == len(SEEDS) * len(EVAL_SEEDS)
    assert table.loc["teacher", "n"] == len(EVAL_SEEDS)
    per_draw = [np.mean([json.loads((results / f"eval/cpd/seed{s}/{es}/es{q}/scores.json").read_text())["rouge_l"]
                         for es in EVAL_SETS]) for s in SEEDS for q in EVAL_SEEDS]
    assert table.loc["cpd", "avg_mean"] == pytest.approx(np.mean(per_draw))
    assert table.loc["cpd", "avg_sd"] == pytest.approx(np.std(per_draw, ddof=1))


def test_each_run_is_compared_with_vanilla_kd_of_the_same_loss(tmp_path):
    results, config = make_results(tmp_path)
    table = build(tmp_path, results, config)["csv"]
    assert table.loc["pocl-fkl", "baseline"] == "vanilla_kd-fkl"
    assert table.loc["cpd", "baseline"] == "vanilla_kd-srkl"
    assert table.loc["taid", "baseline"] == "vanilla_kd-fkl"
    assert table.loc["sft", "baseline"] == "vanilla_kd-fkl"
    assert pd.isna(table.loc["vanilla_kd-fkl", "baseline"]) and pd.isna(table.loc["teacher", "baseline"])
    # Δ is the difference of the two rows' means (all draws match).
    assert table.loc["cpd", "set_b_delta"] == pytest.approx(
        table.loc["cpd", "set_b_mean"] - table.loc["vanilla_kd-srkl", "set_b_mean"])
    assert table.loc["cpd", "avg_delta"] == pytest.approx(
        table.loc["cpd", "avg_mean"] - table.loc["vanilla_kd-srkl", "avg_mean"])


def test_a_run_without_a_same_loss_baseline_is_listed_not_tested(tmp_path):
    runs = {r: v for r, v in RUNS.items() if r != "vanilla_kd-srkl"}
    results, config = make_results(tmp_path, runs=runs, profile=False)
    out = build(tmp_path, results, config)
    assert pd.isna(out["csv"].loc["cpd", "baseline"]) and pd.isna(out["csv"].loc["cpd", "avg_p"])
    assert md_row(out["md"], "CPD")[-2:] == ["–", "–"]
    assert "No paired test (no 'vanilla_kd' run with the same loss in this config): CPD." in out["md"]


def test_clearly_better_and_worse_runs_are_marked_identical_runs_are_not(tmp_path):
    results, config = make_results(tmp_path, effects={"pocl-fkl": 6.0, "cpd": -6.0}, seed_sd=0.2)
    out = build(tmp_path, results, config)
    table, md = out["csv"], out["md"]
    assert table.loc["pocl-fkl", "avg_p"] < 0.01 and table.loc["pocl-fkl", "avg_significant"]
    assert table.loc["pocl-fkl", "avg_ci_low"] > 0
    assert table.loc["cpd", "set_a_significant"] and table.loc["cpd", "set_a_delta"] < 0
    assert MARK_BETTER in md_row(md, "POCL (FKL)")[3] and MARK_WORSE in md_row(md, "CPD")[3]
    assert not table.loc["pocl-fkl", "avg_within_noise"]


def test_a_run_identical_to_its_baseline_gets_no_significance_mark(tmp_path):
    results, config = make_results(tmp_path)
    # POCL-FKL's predictions replaced by exact copies of KD-FKL's: Δ = 0, p = 1.
    for s in SEEDS:
        for es in EVAL_SETS:
            for q in EVAL_SEEDS:
                src = results / f"eval/vanilla_kd-fkl/seed{s}/{es}/es{q}"
                rows = [json.loads(l) for l in (src / "predictions.jsonl").read_text().splitlines()]
                write_scores(results / f"eval/pocl-fkl/seed{s}/{es}/es{q}", "pocl-fkl", es, q,
                             [r["id"] for r in rows], np.array([r["rouge_l"] for r in rows]))
    out = build(tmp_path, results, config)
    table, md = out["csv"], out["md"]
    assert table.loc["pocl-fkl", "avg_delta"] == 0 and table.loc["pocl-fkl", "avg_p"] == 1.0
    assert not table.loc["pocl-fkl", ["set_a_significant", "set_b_significant", "avg_significant"]].any()
    row = md_row(md, "POCL (FKL)")
    assert not any(mark in cell for cell in row for mark in (MARK_BETTER, MARK_WORSE))
    assert MARK_NOISE in row[3]                       # Δ = 0 is below the baseline's seed sd


def test_within_seed_noise_flag(tmp_path):
    # Large training-seed shifts, a small consistent effect: significant per example, but within noise.
    results, config = make_results(tmp_path, effects={"pocl-fkl": 0.8, "cpd": 15.0}, seed_sd=4.0)
    out = build(tmp_path, results, config)
    table, md = out["csv"], out["md"]
    # The baseline's sd across its two training seeds' means: the shifts are +4 and -4, so about 4 * sqrt(2).
    sd = table.loc["pocl-fkl", "avg_baseline_sd"]
    assert sd == pytest.approx(4.0 * 2 ** 0.5, abs=0.5)
    assert abs(table.loc["pocl-fkl", "avg_delta"]) < sd and table.loc["pocl-fkl", "avg_within_noise"]
    assert MARK_NOISE in md_row(md, "POCL (FKL)")[3]
    assert abs(table.loc["cpd", "avg_delta"]) > table.loc["vanilla_kd-srkl", "avg_sd"]
    assert not table.loc["cpd", "avg_within_noise"] and MARK_NOISE not in md_row(md, "CPD")[3]


def test_missing_result_is_an_error_naming_the_file(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    (results / "eval/cpd/seed2/set_b/es20/scores.json").unlink()
    with pytest.raises(ResultError, match=r"eval/cpd/seed2/set_b/es20/scores\.json"):
        build(tmp_path, results, config)


def test_prediction_count_mismatch_is_an_error(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    path = results / "eval/taid/seed1/set_a/es10/predictions.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ResultError, match=r"taid/seed1/set_a/es10/predictions\.jsonl: 79 predictions"):
        build(tmp_path, results, config)


def test_different_prompts_in_the_two_runs_are_an_error_naming_both_files(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    directory = results / "eval/pocl-fkl/seed1/set_b/es20"
    rows = [json.loads(l) for l in (directory / "predictions.jsonl").read_text().splitlines()]
    rows[3]["id"] = "some-other-prompt"
    write_scores(directory, "pocl-fkl", "set_b", 20, [r["id"] for r in rows], np.array([r["rouge_l"] for r in rows]))
    with pytest.raises(ResultError) as info:
        build(tmp_path, results, config)
    message = str(info.value)
    assert "pocl-fkl/seed1/set_b/es20/predictions.jsonl" in message
    assert "vanilla_kd-fkl/seed1/set_b/es" in message and "some-other-prompt" in message


def test_edited_predictions_are_detected(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    path = results / "eval/cpd/seed1/set_a/es10/predictions.jsonl"
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    rows[0]["rouge_l"] += 50
    write_jsonl_atomic(path, rows)
    with pytest.raises(ResultError, match="sha256"):
        build(tmp_path, results, config)


def test_latex_is_escaped(tmp_path):
    assert latex_escape("a_b & 50% #1 {x} ~^ $") == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{}\textasciicircum{} \$"
    results, config = make_results(tmp_path, effects={"pocl-fkl": 6.0}, profile=False)
    config["runs"]["pocl-fkl"] = "POCL_v2 & co"
    build(tmp_path, results, config)
    tex = (tmp_path / "tables" / "scores.tex").read_text(encoding="utf-8")
    assert r"POCL\_v2 \& co" in tex and r"$\pm$" in tex and r"$\uparrow$" in tex
    assert tex.isascii(), [ch for ch in tex if not ch.isascii()]


def test_tables_are_deterministic(tmp_path):
    results, config = make_results(tmp_path, effects={"pocl-fkl": 0.5}, profile=False)
    build(tmp_path, results, config, out="one")
    build(tmp_path, results, config, out="two")
    for name in ("scores", "runtime", "difficulty"):
        for ext in ("md", "tex", "csv"):
            assert (tmp_path / "one" / f"{name}.{ext}").read_bytes() == (tmp_path / "two" / f"{name}.{ext}").read_bytes()
    p = pd.read_csv(tmp_path / "one" / "scores.csv").set_index("run").loc["pocl-fkl", "set_a_p"]
    assert 0 < p < 1                                   # a real bootstrap, not a degenerate 0 or 1


def test_losses_come_from_train_json_without_a_config(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    del config["losses"]
    table = build(tmp_path, results, config)["csv"]
    assert table.loc["cpd", "baseline"] == "vanilla_kd-srkl" and table.loc["taid", "baseline"] == "vanilla_kd-fkl"


def test_bootstrap_p_value_and_holm():
    rng = np.random.default_rng(0)
    assert bootstrap_p_value(np.zeros(99), 0.0) == 1.0
    assert bootstrap_p_value(np.full(99, 3.0), 3.0) == pytest.approx(1 / 100)
    boot = rng.normal(0.1, 1.0, 999)
    assert 0.5 < bootstrap_p_value(boot, 0.1) <= 1.0
    assert holm_adjust([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])


def test_runtime_table_lists_each_curriculum_stage_of_a_staged_method(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    build(tmp_path, results, config)
    runtime = pd.read_csv(tmp_path / "tables" / "runtime.csv")
    stages = runtime[(runtime.phase == "distillation stage") & (runtime.run == "pocl-fkl")]
    assert list(stages.label.str.strip()) == [f"stage {i} of 4" for i in range(1, 5)]
    # POCL's cumulative stages see a growing share of the training set: 10, 20, 30, 40 examples.
    assert list(stages.examples) == [10, 20, 30, 40]
    pocl_wall = runtime[(runtime.phase == "distillation") & (runtime.run == "pocl-fkl")].wall_s.item()
    assert stages.wall_s.sum() == pytest.approx(pocl_wall)
    assert runtime[(runtime.phase == "distillation stage") & (runtime.run != "pocl-fkl")].empty


def test_runtime_table_has_tokens_and_peak_rss_for_profiling_and_evaluation(tmp_path):
    results, config = make_results(tmp_path)
    build(tmp_path, results, config)
    runtime = pd.read_csv(tmp_path / "tables" / "runtime.csv")
    profiling = runtime[runtime.phase == "profiling"].iloc[0]
    assert (profiling.tokens, profiling.tokens_per_s, profiling.peak_rss_mb) == (2600, 650.0, 300.0)
    evaluation = runtime[(runtime.phase == "evaluation") & (runtime.run == "cpd")].iloc[0]
    # 2 training seeds x 2 eval sets x 2 eval seeds, 80 examples x 10 new tokens in 0.5 s each
    assert evaluation.tokens == 8 * 800 and evaluation.generation_s == pytest.approx(8 * 0.5)
    assert evaluation.tokens_per_s == pytest.approx(1600.0)
    assert evaluation.peak_rss_mb == 200.0 + max(EVAL_SEEDS)
    markdown = (tmp_path / "tables" / "runtime.md").read_text(encoding="utf-8")
    assert "Peak RSS (MiB)" in markdown and "| Difficulty profiling | 4.0 | 650 | 300 |" in markdown


def test_runtime_table_reads_results_written_before_profiling_tokens_were_recorded(tmp_path):
    results, config = make_results(tmp_path)
    summary = results / "profile" / "summary.json"
    doc = json.loads(summary.read_text())
    for key in ("tokens", "tokens_per_s", "peak_rss_mb"):
        doc.pop(key)
    summary.write_text(json.dumps(doc))
    build(tmp_path, results, config)
    runtime = pd.read_csv(tmp_path / "tables" / "runtime.csv")
    profiling = runtime[runtime.phase == "profiling"].iloc[0]
    assert pd.isna(profiling.tokens_per_s) and pd.isna(profiling.peak_rss_mb) and profiling.wall_s == 4.0


def test_a_set_scored_on_fewer_records_than_it_holds_gets_a_footnote(tmp_path):
    results, config = make_results(tmp_path, profile=False)
    assert "records scored" not in build(tmp_path, results, config)["md"]
    info_path = results / "evalsets" / "set_b.json"
    doc = json.loads(info_path.read_text())
    doc["info"]["count"] = 500                   # as if evaluation.max_examples had cut 500 records to 80
    info_path.write_text(json.dumps(doc))
    markdown = build(tmp_path, results, config, out="cut")["md"]
    assert "SET B: 80 of its 500 records scored (evaluation.max_examples keeps the first ones)." in markdown
    assert "SET A:" not in markdown


def _add_gpu_fields(path: Path, section: str | None, values: dict) -> None:
    doc = json.loads(path.read_text())
    (doc[section] if section else doc).update(values)
    path.write_text(json.dumps(doc))


def test_gpu_time_and_memory_columns_appear_only_for_runs_on_a_gpu(tmp_path):
    results, config = make_results(tmp_path)
    cpu_only = build(tmp_path, results, config, out="cpu")
    assert "GPU time" not in (tmp_path / "cpu" / "runtime.md").read_text(encoding="utf-8") and cpu_only
    for seed, cuda_s in zip(SEEDS, (4.0, 6.0)):
        _add_gpu_fields(results / "runs" / "cpd" / f"seed{seed}" / "train.json", "metrics",
                        {"cuda_time_s": cuda_s, "cuda_peak_memory_mb": 100.0 * seed})
        for es in EVAL_SETS:
            for q in EVAL_SEEDS:
                _add_gpu_fields(results / "eval" / "cpd" / f"seed{seed}" / es / f"es{q}" / "scores.json", "generation",
                                {"cuda_time_s": 0.25, "cuda_peak_memory_mb": 50.0})
    _add_gpu_fields(results / "profile" / "summary.json", None, {"cuda_time_s": 1.5, "cuda_peak_memory_mb": 70.0})
    build(tmp_path, results, config, out="gpu")
    runtime = pd.read_csv(tmp_path / "gpu" / "runtime.csv")
    train = runtime[(runtime.phase == "distillation") & (runtime.run == "cpd")].iloc[0]
    assert (train.gpu_time_s, train.gpu_peak_memory_mb) == (5.0, 200.0)        # mean time, largest memory
    evaluation = runtime[(runtime.phase == "evaluation") & (runtime.run == "cpd")].iloc[0]
    assert evaluation.gpu_time_s == pytest.approx(8 * 0.25) and evaluation.gpu_peak_memory_mb == 50.0
    profiling = runtime[runtime.phase == "profiling"].iloc[0]
    assert (profiling.gpu_time_s, profiling.gpu_peak_memory_mb) == (1.5, 70.0)
    assert runtime[(runtime.phase == "distillation") & (runtime.run == "taid")].gpu_time_s.isna().all()
    markdown = (tmp_path / "gpu" / "runtime.md").read_text(encoding="utf-8")
    assert "| GPU time (s) |" in markdown and "Peak GPU mem (MiB)" in markdown and "CUDA events" in markdown


def test_per_level_table_pools_every_draw_of_a_model(tmp_path):
    results, config = make_results(tmp_path)
    build(tmp_path, results, config)
    table = pd.read_csv(tmp_path / "tables" / "per_level.csv")
    assert list(table.columns[:8]) == ["run", "model", "eval_set", "family", "level", "exact_match", "rouge_l", "n"]
    row = table[(table.run == "cpd") & (table.eval_set == "set_a") & (table.level == 3)].iloc[0]
    values = []
    for seed in SEEDS:
        for q in EVAL_SEEDS:
            rows = pd.read_json(results / "eval" / "cpd" / f"seed{seed}" / "set_a" / f"es{q}" / "predictions.jsonl",
                                lines=True)
            values += rows[rows.true_difficulty == 3].rouge_l.tolist()
    assert row.rouge_l == pytest.approx(np.mean(values))
    assert row.n * len(SEEDS) * len(EVAL_SEEDS) == len(values) and row.draws == len(SEEDS) * len(EVAL_SEEDS)
    assert set(table[table.run == "teacher"].draws) == {len(EVAL_SEEDS)}
    assert "L1" in (tmp_path / "tables" / "per_level.md").read_text()


def test_difficulty_table_reports_pooled_and_within_family_rho_and_flags_degenerate_signals(tmp_path):
    results, config = make_results(tmp_path)
    csv = results / "profile" / "difficulty.csv"
    frame = pd.read_csv(csv)
    frame["student_rouge_l_sampled"] = np.where(frame.true_difficulty > 1, 0.0, 50.0)   # mostly one value
    write_text_atomic(csv, frame.to_csv(index=False))
    seal(csv)
    build(tmp_path, results, config)
    table = pd.read_csv(tmp_path / "tables" / "difficulty.csv").set_index("signal")
    assert {"spearman", "spearman_within_family", "constant_share", "n"} <= set(table.columns)
    assert table.loc["student_ce", "spearman"] > 0.5 and table.loc["student_ce", "constant_share"] == 1 / 40
    assert table.loc["student_rouge_l_sampled", "degenerate"]
    assert pd.isna(table.loc["student_rouge_l_sampled", "spearman"])
    assert table.loc["student_rouge_l_sampled", "constant_share"] > 0.2
    pocl = table.loc["ranking of POCL (FKL)"]
    assert pocl.kind == "method ranking" and pocl.used_by == "POCL (FKL)" and pocl.spearman > 0.5
    assert "degenerate" in (tmp_path / "tables" / "difficulty.md").read_text()


def test_curriculum_table_lists_each_epochs_subset_and_family_mix(tmp_path):
    results, config = make_results(tmp_path)
    build(tmp_path, results, config)
    table = pd.read_csv(tmp_path / "tables" / "curriculum.csv")
    assert set(table.run) == {"pocl-fkl"}
    assert table.n_examples.tolist() == [10, 20, 30, 40] and table.mean_true_level.tolist() == [1.5, 2.5, 3.5, 4.5]
    assert np.allclose(table.share_sum + table.share_sort, 1.0)


def test_scores_csv_counts_training_seeds(tmp_path):
    results, config = make_results(tmp_path)
    table = build(tmp_path, results, config)["csv"]
    assert table.loc["teacher", "training_seeds"] == 1 and table.loc["cpd", "training_seeds"] == len(SEEDS)
    assert (table.drop("teacher").n == len(SEEDS) * len(EVAL_SEEDS)).all()
