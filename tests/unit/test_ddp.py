"""2-process data parallel (gloo on CPU) matches 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_process_gloo_matches_single_process(tmp_path):
    tok = tmp_path / "tok"
    single, double = tmp_path / "single.json", tmp_path / "ddp.json"
    # One process: micro-batch 4, accumulation 2 over a global batch of 8.
    _run([sys.executable, str(WORKER), str(single), str(tok), "4"], tmp_path)
    # Two processes: each takes its contiguous half (4 examples), no accumulation.
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
          str(double), str(tok), "4"], tmp_path)
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["accumulation"] == 2 and two["accumulation"] == 1
    assert one["steps"] == two["steps"] == 10
    assert one["examples"] == two["examples"] == 80
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    a, b = torch.load(single.with_suffix(".pt")), torch.load(double.with_suffix(".pt"))
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name
