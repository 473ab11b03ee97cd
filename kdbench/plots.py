"""Figures next to the paper tables: PNG files in paper_tables/<name>/ (matplotlib, Agg backend).

  curriculum.png        what each method's schedule did over training: subset size, mean difficulty,
                        temperature, KD weight, mixing/skew coefficient alpha, TAID's t (metrics.trace
                        per epoch + metrics.history per logged step, first training seed)
  training_curves.png   training loss per optimiser step, one panel per run, one line per seed,
                        stage boundaries (optimiser restarts of staged methods) dotted
  difficulty.png        how many examples per true difficulty level, the distribution of each
                        difficulty signal, and each signal (and the fused RRF ranking) per true level
  score_vs_runtime.png  Avg. Rouge-L (mean ± sd over draws) against distillation wall-clock per run

Every figure is always written (a short notice instead of axes when its data does not exist), so the
workflow can list the files up front. Called by kdbench.tables.build_tables.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdbench.methods import SFT_RUN, TEACHER_RUN  # noqa: E402
from kdbench.results import read_result  # noqa: E402

PLOT_NAMES = ("curriculum", "training_curves", "difficulty", "score_vs_runtime")
REFERENCE_LABELS = {TEACHER_RUN: "Teacher", SFT_RUN: "SFT (student)"}
LOSS_MARKERS = {"fkl": "o", "rkl": "s", "jsd": "^", "tvd": "D", "sfkl": "v", "srkl": "P"}
LINESTYLES = ["-", "--", "-.", ":"]
DPI = 130

# (key, panel title, y label); only panels some run has data for are drawn.
CURRICULUM = [
    ("subset", "Training subset per epoch", "fraction of the training split"),
    ("mean_true_level", "Mean true level of the epoch's subset", "ground-truth difficulty level"),
    ("temperature", "Distillation temperature", "temperature T"),
    ("kd_ratio", "Weight of the KD term (1 − CE weight)", "kd_ratio"),
    ("alpha", "Mixing / skew coefficient α", "α (CPD: student share of target; L2M-KD: skew)"),
    ("t", "TAID interpolation t", "t (teacher share of the target)"),
]
SIGNAL_AXES = {  # signal -> (readable name, unit and direction)
    "student_ce": ("Student CE", "mean token CE (nats); higher = harder"),
    "student_rouge_l": ("Student Rouge-L", "Rouge-L ×100 of greedy output; higher = easier"),
    "teacher_ce": ("Teacher CE", "mean token CE (nats); higher = harder"),
    "student_nll_sum": ("Student summed NLL", "summed NLL of the response (nats); higher = harder"),
    "teacher_student_kl": ("Teacher–student KL", "mean token KL(p_T ‖ q_S) (nats); higher = harder"),
    "student_rouge_l_sampled": ("Student sampled Rouge-L", "mean Rouge-L ×100 of samples; higher = easier"),
}


# --------------------------------------------------------------------------- helpers
def _label(run: str, labels: dict[str, str]) -> str:
    return REFERENCE_LABELS.get(run, labels.get(run, run))


def _method_colors(runs: list[str], methods: dict[str, str]) -> dict[str, Any]:
    """One colour per method (stable in table order), grey for SFT, black for the teacher."""
    palette = plt.get_cmap("tab10").colors
    ordered = list(dict.fromkeys(methods[r] for r in runs if r in methods))
    colors = {m: palette[i % len(palette)] for i, m in enumerate(ordered)}
    colors[SFT_RUN], colors[TEACHER_RUN] = (0.45, 0.45, 0.45), (0.0, 0.0, 0.0)
    return colors


def _run_color(run: str, methods: dict[str, str], colors: dict[str, Any]):
    return colors.get(methods.get(run, run), (0.3, 0.3, 0.3))


def _save(fig, path: Path) -> Path:
    """PNG without a software/date stamp, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _notice(title: str, message: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 2.4))
    ax.axis("off")
    ax.set_title(title, fontsize=12, fontweight="bold")
    ax.text(0.5, 0.45, message, ha="center", va="center", wrap=True, fontsize=10, transform=ax.transAxes)
    return _save(fig, path)


def _grid(n: int, ncols: int, panel: tuple[float, float]):
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _train_metrics(results: Path, run: str, seeds: list[int]) -> list[tuple[int, dict]]:
    out = []
    for seed in seeds:
        doc = read_result(results / "runs" / run / f"seed{seed}" / "train.json", "train")
        if doc.get("metrics"):
            out.append((seed, doc["metrics"]))
    return out


def _train_size(results: Path, traces: list[dict]) -> int:
    manifest = results / "data" / "manifest.json"
    if manifest.is_file():
        count = (read_result(manifest, "data").get("splits", {}).get("train") or {}).get("count")
        if count:
            return int(count)
    return max([e.get("n_examples", 0) for trace in traces for e in trace] + [1])


# --------------------------------------------------------------------------- curriculum
def curriculum_series(metrics: dict, n_train: int) -> dict[str, list[tuple[float, float]]]:
    """(training progress, value) per curriculum quantity, from the per-epoch trace and the logged steps.
    Progress = optimiser step / total steps; a logged step's settings are placed at the step that used them."""
    total = max(1, metrics.get("total_steps") or metrics.get("steps") or 1)
    points: dict[str, list[tuple[float, float]]] = {key: [] for key, _, _ in CURRICULUM}
    for entry in metrics.get("trace") or []:
        x = entry["step"] / total
        points["subset"].append((x, entry["n_examples"] / n_train))
        for key in ("mean_true_level", "temperature", "kd_ratio", "alpha", "t"):
            if isinstance(entry.get(key), (int, float)):
                points[key].append((x, float(entry[key])))
    for entry in metrics.get("history") or []:
        x = max(0, entry["step"] - 1) / total
        for key in ("temperature", "kd_ratio", "alpha", "t"):
            if isinstance(entry.get(key), (int, float)):
                points[key].append((x, float(entry[key])))
    series = {}
    for key, pts in points.items():
        if pts:
            pts = sorted(pts, key=lambda p: p[0])
            if pts[0][0] > 0 and len({y for _, y in pts}) == 1:
                pts.insert(0, (0.0, pts[0][1]))      # a constant setting logged only after step 1 held from the start
            series[key] = pts + [(1.0, pts[-1][1])]
    return series


def _group_label(group: list[str], labels: dict[str, str], methods: dict[str, str],
                 losses: dict[str, str], runs: list[str]) -> str:
    if len(group) == 1:
        return _label(group[0], labels)
    kinds = {methods.get(r) for r in group}
    if len(kinds) == 1:
        method = kinds.pop()
        name = _label(group[0], labels).split(" (")[0]
        if set(group) == {r for r in runs if methods.get(r) == method}:
            return f"{name} (all {len(group)} variants)"
        return f"{name} ({', '.join(losses.get(r, '?').upper() for r in group)})"
    return ", ".join(_label(r, labels) for r in group)


def plot_curriculum(results: Path, path: Path, labels: dict[str, str], methods: dict[str, str],
                    seeds: list[int], losses: dict[str, str]) -> Path:
    runs = list(labels)
    if not runs or not seeds:
        return _notice("Curriculum of each method", "No distilled runs in this config.", path)
    seed = seeds[0]
    metrics = {run: m for run in runs for s, m in _train_metrics(results, run, [seed])}
    n_train = _train_size(results, [m.get("trace") or [] for m in metrics.values()])
    # Runs whose schedules are identical (e.g. every loss variant of POCL) share one line.
    groups: dict[Any, list[str]] = {}
    series = {}
    for run in runs:
        if run not in metrics:
            continue
        series[run] = curriculum_series(metrics[run], n_train)
        key = tuple(sorted((q, tuple((round(x, 6), round(y, 6)) for x, y in pts)) for q, pts in series[run].items()))
        groups.setdefault(key, []).append(run)
    quantities = [q for q in CURRICULUM if any(q[0] in s for s in series.values())]
    colors = _method_colors(runs, methods)
    fig, axes = _grid(len(quantities), 2, (6.2, 3.3))
    handles = []
    for g, group in enumerate(groups.values()):
        run = group[0]
        style = dict(color=_run_color(run, methods, colors), linestyle=LINESTYLES[g % len(LINESTYLES)],
                     linewidth=max(1.2, 3.2 - 0.35 * g), alpha=0.9)
        handles.append(Line2D([], [], label=_group_label(group, labels, methods, losses, runs), **style))
        for ax, (key, _, _) in zip(axes.flat, quantities):
            if key in series[run]:
                xs, ys = zip(*series[run][key])
                ax.step(xs, ys, where="post", **style)
    for ax, (key, title, ylabel) in zip(axes.flat, quantities):
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("training progress (optimizer step / total steps)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        if key == "subset":
            ax.set_ylim(0, 1.05)
    fig.suptitle(f"Curriculum of each method (training seed {seed}; runs with identical schedules share a line)",
                 fontsize=12, fontweight="bold")
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=9, frameon=False)
    rows = -(-len(quantities) // 2)
    legend_rows = -(-len(handles) // 3)
    fig.tight_layout(rect=(0, min(0.4, 0.035 * legend_rows * 3 / max(1, rows)), 1, 0.96))
    return _save(fig, path)


# --------------------------------------------------------------------------- training curves
def plot_training_curves(results: Path, path: Path, labels: dict[str, str], seeds: list[int]) -> Path:
    panels: list[tuple[str, list[tuple[int, dict]]]] = []
    for name, title in (("teacher", "Teacher SFT"), ("student_init", "Student init (warm-up SFT)")):
        file = results / name / "train.json"
        if file.is_file():
            doc = read_result(file, "train")
            if doc.get("metrics") and doc["metrics"].get("history"):
                panels.append((title, [(None, doc["metrics"])]))     # one run, drawn in black
    for run in [SFT_RUN, *labels]:
        panels.append((_label(run, labels), _train_metrics(results, run, seeds)))
    panels = [(t, m) for t, m in panels if any(x.get("history") for _, x in m)]
    if not panels:
        return _notice("Training curves", "No logged training steps (metrics.history is empty).", path)
    fig, axes = _grid(len(panels), 5, (3.4, 2.6))
    palette = plt.get_cmap("tab10").colors
    seed_color = {s: palette[i % len(palette)] for i, s in enumerate(seeds)}
    restarts_drawn = False
    for ax, (title, runs) in zip(axes.flat, panels):
        last_step, most_points = 1, 0
        for seed, metrics in runs:
            history = metrics.get("history") or []
            steps = [h["step"] for h in history]
            losses = [h["loss"] for h in history]
            ax.plot(steps, losses, color=seed_color.get(seed, "0.15"), linewidth=1.3,
                    marker="o" if len(steps) <= 20 else None, markersize=3)
            last_step = max([last_step, *steps, metrics.get("total_steps") or metrics.get("steps") or 0])
            most_points = max(most_points, len(steps))
        # The whole run on the x axis, so that a short run's few logged steps sit where they happened.
        ax.set_xlim(0, last_step * 1.02)
        if most_points < 3:
            ax.text(0.5, 0.9, f"{most_points} logged step(s) of {last_step}: too few for a curve",
                    transform=ax.transAxes, ha="center", fontsize=7, color="0.35")
        first = runs[0][1]
        trace = first.get("trace") or []
        for prev, entry in zip(trace, trace[1:]):
            if entry.get("stage") != prev.get("stage"):
                ax.axvline(entry["step"], color="0.5", linestyle=":", linewidth=1)
                restarts_drawn = True
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("optimizer step", fontsize=8)
    for col in range(axes.shape[1]):   # the lowest visible panel of each column gets an x label
        visible = [axes[r, col] for r in range(axes.shape[0]) if axes[r, col].get_visible()]
        if visible:
            visible[-1].set_xlabel("optimizer step", fontsize=8)
    handles = [Line2D([], [], color=seed_color[s], label=f"training seed {s}") for s in seeds]
    if any(seed is None for _, runs in panels for seed, _ in runs):
        handles.append(Line2D([], [], color="0.15", label="teacher SFT / student init (their own seed)"))
    if restarts_drawn:
        handles.append(Line2D([], [], color="0.5", linestyle=":", label="new stage (optimizer/LR restart)"))
    fig.suptitle("Training loss per optimizer step (loss definitions differ between runs: compare shapes, "
                 "not levels)", fontsize=11, fontweight="bold")
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if axes.shape[0] > 2 else 0.09, 1, 0.95))
    return _save(fig, path)


# --------------------------------------------------------------------------- difficulty
def plot_difficulty(results: Path, path: Path, quality: pd.DataFrame) -> Path:
    """Each signal's distribution, and each signal by true level captioned with the difficulty table's
    Spearman ρ (``quality``: that table's data); a degenerate signal is marked as such, never given a ρ."""
    from kdbench.difficulty import SIGNALS

    csv = results / "profile" / "difficulty.csv"
    if not csv.is_file():
        return _notice("Difficulty signals", "No difficulty profile in this run (no method in the config needs "
                       "one).", path)
    frame = pd.read_csv(csv, dtype={"id": str}).set_index("id")
    signals = [s for s in SIGNALS if s in frame.columns]
    has_truth = "true_difficulty" in frame.columns
    ncols = min(4, len(signals) + 1)
    rows_per_block = -(-(len(signals) + 1) // ncols)
    fig, axes = plt.subplots(rows_per_block * (2 if has_truth else 1), ncols,
                             figsize=(3.9 * ncols, 3.3 * rows_per_block * (2 if has_truth else 1)), squeeze=False)
    flat = list(axes.flat)
    for ax in flat:
        ax.set_visible(False)
    top, bottom = flat[:rows_per_block * ncols], flat[rows_per_block * ncols:]
    by_signal = quality.set_index("signal") if not quality.empty else pd.DataFrame()
    for ax, item in zip(top, (["levels"] if has_truth else []) + signals):
        ax.set_visible(True)
        ax.grid(alpha=0.3)
        if item == "levels":
            counts = frame.true_difficulty.value_counts().sort_index()
            ax.bar([str(v) for v in counts.index], counts.values, color="0.55")
            ax.set_title("Training examples per true level", fontsize=10)
            ax.set_xlabel("true difficulty level (1 = easiest)", fontsize=8)
            ax.set_ylabel("examples", fontsize=8)
            continue
        name, unit = SIGNAL_AXES.get(item, (item, ""))
        ax.hist(frame[item].dropna(), bins=30, color="C0", alpha=0.8)
        ax.set_title(f"Distribution of {name}", fontsize=10)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_ylabel("examples", fontsize=8)
    if has_truth:
        levels = sorted(frame.true_difficulty.unique())
        rng = np.random.default_rng(0)
        for ax, item in zip(bottom, signals):
            ax.set_visible(True)
            values = frame[item]
            name, unit = SIGNAL_AXES.get(item, (item, ""))
            row = by_signal.loc[item] if item in by_signal.index else None
            if row is None:
                caption = "not in the difficulty table"
            elif row["degenerate"]:
                caption = f"degenerate: {row['constant_share']:.0%} of examples at one value, no ρ"
            else:
                caption = f"Spearman ρ {row['spearman']:+.2f}, within family {row['spearman_within_family']:+.2f}"
            groups = [values[frame.true_difficulty == lv].dropna().to_numpy() for lv in levels]
            ax.boxplot(groups, positions=range(len(levels)), widths=0.55, showfliers=False,
                       medianprops={"color": "C3", "linewidth": 1.6})
            for i, values_at in enumerate(groups):     # a sample of the points, jittered
                shown = values_at if len(values_at) <= 150 else rng.choice(values_at, 150, replace=False)
                ax.scatter(i + rng.uniform(-0.18, 0.18, len(shown)), shown, s=5, color="C0", alpha=0.35)
            ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
            ax.set_title(f"{name} by true level\n{caption}", fontsize=9)
            ax.set_xlabel("true difficulty level (1 = easiest)", fontsize=8)
            ax.set_ylabel(unit, fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Difficulty signals of the {len(frame)} training examples (pre-distillation student and teacher)",
                 fontsize=12, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


# --------------------------------------------------------------------------- score vs runtime
def plot_score_vs_runtime(results: Path, path: Path, scores: pd.DataFrame, labels: dict[str, str],
                          methods: dict[str, str], seeds: list[int], losses: dict[str, str]) -> Path:
    runs = [r for r in [SFT_RUN, *labels] if r in set(scores.run)]
    points = []
    for run in runs:
        walls = [m["wall_s"] for _, m in _train_metrics(results, run, seeds)]
        draws = scores[scores.run == run].groupby(["seed", "eval_seed"]).rouge_l.mean()
        if not walls or draws.empty:
            continue
        points.append({"run": run, "x": float(np.mean(walls)), "xerr": float(np.std(walls, ddof=1)) if len(walls) > 1 else 0.0,
                       "y": float(draws.mean()), "yerr": float(draws.std(ddof=1)) if len(draws) > 1 else 0.0})
    if not points:
        return _notice("Score vs runtime", "No distilled runs with scores.", path)
    colors = _method_colors(list(labels), methods)
    fig, ax = plt.subplots(figsize=(11, 6.2))
    seen_methods = {}
    for p in points:
        run = p["run"]
        color = _run_color(run, methods, colors)
        marker = "*" if run == SFT_RUN else LOSS_MARKERS.get(losses.get(run, ""), "X")
        ax.errorbar(p["x"], p["y"], xerr=p["xerr"] or None, yerr=p["yerr"] or None, fmt=marker, color=color,
                    markersize=8 if run != SFT_RUN else 12, capsize=3, elinewidth=1, alpha=0.9)
        key = SFT_RUN if run == SFT_RUN else methods.get(run, run)
        seen_methods.setdefault(key, (color, _label(run, labels).split(" (")[0] if run != SFT_RUN else "SFT"))
    teacher = scores[scores.run == TEACHER_RUN].groupby(["seed", "eval_seed"]).rouge_l.mean()
    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=name) for c, name in seen_methods.values()]
    if not teacher.empty:
        ax.axhline(teacher.mean(), color="black", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="black", linestyle="--", label=f"Teacher ({teacher.mean():.2f})"))
    used_losses = sorted({losses.get(p["run"]) for p in points if p["run"] in losses} - {None},
                         key=lambda l: list(LOSS_MARKERS).index(l) if l in LOSS_MARKERS else 99)
    handles += [Line2D([], [], color="0.3", marker=LOSS_MARKERS.get(l, "X"), linestyle="none", label=f"loss {l.upper()}")
                for l in used_losses]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="method (colour), loss (marker)", title_fontsize=8)
    ax.set_xlabel("distillation wall-clock per run (s), mean ± sd over training seeds", fontsize=9)
    ax.set_ylabel("Avg. Rouge-L (×100), mean ± sd over draws", fontsize=9)
    ax.set_title("Score vs distillation runtime (up and to the left is better)", fontsize=12, fontweight="bold")
    ax.grid(alpha=0.3)
    profile = results / "profile" / "summary.json"
    if profile.is_file():
        wall = read_result(profile, "profile")["wall_s"]
        ax.text(0.99, 0.01, f"Not included: difficulty profiling ({wall:.1f} s, once, shared by the curriculum "
                "methods), teacher SFT, student init.", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.35")
    xs = [p["x"] for p in points]
    span = (max(xs) - min(xs)) or max(xs) or 1.0
    ax.set_xlim(max(0.0, min(xs) - 0.08 * span), max(xs) + 0.25 * span)   # room for the labels
    ax.set_ylim(*ax.get_ylim())
    fig.tight_layout()
    _place_labels(ax, [(p["x"], p["y"], _label(p["run"], labels), _run_color(p["run"], methods, colors))
                       for p in points])
    return _save(fig, path)


def _place_labels(ax, items: list[tuple[float, float, str, Any]], fontsize: float = 7) -> None:
    """Annotate points, moving each label to the first nearby spot that overlaps no earlier label or point
    (text size estimated from the font size; axis limits and layout must be final)."""
    scale = ax.figure.dpi / 72.0                       # points -> pixels
    char_w, height = 0.56 * fontsize * scale, 1.25 * fontsize * scale

    def overlaps(box, others):
        return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)

    anchors = [ax.transData.transform((x, y)) for x, y, _, _ in items]
    taken = [(px - 5 * scale, py - 5 * scale, px + 5 * scale, py + 5 * scale) for px, py in anchors]
    for (x, y, text, color), (px, py) in sorted(zip(items, anchors), key=lambda t: (t[1][0], t[1][1])):
        width = char_w * len(text)
        candidates = [(6, dy) for dy in (2, -10, 12, -20, 22, -30, 32, -40, 42, -50)] + \
                     [(-6 - width / scale, dy) for dy in (2, -10, 12, -20, 22, -30, 32, -40)]
        chosen = candidates[0]
        for dx, dy in candidates:
            box = (px + dx * scale, py + dy * scale, px + dx * scale + width, py + dy * scale + height)
            if not overlaps(box, taken):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        taken.append((px + dx * scale, py + dy * scale, px + dx * scale + width, py + dy * scale + height))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, color=color,
                    va="bottom", ha="left",
                    arrowprops={"arrowstyle": "-", "color": color, "alpha": 0.5, "linewidth": 0.6}
                    if abs(dy) > 12 or dx < 0 else None)


def build_plots(results: Path, out_dir: Path, scores: pd.DataFrame, labels: dict[str, str],
                methods: dict[str, str], seeds: list[int], losses: dict[str, str],
                difficulty_quality: pd.DataFrame) -> list[Path]:
    out_dir = Path(out_dir)
    with plt.rc_context({"font.size": 9}):
        return [plot_curriculum(results, out_dir / "curriculum.png", labels, methods, seeds, losses),
                plot_training_curves(results, out_dir / "training_curves.png", labels, seeds),
                plot_difficulty(results, out_dir / "difficulty.png", difficulty_quality),
                plot_score_vs_runtime(results, out_dir / "score_vs_runtime.png", scores, labels, methods, seeds,
                                      losses)]
