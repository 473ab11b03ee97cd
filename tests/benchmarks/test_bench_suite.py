"""The benchmark suite in --quick mode: the JSON's structure and the correctness checks behind each ratio.

No speed thresholds here: the ratios depend on the machine and its load. What must hold anywhere is
that the compared variants did the same work: the cached run made no teacher forward pass, batched
generation produced exactly the one-at-a-time outputs, kdbench's Rouge-L equals rouge_score's, and
the bare loop reproduced kdbench.train's losses and weights.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdbench.benchmarks import suite


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmarks.json"
    threads = torch.get_num_threads()
    assert suite.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads, "main() must restore the caller's thread count"
    return _strict_json(out)


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_machine_and_top_level(report):
    assert report["schema_version"] == suite.SCHEMA_VERSION
    assert report["quick"] is True
    assert report["command"].startswith("python -m kdbench.benchmarks.suite")
    machine = report["machine"]
    for key in ("cpu_count", "torch_threads", "torch_version", "device", "loadavg_before", "loadavg_after"):
        assert key in machine
    assert machine["torch_threads"] == 1 and machine["device"] == "cpu"
    assert machine["torch_version"] == torch.__version__
    assert list(report["benchmarks"]) == list(suite.BENCHMARKS)


@pytest.mark.parametrize("name", suite.BENCHMARKS)
def test_every_benchmark_has_a_ratio_timings_and_parameters(report, name):
    result = report["benchmarks"][name]
    assert _finite_positive(result["ratio"])
    assert isinstance(result["ratio_definition"], str) and "/" in result["ratio_definition"]
    assert isinstance(result["parameters"], dict) and result["parameters"]
    assert isinstance(result["timings"], dict) and result["timings"]
    assert isinstance(result["checks"], dict) and result["checks"]
    assert _finite_positive(result["wall_s"])


def test_cache_run_makes_no_teacher_forward_pass(report):
    result = report["benchmarks"]["teacher_cache"]
    checks = result["checks"]
    assert checks["cache_teacher_forward_passes"] and all(n == 0 for n in checks["cache_teacher_forward_passes"])
    assert all(run["teacher_forward_passes"] == 0 for run in result["timings"]["cache"])
    # The live run really used its teacher: one forward per (micro) batch.
    assert all(n == checks["steps"] > 0 for n in checks["live_teacher_forward_passes"])
    assert checks["losses_match"] is True
    live, cache = result["timings"]["live"][0], result["timings"]["cache"][0]
    assert live["tokens"] == cache["tokens"] > 0 and live["steps"] == cache["steps"]
    assert result["parameters"]["teacher_to_student_params"] > 3
    assert result["ratio"] == pytest.approx(max(r["tokens_per_s"] for r in result["timings"]["cache"])
                                            / max(r["tokens_per_s"] for r in result["timings"]["live"]))


def test_batched_generation_equals_one_at_a_time(report):
    result = report["benchmarks"]["generation"]
    assert result["checks"]["outputs_equal"] is True
    n_prompts = result["parameters"]["n_prompts"]
    for case in ("trained", "untrained"):
        checks = result["cases"][case]["checks"]
        assert checks["outputs_equal"] is True and checks["n_mismatches"] == 0
        assert checks["n_outputs"] == n_prompts
        assert result["timings"][case]["batched"][0]["examples"] == n_prompts
    # The comparison is not between identical empty strings: the untrained model's outputs differ.
    assert result["cases"]["untrained"]["checks"]["distinct_outputs"] > 1
    # Several batches, so length sorting and left padding are exercised.
    assert n_prompts > result["parameters"]["batch_size"]


def test_rouge_is_identical_to_rouge_score(report):
    result = report["benchmarks"]["rouge"]
    assert result["checks"]["identical"] is True
    timings = result["timings"]
    assert result["ratio"] == pytest.approx(timings["rouge_score_s"] / timings["kdbench_cold_s"])


def test_flops_and_overhead_are_reported_from_the_same_math(report):
    result = report["benchmarks"]["train_flops"]
    params = result["parameters"]
    heads = {"student": params["student_head_params"], "teacher": params["teacher_head_params"]}
    assert 0 < heads["student"] < params["student_params"] and 0 < heads["teacher"] < params["teacher_params"]
    assert params["flops_per_token"] == (6 * (params["student_params"] - heads["student"])
                                         + 2 * (params["teacher_params"] - heads["teacher"]))
    assert params["flops_per_response_token"] == 6 * heads["student"] + 2 * heads["teacher"]
    assert params["flops"] == (params["flops_per_token"] * params["tokens"]
                               + params["flops_per_response_token"] * params["response_tokens"])
    assert params["padded_tokens"] >= params["tokens"] > params["response_tokens"] > 0
    assert _finite_positive(result["timings"]["matmul"]["peak_flops_per_s"])
    assert _finite_positive(result["achieved_flops_per_s"])
    assert result["ratio"] == pytest.approx(result["achieved_flops_per_s"]
                                            / result["timings"]["matmul"]["peak_flops_per_s"])
    assert math.isfinite(result["overhead"]) and math.isfinite(result["overhead_cpu"])
    # The bare loop is a fair baseline only if it does exactly what kdbench.train does.
    assert result["checks"]["losses_match"] is True
    assert result["checks"]["max_param_abs_diff"] < 1e-6
    assert len(result["timings"]["bare"]) == len(result["timings"]["kdbench"]) == params["repeats"]


def test_only_runs_the_named_benchmarks(tmp_path):
    out = tmp_path / "rouge.json"
    assert suite.main(["--quick", "--only", "rouge", "--out", str(out)]) == 0
    result = _strict_json(out)
    assert list(result["benchmarks"]) == ["rouge"]
    assert result["benchmarks"]["rouge"]["checks"]["identical"] is True


def test_unknown_benchmark_name_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        suite.main(["--quick", "--only", "nope", "--out", str(tmp_path / "x.json")])
