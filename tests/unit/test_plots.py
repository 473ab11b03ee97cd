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
