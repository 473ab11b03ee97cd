"""Paper-style tables built with pandas from the per-run result JSONs.

One :class:`Table` object per table; Markdown, LaTeX (booktabs, escaped) and CSV are rendered from it.
  scores      Rouge-L mean ± sd (n = training seeds × eval seeds) per model and eval set, plus Avg.
              Every student row is compared with vanilla KD trained with the same loss (its
              hyperparameter ``loss``, default fkl; SFT against KD-FKL) by a paired bootstrap over
              examples: ↑/↓ = significantly better/worse at ``tables.significance_level``,
              † = |Δ| within seed noise. Δ, p-values (raw and Holm-adjusted) and the bootstrap
              CIs are columns of scores.csv; the method is documented in docs/statistics.md.
  runtime     wall-clock per phase (teacher SFT, student init, profiling, distillation per run,
              evaluation), tokens, tokens/s, peak RSS, training time relative to vanilla KD
  difficulty  Spearman correlation of each difficulty signal with the ground-truth level
build_tables() also draws the figures of kdbench.plots next to the tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdbench.errors import ResultError
from kdbench.integrity import verify
from kdbench.io import write_text_atomic
from kdbench.methods import SFT_RUN, TEACHER_RUN
from kdbench.results import read_result
from kdbench.stats import (bootstrap_p_value, bootstrap_rng, hierarchical_bootstrap, holm_adjust, mean_sd,
                           seed_draws)

SCORE_PATH = re.compile(r"eval/(?P<run>[^/]+)/seed(?P<seed>\d+)/(?P<eval_set>[^/]+)/es(?P<eval_seed>\d+)/scores\.json$")
REFERENCE_LABELS = {TEACHER_RUN: "Teacher", SFT_RUN: "SFT (student)"}
DEFAULT_LOSS = "fkl"                 # a method without a `loss` hyperparameter (TAID) and SFT compare to KD-FKL
MARK_BETTER, MARK_WORSE, MARK_NOISE = "↑", "↓", "†"
AVG = "avg"                          # the column key of Avg. in the comparison results


@dataclass
class Table:
    name: str
    title: str
    display: pd.DataFrame                 # formatted cells, the row label as the first column
    data: pd.DataFrame                    # numeric values for CSV
    footnotes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        header = "| " + " | ".join(self.display.columns) + " |"
        rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.display.columns))) + "|"
        body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
                for row in self.display.itertuples(index=False)]
        notes = [f"\n{i + 1}. {note}" for i, note in enumerate(self.footnotes)]
        return f"### {self.title}\n\n" + "\n".join([header, rule, *body]) + ("\n" + "".join(notes) if notes else "") + "\n"

    def to_latex(self) -> str:
        cols = "l" + "r" * (len(self.display.columns) - 1)
        lines = [f"% {latex_escape(self.title)}", r"\begin{table}[t]", r"\centering",
                 rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
                 " & ".join(latex_escape(c) for c in self.display.columns) + r" \\", r"\midrule"]
        for row in self.display.itertuples(index=False):
            lines.append(" & ".join(latex_escape(str(v)) for v in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        for note in self.footnotes:
            lines.append(rf"\par\footnotesize {latex_escape(note)}")
        lines += [rf"\caption{{{latex_escape(self.title)}}}", rf"\label{{tab:kdbench-{self.name}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        return self.data.to_csv(index=False)


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                  "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "Δ": r"$\Delta$",
                  "ρ": r"$\rho$", "α": r"$\alpha$", "≈": r"$\approx$", "→": r"$\to$", "–": "--", "—": "---",
                  "·": r"$\cdot$", "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def fmt_mean_sd(mean: float, sd: float, n: int) -> str:
    return f"{mean:.2f} ± {sd:.2f}" if n > 1 else f"{mean:.2f}"


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class ExampleScores:
    """Per-example scores of one (run, training seed, eval set, eval seed), indexed by example id:
    rouge_l, exact_match, and the ground-truth family and level where the eval set has them."""

    path: Path
    frame: pd.DataFrame

    @property
    def scores(self) -> pd.Series:
        return self.frame["rouge_l"]


def read_example_scores(predictions: Path, scores_path: Path, doc: dict) -> ExampleScores:
    """The predictions file of one scores.json, checked against it (count, hash, mean, unique ids)."""
    if not predictions.is_file():
        raise ResultError(f"{predictions}: predictions file missing for {scores_path}")
    text = predictions.read_text(encoding="utf-8")
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"id": str(row["id"]), "rouge_l": float(row["rouge_l"]),
                         "exact_match": float(row.get("exact_match", float("nan"))),
                         "family": row.get("family"), "level": row.get("true_difficulty")})
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultError(f"{predictions}:{lineno}: not a prediction row with an 'id' and a numeric "
                              f"'rouge_l' ({type(exc).__name__}: {exc})") from None
    if len(rows) != doc["n"]:
        raise ResultError(f"{predictions}: {len(rows)} predictions but {scores_path} reports n = {doc['n']}")
    if doc.get("predictions_sha256"):
        verify(predictions, {predictions.name: doc["predictions_sha256"]}, scores_path)
    frame = pd.DataFrame(rows, columns=["id", "rouge_l", "exact_match", "family", "level"]).set_index("id")
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()].unique()[:3].tolist()
        raise ResultError(f"{predictions}: duplicate example ids {dup}")
    if rows and not math.isclose(frame.rouge_l.mean(), doc["rouge_l"], rel_tol=1e-6, abs_tol=1e-6):
        raise ResultError(f"{predictions}: mean Rouge-L {frame.rouge_l.mean():.6f} disagrees with {scores_path} "
                          f"({doc['rouge_l']:.6f})")
    return ExampleScores(predictions, frame)


def load_results(results: Path) -> tuple[pd.DataFrame, dict[tuple, ExampleScores]]:
    """One row per scores.json, and the per-example scores keyed by (run, seed, eval_set, eval_seed)."""
    rows, examples = [], {}
    for path in sorted(results.glob("eval/*/seed*/*/es*/scores.json")):
        match = SCORE_PATH.search(path.relative_to(results).as_posix())
        if not match:
            continue
        doc = read_result(path, "scores")
        key = (match["run"], int(match["seed"]), match["eval_set"], int(match["eval_seed"]))
        examples[key] = read_example_scores(path.with_name(doc["predictions_file"]), path, doc)
        rows.append({"run": key[0], "seed": key[1], "eval_set": key[2], "eval_seed": key[3],
                     "rouge_l": doc["rouge_l"], "exact_match": doc["exact_match"], "n_examples": doc["n"],
                     "generation_s": doc["generation"]["wall_s"], "scoring_s": doc["scoring_s"],
                     "new_tokens": doc["generation"]["new_tokens"], "peak_rss_mb": doc.get("peak_rss_mb"),
                     "gpu_time_s": doc["generation"].get("cuda_time_s"),
                     "gpu_peak_memory_mb": doc["generation"].get("cuda_peak_memory_mb")})
    if not rows:
        raise ResultError(f"{results}: no scores.json found under eval/; run the workflow first")
    return pd.DataFrame(rows), examples


def load_scores(results: Path) -> pd.DataFrame:
    return load_results(results)[0]


def check_complete(scores: pd.DataFrame, expected: dict[str, Any] | None, results: Path) -> None:
    """Every (model, seed, eval set, eval seed) the config asks for must be present: never a smaller table."""
    if expected:
        wanted = {(TEACHER_RUN, expected["teacher_seed"])}
        wanted |= {(run, seed) for run in [SFT_RUN, *expected["runs"]] for seed in expected["seeds"]}
        cells = {(r, s, e, q) for r, s in wanted for e in expected["eval_sets"] for q in expected["eval_seeds"]}
    else:
        models = set(zip(scores.run, scores.seed))
        cells = {(r, s, e, q) for r, s in models for e in set(scores.eval_set) for q in set(scores.eval_seed)}
    present = set(zip(scores.run, scores.seed, scores.eval_set, scores.eval_seed))
    missing = sorted(cells - present)
    if missing:
        shown = ", ".join(str(results / f"eval/{r}/seed{s}/{e}/es{q}/scores.json") for r, s, e, q in missing[:5])
        raise ResultError(f"{results}: {len(missing)} result(s) missing, e.g. {shown}")


def eval_set_info(results: Path, eval_sets: list[str]) -> dict[str, dict]:
    return {name: read_result(results / "evalsets" / f"{name}.json", "eval_set") for name in eval_sets}


def check_shared_inputs(results: Path, runs: list[str], seeds: list[int]) -> None:
    """The difficulty profile and the teacher cache must be there when a trained run used them (its
    train.json says so): a missing one is an error, never a table without its rows."""
    for run in runs:
        for seed in seeds:
            train_json = results / "runs" / run / f"seed{seed}" / "train.json"
            doc = read_result(train_json, "train")
            needed = [results / "profile" / "summary.json", results / "profile" / "difficulty.csv"] \
                if "profile" in doc["spec"] else []
            if doc.get("teacher_source") == "CachedTeacher":
                needed.append(results / "teacher" / "cache.json")
            for path in needed:
                if not path.is_file():
                    raise ResultError(f"{path}: missing, but {train_json} was trained with it; re-run the job "
                                      "that writes it (snakemake re-creates it)")
    if (results / "profile" / "difficulty.csv").is_file():
        verify(results / "profile" / "difficulty.csv")


def losses_from_results(results: Path, runs: list[str], seeds: list[int]) -> dict[str, str]:
    """Each run's loss from the resolved hyperparameters recorded in its train.json (no config at hand)."""
    losses = {}
    for run in runs:
        paths = [results / "runs" / run / f"seed{s}" / "train.json" for s in seeds]
        found = next((p for p in paths if p.is_file()), None)
        hparams = ((read_result(found, "train")["spec"].get("run") or {}).get("hparams") or {}) if found else {}
        losses[run] = hparams.get("loss", DEFAULT_LOSS)
    return losses


# --------------------------------------------------------------------------- statistics
def baseline_pairs(runs: list[str], methods: dict[str, str], losses: dict[str, str],
                   baseline: str) -> dict[str, str | None]:
    """Run -> the vanilla-KD run trained with the same loss (None: the baseline itself, or none exists).

    SFT and methods without a ``loss`` hyperparameter (TAID) compare to KD with the default loss (FKL)."""
    by_loss: dict[str, str] = {}
    for run in runs:
        if methods.get(run) == baseline:
            by_loss.setdefault(losses.get(run, DEFAULT_LOSS), run)
    pairs = {SFT_RUN: by_loss.get(DEFAULT_LOSS)}
    for run in runs:
        pairs[run] = None if methods.get(run) == baseline else by_loss.get(losses.get(run, DEFAULT_LOSS))
    return pairs


def example_differences(examples: dict[tuple, ExampleScores], run: str, base: str,
                        eval_set: str) -> tuple[np.ndarray, int, list[int]]:
    """Per-example score differences run − base, one row per training seed the two runs share (each the
    mean over the eval seeds both have for it), columns aligned by example id; with the number of
    (training seed, eval seed) draws and the seeds. Raises ResultError naming both files when the prompts
    differ."""
    draws = {(s, q) for (r, s, e, q) in examples if r == run and e == eval_set}
    base_draws = {(s, q) for (r, s, e, q) in examples if r == base and e == eval_set}
    common = sorted(draws & base_draws)
    if not common:
        raise ResultError(f"no (training seed, eval seed) draw in common between '{run}' {sorted(draws)} and "
                          f"'{base}' {sorted(base_draws)} on {eval_set}: cannot pair them")
    reference = examples[(base, common[0][0], eval_set, common[0][1])]
    order = reference.scores.index
    by_seed: dict[int, list[np.ndarray]] = {}
    for seed, eval_seed in common:
        ours, theirs = examples[(run, seed, eval_set, eval_seed)], examples[(base, seed, eval_set, eval_seed)]
        for other in (theirs, ours):
            if len(other.scores) != len(order) or not other.scores.index.isin(order).all():
                only_a = sorted(set(other.scores.index) - set(order))[:3]
                only_b = sorted(set(order) - set(other.scores.index))[:3]
                raise ResultError(f"{other.path} and {reference.path}: prediction ids differ ({len(other.scores)} "
                                  f"vs {len(order)} rows; only in the first e.g. {only_a}, only in the second "
                                  f"e.g. {only_b}); a paired test needs the same prompts")
        by_seed.setdefault(seed, []).append(ours.scores.reindex(order).to_numpy()
                                            - theirs.scores.reindex(order).to_numpy())
    seeds = sorted(by_seed)
    return np.stack([np.mean(by_seed[s], axis=0) for s in seeds]), len(common), seeds


def seed_sd(scores: pd.DataFrame, run: str, column: str) -> tuple[float, int]:
    """The sd of a run's score across its training seeds (each the mean over its eval seeds) in a
    column: the training-seed noise that the † flag compares a difference with."""
    sub = scores[scores.run == run]
    if column != AVG:
        sub = sub[sub.eval_set == column]
    per_draw = sub.groupby(["seed", "eval_seed"]).rouge_l.mean()
    per_seed = per_draw.groupby(level="seed").mean()
    _, sd, n = mean_sd(per_seed)
    return sd, n


def paired_comparisons(scores: pd.DataFrame, examples: dict[tuple, ExampleScores], pairs: dict[str, str | None],
                       eval_sets: list[str], samples: int, alpha: float) -> pd.DataFrame:
    """One row per (run, column) with a baseline: Δ, bootstrap CI, p (raw and Holm), seed-noise flag.

    Per eval set the statistic is the mean per-example difference; the test is the hierarchical bootstrap of
    kdbench.stats (training seeds, then examples). Avg. is the mean of the eval sets' differences,
    bootstrapped with the same seed resamples for every eval set and the examples resampled within each.
    A difference is marked significant only when the runs share at least two training seeds: with one,
    the test cannot see what retraining does."""
    rows = []
    for run, base in pairs.items():
        if base is None or run not in set(scores.run):
            continue
        boots, deltas, sizes, n_draws, n_seeds = {}, {}, {}, {}, {}
        shared = None
        for es in eval_sets:
            diffs, n_draws[es], seeds = example_differences(examples, run, base, es)
            if shared is None:
                shared = seed_draws(len(seeds), samples, bootstrap_rng(run, base, "training seeds"))
            elif shared.shape[1] != len(seeds):
                raise ResultError(f"'{run}' and '{base}' share different training seeds on different eval sets")
            deltas[es], sizes[es], n_seeds[es] = float(diffs.mean()), diffs.shape[1], len(seeds)
            boots[es] = hierarchical_bootstrap(diffs, samples, bootstrap_rng(run, base, es), shared)
        boots[AVG] = np.mean([boots[es] for es in eval_sets], axis=0)
        deltas[AVG], sizes[AVG] = float(np.mean([deltas[es] for es in eval_sets])), sum(sizes.values())
        n_draws[AVG], n_seeds[AVG] = min(n_draws.values()), min(n_seeds.values())
        for column in [*eval_sets, AVG]:
            delta, boot = deltas[column], boots[column]
            low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
            p = bootstrap_p_value(boot, delta)
            sd, n_base = seed_sd(scores, base, column)
            rows.append({"run": run, "baseline": base, "column": column, "delta": delta,
                         "ci_low": float(low), "ci_high": float(high), "p": p,
                         "significant": bool(p < alpha and n_seeds[column] > 1),
                         "baseline_sd": sd if n_base > 1 else float("nan"),
                         "within_noise": bool(abs(delta) < sd) if n_base > 1 else None,
                         "n_examples": sizes[column], "n_draws": n_draws[column],
                         "training_seeds": n_seeds[column]})
    frame = pd.DataFrame(rows, columns=["run", "baseline", "column", "delta", "ci_low", "ci_high", "p",
                                        "significant", "baseline_sd", "within_noise", "n_examples", "n_draws",
                                        "training_seeds"])
    frame["p_holm"] = holm_adjust(frame.p.tolist())
    return frame


def marks(comparison: dict | None) -> str:
    if comparison is None:
        return ""
    mark = ""
    if comparison["significant"]:
        mark += MARK_BETTER if comparison["delta"] > 0 else MARK_WORSE
    if comparison["within_noise"]:
        mark += MARK_NOISE
    return f" {mark}" if mark else ""


# --------------------------------------------------------------------------- tables
def row_order(runs: list[str], labels: dict[str, str]) -> list[str]:
    refs = [r for r in (TEACHER_RUN, SFT_RUN) if r in runs]
    return refs + [r for r in labels if r in runs and r not in refs] + sorted(set(runs) - set(refs) - set(labels))


def run_label(run: str, labels: dict[str, str]) -> str:
    return REFERENCE_LABELS.get(run, labels.get(run, run))


def scores_table(scores: pd.DataFrame, labels: dict[str, str], eval_sets: list[str], set_info: dict,
                 comparisons: pd.DataFrame | None = None, pairs: dict[str, str | None] | None = None,
                 alpha: float = 0.05, samples: int = 2000, baseline: str = "vanilla_kd",
                 unpaired: list[str] | None = None, non_default: dict[str, list[str]] | None = None) -> Table:
    order = row_order(list(scores.run.unique()), labels)
    found = {} if comparisons is None else {(r["run"], r["column"]): r for r in comparisons.to_dict("records")}
    pairs = pairs or {}
    display_rows, data_rows = [], []
    for run in order:
        sub = scores[scores.run == run]
        cells = {"Model": run_label(run, labels)}
        data = {"run": run, "model": cells["Model"]}
        for es in eval_sets:
            m, sd, n = mean_sd(sub[sub.eval_set == es].rouge_l)
            cells[set_info[es]["display_name"]] = fmt_mean_sd(m, sd, n) + marks(found.get((run, es)))
            data.update({f"{es}_mean": m, f"{es}_sd": sd, f"{es}_n": n})
        # Avg.: per (seed, eval seed), the mean over eval sets; then mean ± sd of those.
        per_draw = sub.groupby(["seed", "eval_seed"]).rouge_l.mean()
        m, sd, n = mean_sd(per_draw)
        cells["Avg."] = fmt_mean_sd(m, sd, n) + marks(found.get((run, AVG)))
        cells["n"] = str(n)
        data.update({"avg_mean": m, "avg_sd": sd, "n": n, "training_seeds": int(sub.seed.nunique())})
        base = pairs.get(run)
        avg_cmp = found.get((run, AVG))
        cells["Δ Avg."] = f"{avg_cmp['delta']:+.2f}" if avg_cmp else "–"
        cells["vs."] = run_label(base, labels) if avg_cmp else "–"
        data["baseline"] = base if avg_cmp else None
        for column in [*eval_sets, AVG]:
            cmp = found.get((run, column)) or {}
            for key in ("delta", "ci_low", "ci_high", "p", "p_holm", "significant", "baseline_sd", "within_noise",
                        "training_seeds"):
                data[f"{column}_{key}"] = cmp.get(key)
        data["paired_draws"] = avg_cmp["n_draws"] if avg_cmp else None
        data["non_default_settings"] = "; ".join((non_default or {}).get(run, [])) or None
        display_rows.append(cells)
        data_rows.append(data)
    footnotes = ["Rouge-L (F, ×100), mean ± sd over n = training seeds × eval seeds; Avg. averages the eval "
                 "sets within each (training seed, eval seed) draw first."]
    if found:
        level = f"{alpha:g}"
        footnotes.append(
            f"{MARK_BETTER}/{MARK_WORSE}: better/worse than the run in column 'vs.' (vanilla KD with the same "
            f"loss; SFT and methods without a loss setting vs. KD with {DEFAULT_LOSS.upper()}) at p < {level}, "
            f"two-sided paired hierarchical bootstrap ({samples} resamples: training seeds with replacement, "
            "then examples within each drawn seed) of the per-example differences averaged over eval seeds; "
            "not corrected for multiple comparisons (Holm-adjusted p-values in the CSV). "
            f"{MARK_NOISE}: within training-seed noise, |Δ| smaller than the sd of the baseline's per-seed "
            "means. Δ Avg.: difference in Avg. Method: docs/statistics.md.")
        if any(r["training_seeds"] < 2 for r in found.values()):
            footnotes.append(f"One training seed: no {MARK_BETTER}/{MARK_WORSE} or {MARK_NOISE} marks, since no "
                             "test can tell a difference from what retraining with another seed does (Δ and p "
                             "over examples and eval seeds are in the CSV).")
    for run in order:
        if (non_default or {}).get(run):
            footnotes.append(f"{run_label(run, labels)} ran with settings other than its method's defaults: "
                             + "; ".join(non_default[run]) + ".")
    if unpaired:
        footnotes.append(f"No paired test (no '{baseline}' run with the same loss in this config): "
                         + ", ".join(run_label(r, labels) for r in unpaired) + ".")
    for es in eval_sets:
        info = set_info[es].get("info", {})
        footnotes += info.get("footnotes", [])
        scored = sorted(scores[scores.eval_set == es].n_examples.unique())
        if info.get("count") is not None and scored != [info["count"]]:
            footnotes.append(f"{set_info[es]['display_name']}: {'/'.join(map(str, scored))} of its {info['count']} "
                             "records scored (evaluation.max_examples keeps the first ones).")
    data = pd.DataFrame(data_rows)
    data["paired_draws"] = data["paired_draws"].astype("Int64")
    return Table("scores", "Rouge-L on the evaluation sets", pd.DataFrame(display_rows), data, footnotes)


def _train_row(phase: str, label: str, docs: list[dict]) -> dict[str, Any]:
    metrics = [d["metrics"] for d in docs if d.get("metrics")]
    if not metrics:
        return {"phase": phase, "label": label, "wall_s": 0.0, "tokens": 0, "tokens_per_s": None,
                "peak_rss_mb": None, "teacher_forward_passes": 0, "examples": 0, "n": len(docs)}
    wall, _, n = mean_sd(m["wall_s"] for m in metrics)
    tokens = sum(m["tokens"] for m in metrics) / n
    return {"phase": phase, "label": label, "wall_s": wall, "tokens": tokens,
            "tokens_per_s": tokens / wall if wall else None,
            "peak_rss_mb": max(m["peak_rss_mb"] for m in metrics),
            "teacher_forward_passes": sum(m.get("teacher_forward_passes", 0) for m in metrics) / n,
            "examples": sum(m["examples"] for m in metrics) / n, "n": n, **_gpu(metrics)}


def _gpu(docs: list[dict]) -> dict[str, float | None]:
    """Mean CUDA time and largest peak GPU memory of a phase's results (None when it ran on a CPU)."""
    times = [d["cuda_time_s"] for d in docs if d.get("cuda_time_s") is not None]
    memory = [d["cuda_peak_memory_mb"] for d in docs if d.get("cuda_peak_memory_mb") is not None]
    return {"gpu_time_s": sum(times) / len(times) if times else None, "gpu_peak_memory_mb": max(memory, default=None)}


def _throughput(doc: dict) -> dict[str, Any]:
    """Tokens, tokens/s and peak RSS of a one-off stage; results written before these were recorded have None."""
    tokens = doc.get("tokens")
    total = sum(tokens.values()) if isinstance(tokens, dict) else tokens
    return {"tokens": total, "tokens_per_s": doc.get("tokens_per_s"), "peak_rss_mb": doc.get("peak_rss_mb"),
            **_gpu([doc])}


def _stage_rows(run: str, docs: list[dict]) -> list[dict[str, Any]]:
    """One row per curriculum stage (mean over seeds) for methods that train in several stages."""
    stages = [d["metrics"]["stages"] for d in docs if d.get("metrics")]
    if not stages or len(stages[0]) < 2:
        return []
    rows = []
    for index, stage in enumerate(stages[0]):
        walls = [s[index]["wall_s"] for s in stages]
        rows.append({"phase": "distillation stage", "run": run, "label": f"  stage {index + 1} of {len(stages[0])}",
                     "wall_s": sum(walls) / len(walls), "tokens": None, "tokens_per_s": None, "peak_rss_mb": None,
                     "teacher_forward_passes": None, "examples": stage["examples"], "n": len(walls)})
    return rows


def runtime_table(results: Path, scores: pd.DataFrame, labels: dict[str, str], methods: dict[str, str],
                  seeds: list[int], baseline: str, pairs: dict[str, str | None] | None = None) -> Table:
    rows = [_train_row("teacher SFT", "Teacher SFT", [read_result(results / "teacher" / "train.json", "train")]),
            _train_row("student init", "Student init (warm-up SFT)",
                       [read_result(results / "student_init" / "train.json", "train")])]
    profile = results / "profile" / "summary.json"
    if profile.is_file():
        doc = read_result(profile, "profile")
        rows.append({"phase": "profiling", "label": "Difficulty profiling", "wall_s": doc["wall_s"],
                     **_throughput(doc), "teacher_forward_passes": None, "examples": doc["n_examples"], "n": 1})
    cache = results / "teacher" / "cache.json"
    if cache.is_file():
        doc = read_result(cache, "teacher_cache")
        meta = doc["cache"]
        rows.append({"phase": "cache build", "label": f"Teacher cache build ({meta['mode']})",
                     "wall_s": meta["build_s"], **_throughput(doc),
                     "teacher_forward_passes": meta["forward_passes"], "examples": meta["n_examples"], "n": 1})
    train_rows = {}
    for run in [SFT_RUN, *labels]:
        docs = [read_result(results / "runs" / run / f"seed{s}" / "train.json", "train") for s in seeds]
        row = _train_row("distillation", run_label(run, labels), docs)
        row["run"] = run
        train_rows[run] = row
        rows.append(row)
        rows.extend(_stage_rows(run, docs))
    for row in rows:
        row.setdefault("run", None)
    # Relative to vanilla KD with the same loss (POCL-FKL vs KD-FKL, CPD vs KD-SRKL), else its first run.
    baseline_runs = [r for r, m in methods.items() if m == baseline]
    pairs = pairs or {}
    for run, row in train_rows.items():
        ref = run if methods.get(run) == baseline else pairs.get(run) or (baseline_runs[0] if baseline_runs else None)
        row["relative_to_kd"] = row["wall_s"] / train_rows[ref]["wall_s"] if ref and train_rows[ref]["wall_s"] else None
        row["kd_reference"] = ref
    eval_wall = scores.groupby("run")[["generation_s", "scoring_s", "new_tokens"]].sum()
    eval_rss = scores.groupby("run")["peak_rss_mb"].max()
    # Summed like the wall time (every eval set and seed of a model); min_count keeps all-CPU runs at NaN.
    eval_gpu = scores.groupby("run").agg(gpu_time_s=("gpu_time_s", lambda v: v.sum(min_count=1)),
                                         gpu_peak_memory_mb=("gpu_peak_memory_mb", "max"))
    for run in row_order(list(eval_wall.index), labels):
        generation_s, new_tokens = float(eval_wall.loc[run, "generation_s"]), float(eval_wall.loc[run, "new_tokens"])
        rss = eval_rss.loc[run]
        rows.append({"phase": "evaluation", "run": run, "label": f"Evaluation: {run_label(run, labels)}",
                     "wall_s": generation_s + float(eval_wall.loc[run, "scoring_s"]), "generation_s": generation_s,
                     "scoring_s": float(eval_wall.loc[run, "scoring_s"]), "tokens": new_tokens,
                     # generated tokens per second of generation (scoring does not produce tokens)
                     "tokens_per_s": new_tokens / generation_s if generation_s > 0 else None,
                     "peak_rss_mb": None if pd.isna(rss) else float(rss), "teacher_forward_passes": None,
                     "examples": None, "n": int((scores.run == run).sum()),
                     **{k: None if pd.isna(v) else float(v) for k, v in eval_gpu.loc[run].items()}})
    data = pd.DataFrame(rows)
    def column(values: pd.Series, fmt: str, unit: str = "") -> pd.Series:
        return values.map(lambda v: "–" if v is None or pd.isna(v) else format(v, fmt) + unit)

    display = pd.DataFrame({
        "Phase": data.label,
        "Wall-clock (s)": column(data.wall_s, ".1f"),
        "Tokens/s": column(data.tokens_per_s, ",.0f"),
        "Peak RSS (MiB)": column(data.peak_rss_mb, ",.0f"),
        "Examples seen": column(data.examples, ",.0f"),
        "Teacher fwd": column(data.teacher_forward_passes, ",.0f"),
        "Rel. to KD": column(data.get("relative_to_kd", pd.Series([None] * len(data))), ".2f", "×"),
    })
    gpu_note = []
    if data.get("gpu_time_s") is not None and data.gpu_time_s.notna().any():   # only for runs on a GPU
        display.insert(2, "GPU time (s)", column(data.gpu_time_s, ".1f"))
        display.insert(5, "Peak GPU mem (MiB)", column(data.gpu_peak_memory_mb, ",.0f"))
        gpu_note = ["GPU time: CUDA events around the phase's work (training loop, profiling, cache build, "
                    "generation); peak GPU memory: the largest allocated by PyTorch."]
    notes = [f"Training rows: mean over {len(seeds)} training seed(s); 'Rel. to KD' divides by vanilla KD with the "
             "same loss (the reference of the paired tests in the scores table); staged methods also get one row "
             "per stage. Evaluation rows: generation + scoring summed over eval sets and seeds (separate columns "
             "in the CSV), tokens/s = generated tokens per second of generation. Peak RSS: the largest "
             "resident set of any process of that phase (training: max over seeds).", *gpu_note]
    return Table("runtime", "Wall-clock runtime per phase", display, data, notes)


def run_hparams(results: Path, runs: list[str], seeds: list[int]) -> dict[str, dict]:
    """Each trained run's resolved identity (method, variant, version, hparams) from its train.json."""
    out = {}
    for run in runs:
        found = next((p for p in (results / "runs" / run / f"seed{s}" / "train.json" for s in seeds) if p.is_file()),
                     None)
        out[run] = (read_result(found, "train")["spec"].get("run") or {}) if found else {}
    return out


def non_default_settings(identities: dict[str, dict], available: dict[str, Any]) -> dict[str, list[str]]:
    """Per run, each hyperparameter that differs from its method variant's defaults and each run-specific
    optimiser setting (methods.settings.<m>.train), as 'key = value (default: value)'; ``available``: the
    discovered methods."""
    from kdbench.config import differing_keys
    from kdbench.methods import make_config

    out: dict[str, list[str]] = {}
    for run, identity in identities.items():
        if not identity.get("method"):
            continue
        info = available.get(identity["method"])
        notes = []
        if info is not None:
            defaults = json.loads(json.dumps(dataclasses.asdict(make_config(info, identity.get("variant", "default"), {}))))
            used = identity.get("hparams") or {}
            for key in differing_keys(defaults, used):
                notes.append(f"{key} = {_dig(used, key)!r} (default: {_dig(defaults, key)!r})")
        notes += [f"training.{key} = {value!r} (this run only)" for key, value in sorted((identity.get("train") or {}).items())]
        if notes:
            out[run] = notes
    return out


def _dig(mapping: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        mapping = mapping.get(part) if isinstance(mapping, dict) else None
    return mapping


def _fmt_rho(value: float, degenerate: bool) -> str:
    if degenerate:
        return "degenerate"
    return "–" if value is None or pd.isna(value) else f"{value:+.3f}"


def difficulty_table(results: Path, labels: dict[str, str], identities: dict[str, dict],
                     available: dict[str, Any]) -> Table:
    """How well each difficulty signal, and the ranking each curriculum run trains by, orders the examples
    by their ground-truth level: Spearman ρ over all examples and within each task family (the mean over
    families), and the share of examples at the signal's most common value (degenerate above 0.2)."""
    from kdbench.difficulty import DEGENERATE_SHARE, EXTRA_SIGNALS, POCL_SIGNALS, SIGNALS, ranking_quality

    columns = ["signal", "kind", "used_by", "spearman", "spearman_within_family", "constant_share", "n", "degenerate"]
    csv = results / "profile" / "difficulty.csv"
    notes = [f"Spearman ρ between each signal's hardness and the ground-truth level (synthetic suite): over all "
             f"examples, and within each task family (mean over families). A signal whose most common value "
             f"covers more than {DEGENERATE_SHARE:.0%} of the examples (constant share) cannot rank them: it is "
             "marked degenerate instead of given a ρ. Kinds: POCL signal (what POCL, CPD and L2M-KD rank by), "
             "extra (labelled alternatives), method ranking (the order a run's curriculum actually uses)."]
    if not csv.is_file():
        return Table("difficulty", "How well each difficulty signal ranks the data",
                     pd.DataFrame(columns=["Difficulty signal"]), pd.DataFrame(columns=columns),
                     ["No difficulty profile in this run: no method in the config needs one."])
    profile = pd.read_csv(csv, dtype={"id": str}).set_index("id")
    if "true_difficulty" not in profile.columns:
        return Table("difficulty", "How well each difficulty signal ranks the data",
                     pd.DataFrame(columns=["Difficulty signal"]), pd.DataFrame(columns=columns),
                     ["This data source has no ground-truth difficulty level to compare the signals with."])
    truth = profile["true_difficulty"].to_numpy()
    family = profile["family"].to_numpy() if "family" in profile.columns else None
    rows = []
    for signal, easier in SIGNALS.items():
        if signal in profile.columns:
            values = profile[signal].to_numpy(dtype=np.float64)
            kind = "POCL signal" if signal in POCL_SIGNALS else "extra" if signal in EXTRA_SIGNALS else "signal"
            rows.append({"signal": signal, "kind": kind, "used_by": "",
                         **ranking_quality(-values if easier else values, truth, family)})
    if identities:
        from kdbench.methods import RunSpec, instantiate

        rankings: dict[bytes, dict] = {}
        for run, identity in identities.items():
            if identity.get("method") not in available:
                continue
            spec = RunSpec(run, identity["method"], identity.get("variant", "default"), run,
                           identity.get("version", 0), identity.get("hparams") or {}, True, True, 0)
            hardness = instantiate(spec, available).hardness(profile)
            if hardness is None:
                continue
            key = np.asarray(hardness, dtype=np.float64).tobytes()
            entry = rankings.setdefault(key, {"hardness": np.asarray(hardness, dtype=np.float64), "runs": []})
            entry["runs"].append(run_label(run, labels))
        for entry in rankings.values():
            rows.append({"signal": f"ranking of {entry['runs'][0]}", "kind": "method ranking",
                         "used_by": ", ".join(entry["runs"]), **ranking_quality(entry["hardness"], truth, family)})
    data = pd.DataFrame(rows, columns=columns)
    data.loc[data.degenerate, ["spearman", "spearman_within_family"]] = np.nan
    display = pd.DataFrame({
        "Difficulty signal": data.signal, "Kind": data.kind, "Used by": data.used_by.replace("", "–"),
        "Spearman ρ": [_fmt_rho(r.spearman, r.degenerate) for r in data.itertuples()],
        "ρ within family": [_fmt_rho(r.spearman_within_family, r.degenerate) for r in data.itertuples()],
        "Constant share": data.constant_share.map(lambda v: f"{v:.1%}"),
        "n": data.n.map(str)})
    return Table("difficulty", "How well each difficulty signal ranks the data", display, data, notes)


def per_level_table(examples: dict[tuple, ExampleScores], labels: dict[str, str], eval_sets: list[str],
                    set_info: dict) -> Table:
    """Exact match and Rouge-L per (model, eval set, task family, ground-truth level), pooled over the
    model's (training seed, eval seed) draws; family 'all' pools the families."""
    columns = ["run", "model", "eval_set", "family", "level", "exact_match", "rouge_l", "n", "draws"]
    frames = []
    for (run, seed, eval_set, eval_seed), ex in examples.items():
        if eval_set in eval_sets and ex.frame.level.notna().all() and len(ex.frame):
            frames.append(ex.frame.assign(run=run, eval_set=eval_set, draw=f"{seed}/{eval_seed}"))
    if not frames:
        return Table("per_level", "Exact match per task family and difficulty level",
                     pd.DataFrame(columns=["Model"]), pd.DataFrame(columns=columns),
                     ["No evaluation set of this run has ground-truth difficulty levels."])
    long = pd.concat(frames).reset_index()
    long["level"] = long.level.astype(int)
    long["family"] = long.family.fillna("all")
    pooled = long.assign(family="all")
    both = pd.concat([long, pooled]) if (long.family != "all").any() else long
    grouped = both.groupby(["run", "eval_set", "family", "level"])
    data = grouped.agg(exact_match=("exact_match", "mean"), rouge_l=("rouge_l", "mean"),
                       draws=("draw", "nunique"), n_rows=("id", "size")).reset_index()
    data["n"] = (data.n_rows // data.draws).astype(int)
    order = {run: i for i, run in enumerate(row_order(list(data.run.unique()), labels))}
    families = sorted(set(data.family) - {"all"}) + ["all"]
    data["_r"], data["_e"] = data.run.map(order), data.eval_set.map({e: i for i, e in enumerate(eval_sets)})
    data["_f"] = data.family.map({f: i for i, f in enumerate(families)})
    data = data.sort_values(["_r", "_e", "_f", "level"])
    data["model"] = data.run.map(lambda r: run_label(r, labels))
    data = data[columns].reset_index(drop=True)
    wide = data.pivot_table(index=["run", "eval_set", "family"], columns="level", values="exact_match",
                            sort=False)
    wide = wide.reindex(sorted(wide.columns), axis=1)
    display_rows = []
    for (run, eval_set, fam), row in wide.iterrows():
        cells = {"Model": run_label(run, labels), "Eval set": set_info[eval_set]["display_name"], "Family": fam}
        cells.update({f"L{int(level)}": "–" if pd.isna(v) else f"{v:.0f}" for level, v in row.items()})
        display_rows.append(cells)
    notes = ["Exact match (×100) per task family and ground-truth difficulty level, pooled over every (training "
             "seed, eval seed) draw of the model; 'all' pools the families. Rouge-L and the counts are in "
             "per_level.csv (n = examples per draw)."]
    return Table("per_level", "Exact match per task family and difficulty level", pd.DataFrame(display_rows),
                 data, notes)


def curriculum_table(results: Path, labels: dict[str, str], seeds: list[int]) -> Table:
    """What each curriculum run trained on, epoch by epoch: subset size, mean ground-truth level and the
    share of each task family (from the run's training trace; identical for every training seed)."""
    columns = ["run", "stage", "epoch", "n_examples", "mean_true_level"]
    rows = []
    for run in labels:
        doc = read_result(results / "runs" / run / f"seed{seeds[0]}" / "train.json", "train")
        trace = (doc.get("metrics") or {}).get("trace") or []
        if not any("families" in t or "mean_true_level" in t for t in trace):
            continue
        for t in trace:
            total = sum((t.get("families") or {}).values()) or 1
            rows.append({"run": run, "stage": t["stage"], "epoch": t["epoch"], "n_examples": t["n_examples"],
                         "mean_true_level": t.get("mean_true_level"),
                         **{f"share_{f}": n / total for f, n in (t.get("families") or {}).items()}})
    data = pd.DataFrame(rows, columns=columns if not rows else None)
    if data.empty:
        return Table("curriculum", "What each curriculum trained on, epoch by epoch",
                     pd.DataFrame(columns=["Run"]), pd.DataFrame(columns=columns),
                     ["No run in this config schedules its data by difficulty (or the data has no ground truth)."])
    data = data.fillna({c: 0.0 for c in data.columns if c.startswith("share_")})
    shares = [c for c in data.columns if c.startswith("share_")]
    display = pd.DataFrame({"Run": data.run.map(lambda r: run_label(r, labels)), "Stage": data.stage + 1,
                            "Epoch": data.epoch + 1, "Examples": data.n_examples,
                            "Mean level": data.mean_true_level.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}"),
                            **{c.removeprefix("share_"): data[c].map(lambda v: f"{v:.0%}") for c in shares}})
    notes = ["Per epoch of each curriculum run: the number of training examples it saw, their mean ground-truth "
             "level, and the share of each task family (a uniform mix is 1/families each)."]
    return Table("curriculum", "What each curriculum trained on, epoch by epoch", display, data, notes)


def write_table(table: Table, out_dir: Path) -> list[Path]:
    written = []
    for ext, text in (("md", table.to_markdown()), ("tex", table.to_latex()), ("csv", table.to_csv())):
        path = out_dir / f"{table.name}.{ext}"
        write_text_atomic(path, text)
        written.append(path)
    return written


RUNS_FILE = "runs.csv"


def runs_long(scores: pd.DataFrame, labels: dict[str, str], methods: dict[str, str],
              non_default: dict[str, list[str]]) -> pd.DataFrame:
    """Every collected result, one row per run x training seed x eval set x eval seed, for one's own analysis."""
    frame = scores.copy()
    frame.insert(1, "model", [run_label(r, labels) for r in frame.run])
    frame.insert(2, "method", [TEACHER_RUN if r == TEACHER_RUN else SFT_RUN if r == SFT_RUN else methods.get(r, r)
                               for r in frame.run])
    frame = frame.rename(columns={"seed": "training_seed"})
    frame["non_default_settings"] = ["; ".join(non_default.get(r, [])) or None for r in frame.run]
    order = {r: i for i, r in enumerate(row_order(list(frame.run.unique()), labels))}
    return frame.sort_values(["run", "training_seed", "eval_set", "eval_seed"],
                             key=lambda c: c.map(order) if c.name == "run" else c).reset_index(drop=True)


def expected_from_config(config: dict) -> dict[str, Any]:
    """What the workflow's paper_tables rule passes as --config-json, computed from a loaded config."""
    from kdbench.methods import discover_methods, resolve_runs

    runs = resolve_runs(config, discover_methods(config["methods"]["root"]))
    return {"tables": config["tables"], "runs": {r: s.label for r, s in runs.items()},
            "methods": {r: s.method for r, s in runs.items()}, "order": list(runs),
            "losses": {r: s.hparams.get("loss", DEFAULT_LOSS) for r, s in runs.items()},
            "eval_sets": config["evaluation"]["sets"], "seeds": config["training"]["seeds"],
            "eval_seeds": config["evaluation"]["seeds"], "teacher_seed": config["teacher"]["seed"],
            "name": config.get("name"), "methods_root": config["methods"]["root"]}


def build_tables(results: Path, out_dir: Path, config: dict | None = None,
                 config_json: dict | None = None, plots: bool = True) -> list[Path]:
    from kdbench.config import TABLE_DEFAULTS

    expected = config_json
    if expected is None and config is not None:
        expected = expected_from_config(config)
    scores, examples = load_results(results)
    check_complete(scores, expected, results)
    if expected:
        labels, methods = expected["runs"], expected["methods"]
        # Row order: the config's run order (method `order`), which a key-sorted JSON would otherwise lose.
        order = [r for r in expected.get("order", []) if r in labels]
        labels = {r: labels[r] for r in order + [r for r in labels if r not in order]}
        eval_sets, seeds = expected["eval_sets"], expected["seeds"]
        settings = {**TABLE_DEFAULTS, **(expected.get("tables") or {})}
        scores = scores[scores.run.isin([TEACHER_RUN, SFT_RUN, *labels]) & scores.eval_set.isin(eval_sets)]
        losses = expected.get("losses") or losses_from_results(results, list(labels), seeds)
    else:
        trained = sorted(set(scores.run) - {TEACHER_RUN, SFT_RUN})
        labels = {r: r for r in trained}
        methods = {r: r.split("-", 1)[0] for r in trained}
        eval_sets = sorted(scores.eval_set.unique())
        seeds = sorted(scores[scores.run == SFT_RUN].seed.unique().tolist())
        settings = dict(TABLE_DEFAULTS)
        losses = losses_from_results(results, trained, seeds)
    check_shared_inputs(results, [SFT_RUN, *labels], seeds)
    baseline, alpha, samples = settings["baseline"], settings["significance_level"], settings["bootstrap_samples"]
    pairs = baseline_pairs(list(labels), methods, losses, baseline)
    unpaired = [r for r in [SFT_RUN, *labels] if pairs.get(r) is None and methods.get(r) != baseline]
    comparisons = paired_comparisons(scores, examples, pairs, eval_sets, samples, alpha)
    set_info = eval_set_info(results, eval_sets)
    identities = run_hparams(results, list(labels), seeds)
    methods_root = (expected or {}).get("methods_root", "methods")
    written = []
    if any(identities.values()):
        from kdbench.methods import discover_methods

        available = discover_methods(methods_root)
    else:
        available = {}
    difficulty = difficulty_table(results, labels, identities, available)
    non_default = non_default_settings(identities, available)
    for table in (scores_table(scores, labels, eval_sets, set_info, comparisons, pairs, alpha, samples, baseline,
                               unpaired, non_default),
                  runtime_table(results, scores, labels, methods, seeds, baseline, pairs),
                  difficulty, per_level_table(examples, labels, eval_sets, set_info),
                  curriculum_table(results, labels, seeds)):
        written += write_table(table, out_dir)
    runs_path = out_dir / RUNS_FILE
    write_text_atomic(runs_path, runs_long(scores, labels, methods, non_default).to_csv(index=False))
    written.append(runs_path)
    if plots:
        from kdbench.plots import build_plots

        written += build_plots(results, out_dir, scores, labels, methods, seeds, losses, difficulty.data)
    return written
