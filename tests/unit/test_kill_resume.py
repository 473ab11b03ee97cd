"""SIGKILL a distillation job at a random checkpoint, re-run it, and get the uninterrupted result bitwise."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kdbench import stages
from kdbench.config import data_spec, distill_spec, load_config, student_init_spec, teacher_spec, tokenizer_spec
from kdbench.methods import discover_methods, resolve_runs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("kill")
    cfg = load_config("config/config.yaml", ["config/smoke.yaml"])
    cfg["data"]["source"]["sizes"] = {"train": 160, "dev": 8, "test": 8, "ood": 8}
    cfg["teacher"]["data"] = cfg["student"]["warmup_data"] = ["train"]   # no pretraining pools at these sizes
    cfg["training"]["train"].update(epochs=3, global_batch_size=8, micro_batch_size=8, checkpoint_every=2)
    stages.prepare_data(data_spec(cfg), work / "data")
    stages.build_tokenizer(tokenizer_spec(cfg), work / "data/train.jsonl", work / "tok")
    stages.train_teacher(teacher_spec(cfg), [work / f"data/{s}.jsonl" for s in cfg["teacher"]["data"]], work / "tok", work / "teacher", work / "t.json")
    stages.init_student(student_init_spec(cfg), [work / f"data/{s}.jsonl" for s in cfg["student"]["warmup_data"]], work / "tok", work / "student", work / "s.json")
    run = resolve_runs(cfg, discover_methods("methods"))["taid"]
    identity = {**run.identity(), "needs_teacher": True, "needs_profile": False}
    return work, distill_spec(cfg, identity, 1)


def _command(work: Path, spec: dict, out: str) -> list[str]:
    return [sys.executable, "-m", "kdbench.cli", "stage", "distill", "--threads", "1", "--spec", json.dumps(spec),
            "--run", "taid", "--methods-root", "methods", "--train", str(work / "data/train.jsonl"),
            "--student", str(work / "student"), "--teacher", str(work / "teacher"),
            "--out-dir", str(work / out / "model"), "--metrics", str(work / out / "train.json")]


def test_sigkill_then_rerun_gives_identical_weights(prepared):
    work, spec = prepared
    subprocess.run(_command(work, spec, "reference"), check=True, capture_output=True, timeout=600)
    kills = random.Random().randint(1, 12)  # a random checkpoint (of 30 steps, one every 2)
    checkpoint = work / "killed" / "model.ckpt" / "checkpoint.pt"
    proc = subprocess.Popen(_command(work, spec, "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, last = 0, None
    deadline = time.time() + 300
    while seen < kills and proc.poll() is None and time.time() < deadline:
        if checkpoint.exists():
            stamp = checkpoint.stat().st_mtime_ns
            if stamp != last:
                seen, last = seen + 1, stamp
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (work / "killed" / "train.json").exists()
    assert not (work / "killed" / "model").exists()          # nothing that looks finished
    subprocess.run(_command(work, spec, "killed"), check=True, capture_output=True, timeout=600)
    reference = load_file(str(work / "reference/model/model.safetensors"))
    resumed = load_file(str(work / "killed/model/model.safetensors"))
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert (reference[name] == resumed[name]).all(), name
    ref_hist = json.loads((work / "reference/train.json").read_text())["metrics"]["history"]
    res_hist = json.loads((work / "killed/train.json").read_text())["metrics"]["history"]
    assert [h["loss"] for h in ref_hist] == [h["loss"] for h in res_hist]
    assert not checkpoint.exists()
