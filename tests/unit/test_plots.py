"""Figures next to the tables: one non-trivial PNG per kind, written from a synthetic results tree."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from kdbench.plots import PLOT_NAMES, build_plots, curriculum_series, plot_difficulty
from kdbench.tables import build_tables, load_scores
from tests.unit.test_tables import RUNS, SEEDS, _trace, make_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ink(path) -> float:
    """Fraction of pixels that are not (near-)white."""
    image = mpimg.imread(path)[..., :3]
    return float((image.min(axis=2) < 0.9).mean())


def colour(path) -> float:
    """Fraction of coloured pixels: the data (lines, bars, markers), not the black/grey axes and text."""
    image = mpimg.imread(path)[..., :3]
    return float(((image.max(axis=2) - image.min(axis=2)) > 0.25).mean())


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    results, config = make_results(root, effects={"pocl-fkl": 3.0})
    written = build_tables(results, root / "out", config_json=config)
    return root / "out", written


def test_one_png_per_kind_is_written_and_not_blank(figures):
    out, written = figures
    assert [p.name for p in written if p.suffix == ".png"] == [f"{name}.png" for name in PLOT_NAMES]
    for name in PLOT_NAMES:
        path = out / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_size > 20_000, name
        height, width = mpimg.imread(path).shape[:2]
        assert width >= 800 and height >= 500, (name, width, height)
        assert ink(path) > 0.03, name                  # axes, lines and text, not an empty canvas
        assert colour(path) > 0.003, name              # and the data is drawn


def test_figures_are_reproducible(figures, tmp_path):
    out, _ = figures
    results = out.parent / "results"
    config_runs = {r: v[0] for r, v in RUNS.items()}
    quality = pd.read_csv(out / "difficulty.csv")
    again = build_plots(results, tmp_path, load_scores(results), config_runs, {r: v[1] for r, v in RUNS.items()},
                        SEEDS, {r: v[2] or "fkl" for r, v in RUNS.items()}, quality)
    for path in again:
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name


def test_missing_profile_gives_a_notice_instead_of_failing(tmp_path):
    notice = plot_difficulty(tmp_path / "results-without-profile", tmp_path / "out" / "difficulty.png",
                             pd.DataFrame())
    assert notice.read_bytes()[:8] == PNG_SIGNATURE
    height, width = mpimg.imread(notice).shape[:2]
    assert height < 400 and 0 < ink(notice) < 0.05      # a one-line message, not an empty grid of axes


def test_curriculum_series_follow_the_trace_and_history():
    trace, history, total = _trace("pocl", n_train=40)
    series = curriculum_series({"trace": trace, "history": history, "total_steps": total}, n_train=40)
    assert [y for _, y in series["subset"]] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [x for x, _ in series["subset"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert series["temperature"][0] == (0.0, 1.0) and series["temperature"][-1] == (1.0, 2.0)
    assert "t" not in series and "mean_difficulty" not in series
    trace, history, total = _trace("taid", n_train=40)
    t = curriculum_series({"trace": trace, "history": history, "total_steps": total}, n_train=40)["t"]
    assert np.all(np.diff([y for _, y in t]) >= -1e-9) and t[0][1] == pytest.approx(0.4) and t[-1][1] == 1.0
    # Vanilla KD logs a constant temperature only in its logged steps (every 5th here): held from the start.
    trace, history, total = _trace("vanilla_kd", n_train=40)
    temperature = curriculum_series({"trace": trace, "history": history[4::5], "total_steps": total},
                                    40)["temperature"]
    assert temperature[0] == (0.0, 1.0) and {y for _, y in temperature} == {1.0}


def test_a_short_run_is_drawn_on_its_whole_step_range_and_says_so(tmp_path, monkeypatch):
    """A run that logged one step (smoke-sized) gets its full x range and a note, not a dot on odd axes."""
    import json

    from kdbench import plots
    from kdbench.methods import SFT_RUN

    results, _ = make_results(tmp_path, effects={})
    for seed in SEEDS:
        path = results / "runs" / SFT_RUN / f"seed{seed}" / "train.json"
        doc = json.loads(path.read_text())
        doc["metrics"]["history"] = doc["metrics"]["history"][-1:]
        doc["metrics"]["history"][0]["step"] = 8
        doc["metrics"]["total_steps"] = 10
        path.write_text(json.dumps(doc))
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plots.plot_training_curves(results, tmp_path / "curves.png", {r: v[0] for r, v in RUNS.items()}, SEEDS)
    panel = next(ax for ax in drawn["fig"].axes if ax.get_title() == "SFT (student)")
    assert panel.get_xlim()[0] == 0 and panel.get_xlim()[1] >= 10
    assert any("1 logged step(s) of 10" in t.get_text() for t in panel.texts)
    longer = next(ax for ax in drawn["fig"].axes if ax.get_title() not in ("", "SFT (student)") and ax.lines)
    assert not any("too few" in t.get_text() for t in longer.texts)


def test_every_curriculum_method_with_levels_appears_in_the_mean_level_panel(tmp_path, monkeypatch):
    import json

    from kdbench import plots

    results, _ = make_results(tmp_path, effects={})
    for seed in SEEDS:          # CPD's real trace carries the subset's mean true level too
        path = results / "runs" / "cpd" / f"seed{seed}" / "train.json"
        doc = json.loads(path.read_text())
        for i, entry in enumerate(doc["metrics"]["trace"]):
            entry["mean_true_level"] = 1.2 + 0.4 * i
        path.write_text(json.dumps(doc))
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plots.plot_curriculum(results, tmp_path / "curriculum.png", {r: v[0] for r, v in RUNS.items()},
                          {r: v[1] for r, v in RUNS.items()}, SEEDS, {r: v[2] or "fkl" for r, v in RUNS.items()})
    panel = next(ax for ax in drawn["fig"].axes if ax.get_title() == "Mean true level of the epoch's subset")
    curves = {tuple(round(y, 6) for y in line.get_ydata()) for line in panel.lines}
    assert len(curves) == 2            # POCL and CPD, each its own line
    legend = [t.get_text() for t in drawn["fig"].legends[0].get_texts()]
    assert "POCL (FKL)" in legend and "CPD" in legend
