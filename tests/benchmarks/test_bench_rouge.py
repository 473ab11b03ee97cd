"""Rouge-L speed, kdbench against rouge_score on the same pairs (pytest-benchmark).

pyproject passes --benchmark-disable, so by default each benchmark body runs once, as a test.
Use ``pytest tests/benchmarks --benchmark-enable`` to get timings. The full 10k-pair comparison
is ``python -m kdbench.benchmarks.rouge_speed``.
"""

from __future__ import annotations

import json

import pytest

from kdbench import metrics
from kdbench.benchmarks import rouge_speed

N_PAIRS = 500


@pytest.fixture(scope="module")
def pairs():
    return rouge_speed.synthetic_pairs(N_PAIRS, seed=0)


@pytest.fixture(scope="module")
def expected(pairs):
    return rouge_speed.rouge_score_baseline(pairs)


def _split(pairs):
    return [p for p, _ in pairs], [r for _, r in pairs]


def test_bench_rouge_score(benchmark, pairs):
    # rouge_score takes seconds per round; a few rounds are enough to compare.
    result = benchmark.pedantic(rouge_speed.rouge_score_baseline, args=(pairs,), rounds=3, iterations=1)
    assert result == metrics.rouge_l(*_split(pairs))


def test_bench_kdbench_cold(benchmark, pairs, expected):
    preds, refs = _split(pairs)
    # Cleared before every round: the cost of a first evaluation in a fresh process.
    result = benchmark.pedantic(metrics.rouge_l, args=(preds, refs), setup=metrics.clear_caches,
                                rounds=10, iterations=1)
    assert result == expected


def test_bench_kdbench_warm(benchmark, pairs, expected):
    preds, refs = _split(pairs)
    metrics.rouge_l(preds, refs)
    assert benchmark(metrics.rouge_l, preds, refs) == expected


def test_synthetic_pairs_are_deterministic_and_varied(pairs):
    assert rouge_speed.synthetic_pairs(N_PAIRS, seed=0) == pairs
    assert rouge_speed.synthetic_pairs(N_PAIRS, seed=1) != pairs
    scores = metrics.rouge_l(*_split(pairs))
    # A benchmark of only zeros or only perfect matches would not exercise the LCS.
    assert sum(s == 0.0 for s in scores) < N_PAIRS / 4
    assert sum(0.0 < s < 100.0 for s in scores) > N_PAIRS / 2
    assert any(len(refs) > 1 for _, refs in pairs)


def test_measure_reports_identical_results():
    result = rouge_speed.measure(n_pairs=300, seed=0, repeats=1)
    assert result["identical"] is True
    assert result["n_pairs"] == 300
    for key in ("rouge_score_s", "kdbench_cold_s", "kdbench_warm_s"):
        assert result[key] > 0
    assert result["speedup_cold"] == result["rouge_score_s"] / result["kdbench_cold_s"]
    # Speed itself is reported by the benchmark (docs/benchmarks.md), never asserted in a test.


def test_measure_on_real_data(shared_data_dir, tmp_path):
    out = tmp_path / "rouge.json"
    assert rouge_speed.main(["--n-pairs", "200", "--repeats", "1", "--data-dir", str(shared_data_dir),
                             "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["identical"] is True and result["n_pairs"] == 200
    assert result["source"] == str(shared_data_dir)
