"""The same config and seeds give identical weights, predictions and scores on CPU, run twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench import stages
from kdbench.config import (data_spec, distill_spec, eval_spec, load_config, profile_spec, student_init_spec,
                            teacher_spec, tokenizer_spec)
from kdbench.io import sha256_file
from kdbench.methods import discover_methods, resolve_runs

# Wall-clock measurements are the only fields allowed to differ between two runs.
TIMING_KEYS = {"wall_s", "tokens_per_s", "scoring_s", "peak_rss_mb", "elapsed", "cuda_time_s"}


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS and not k.endswith("_s")}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _pipeline(root, cfg):
    stages.prepare_data(data_spec(cfg), root / "data")
    stages.build_tokenizer(tokenizer_spec(cfg), root / "data/train.jsonl", root / "tok")
    stages.train_teacher(teacher_spec(cfg), [root / f"data/{s}.jsonl" for s in cfg["teacher"]["data"]], root / "tok", root / "teacher", root / "t.json")
    stages.init_student(student_init_spec(cfg), [root / f"data/{s}.jsonl" for s in cfg["student"]["warmup_data"]], root / "tok", root / "student", root / "s.json")
    stages.profile_difficulty(profile_spec(cfg), root / "data/train.jsonl", root / "student", root / "teacher",
                              root / "profile.csv", root / "profile.json")
    run = resolve_runs(cfg, discover_methods("methods"))["pocl-fkl"]
    identity = {**run.identity(), "needs_teacher": True, "needs_profile": True}
    stages.distill(distill_spec(cfg, identity, 1), "pocl-fkl", Path("methods"), root / "data/train.jsonl",
                   root / "student", root / "teacher", root / "profile.csv", root / "run/model", root / "run/train.json")
    stages.prepare_eval_set({**eval_spec(cfg, "synthetic_test"), "data_dir": cfg["data_dir"]}, None,
                            root / "data/test.jsonl", root / "evalset.jsonl", root / "evalset.json")
    stages.evaluate(eval_spec(cfg, "synthetic_test"), root / "run/model", root / "evalset.jsonl", [10, 20],
                    "pocl-fkl/seed1", root / "eval")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    cfg = load_config("config/config.yaml", ["config/smoke.yaml"])
    roots = [tmp_path_factory.mktemp(f"run{i}") for i in range(2)]
    for root in roots:
        _pipeline(root, cfg)
    return roots


def test_weights_are_identical(two_runs):
    a, b = two_runs
    for part in ("teacher", "student", "run/model"):
        assert sha256_file(a / part / "model.safetensors") == sha256_file(b / part / "model.safetensors"), part


def test_profile_predictions_and_scores_are_identical(two_runs):
    a, b = two_runs
    assert (a / "profile.csv").read_bytes() == (b / "profile.csv").read_bytes()
    for seed in (10, 20):
        assert (a / f"eval/es{seed}/predictions.jsonl").read_bytes() == (b / f"eval/es{seed}/predictions.jsonl").read_bytes()
        scores_a = json.loads((a / f"eval/es{seed}/scores.json").read_text())
        scores_b = json.loads((b / f"eval/es{seed}/scores.json").read_text())
        assert _strip_timing(scores_a) == _strip_timing(scores_b)
    # Different eval seeds sample differently (the seed is really used).
    assert (a / "eval/es10/predictions.jsonl").read_bytes() != (a / "eval/es20/predictions.jsonl").read_bytes()
