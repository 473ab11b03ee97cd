"""The warm worker (kdbench.worker): same outputs as in-process, jobs die with their client, signals reach
the job, and a broken worker never fails a job."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kdbench import stages
from kdbench.config import data_spec, eval_spec, load_config, teacher_spec, tokenizer_spec
from kdbench.worker import disabled_reason, worker_key

IN_WORKER = re.compile(r"running in the warm worker as pid (\d+)")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Data, tokenizer and a teacher of the smoke sizes, and an environment with a private worker."""
    root = tmp_path_factory.mktemp("worker")
    cfg = load_config("config/config.yaml", ["config/smoke.yaml"])
    cfg["data"]["source"]["sizes"] = {"train": 32, "dev": 8, "test": 8, "ood": 8}
    cfg["teacher"]["data"] = cfg["student"]["warmup_data"] = ["train"]   # no pretraining pools at these sizes
    stages.prepare_data(data_spec(cfg), root / "data")
    stages.build_tokenizer(tokenizer_spec(cfg), root / "data/train.jsonl", root / "tok")
    runtime = Path(tempfile.mkdtemp(prefix="kdbw"))      # short: a socket path has at most 107 bytes
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "KDBENCH_WARM_WORKER": "1",
           "KDBENCH_WARM_WORKER_IDLE": "20"}
    env.pop("SLURM_JOB_ID", None)
    yield root, cfg, env
    # The worker leaves by itself after its idle time; stop it now.
    for log in runtime.glob("kdbench-*/*.log"):
        for pid in set(re.findall(r"\[kdbench worker (\d+) ", log.read_text())):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(runtime, ignore_errors=True)


def _teacher_argv(root: Path, cfg: dict, out: str, epochs: int = 1) -> list[str]:
    spec = teacher_spec(cfg)
    spec["train"] = {**spec["train"], "epochs": epochs}
    return ["stage", "teacher", "--threads", "1", "--spec", json.dumps(spec),
            "--data", *[str(root / f"data/{split}.jsonl") for split in cfg["teacher"]["data"]],
            "--tokenizer", str(root / "tok"), "--out-dir", str(root / out / "model"),
            "--metrics", str(root / out / "train.json")]


def _evaluate_argv(root: Path, cfg: dict, model: str, out: str) -> list[str]:
    spec = eval_spec(cfg, "synthetic_test")
    spec["decoding"]["max_new_tokens"] = 16
    return ["stage", "evaluate", "--threads", "1", "--spec", json.dumps(spec), "--model", str(root / model),
            "--eval-set", str(root / "data/test.jsonl"), "--eval-seeds", "10,20", "--label", "t", "--device", "cpu",
            "--out-dir", str(root / out)]


def _start(root: Path, env: dict, argv: list[str], log: str, **env_extra) -> subprocess.Popen:
    with open(root / log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "kdbench.cli", *argv], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, env={**env, **env_extra})


def _run(root: Path, env: dict, argv: list[str], log: str, **env_extra) -> str:
    proc = _start(root, env, argv, log, **env_extra)
    assert proc.wait(timeout=300) == 0, (root / log).read_text()[-3000:]
    return (root / log).read_text()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _job_pid(log: Path, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = IN_WORKER.search(log.read_text())
        if found and "teacher SFT" in log.read_text():      # the job itself has started
            return int(found[1])
        time.sleep(0.05)
    raise AssertionError(f"the job did not start in the worker:\n{log.read_text()[-3000:]}")


def _reference_teacher(root: Path, cfg: dict, env: dict) -> str:
    """The teacher trained in-process (KDBENCH_WARM_WORKER=0); returns its job log."""
    if not (root / "t_cold/model").exists():
        _run(root, env, _teacher_argv(root, cfg, "t_cold"), "t_cold.log", KDBENCH_WARM_WORKER="0")
    return (root / "t_cold.log").read_text()


def test_outputs_identical_in_worker_and_in_process(work):
    root, cfg, env = work
    warm = _run(root, env, _teacher_argv(root, cfg, "t_warm"), "t_warm.log")
    cold = _reference_teacher(root, cfg, env)
    assert IN_WORKER.search(warm) and "warm worker" not in cold
    assert "job_s=" in warm and "job_s=" in cold
    assert _digest(root / "t_warm/model/model.safetensors") == _digest(root / "t_cold/model/model.safetensors")
    # Sampling (temperature 1) from the trained teacher, two eval seeds; both ways, and two jobs at once.
    cold = _run(root, env, _evaluate_argv(root, cfg, "t_cold/model", "e_cold"), "e_cold.log", KDBENCH_WARM_WORKER="0")
    procs = [_start(root, env, _evaluate_argv(root, cfg, "t_cold/model", f"e_warm{i}"), f"e_warm{i}.log")
             for i in range(2)]
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=300) == 0, (root / f"e_warm{i}.log").read_text()[-3000:]
        assert IN_WORKER.search((root / f"e_warm{i}.log").read_text())
    for seed in (10, 20):
        predictions = (root / f"e_cold/es{seed}/predictions.jsonl").read_text()
        assert any(json.loads(line)["prediction"] for line in predictions.splitlines())   # a real comparison
        for i in range(2):
            assert (root / f"e_warm{i}/es{seed}/predictions.jsonl").read_text() == predictions


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_job_ends_with_its_client(work, how):
    """SIGKILL of the client: the worker kills the job. SIGTERM: forwarded to the job, the client dies of it."""
    root, cfg, env = work
    proc = _start(root, env, _teacher_argv(root, cfg, f"long_{how}", epochs=5000), f"long_{how}.log")
    pid = _job_pid(root / f"long_{how}.log")
    os.kill(proc.pid, signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    assert proc.wait(timeout=30) == (-signal.SIGKILL if how == "sigkill" else -signal.SIGTERM)
    assert _gone(pid), f"job {pid} still running after its client died"
    assert not (root / f"long_{how}/model").exists()


def _socket_path(root: Path, env: dict) -> str:
    code = ("import os; from kdbench.worker import socket_path, worker_key; "
            "print(socket_path(worker_key(os.getcwd(), os.environ), os.environ))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


class _FakeServer:
    """Listens on the worker's socket and misbehaves: closes at once, or says it started a job and dies."""

    def __init__(self, path: str, reply: bytes | None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path = path
        self.sock.bind(path)
        self.sock.listen(4)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        if self.reply:
            header, fds, _, _ = socket.recv_fds(conn, 8, 3)
            remaining = struct.unpack("!Q", header)[0]
            while remaining:
                remaining -= len(conn.recv(remaining))
            for fd in fds:
                os.close(fd)
            conn.sendall(self.reply)
        conn.close()
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="kdbf")      # short: a socket path has at most 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("failure", ["closes", "dies_during_job"])
def test_broken_worker_never_fails_a_job(work, short_dir, failure):
    root, cfg, env = work
    env = {**env, "XDG_RUNTIME_DIR": short_dir}      # a worker of its own
    path = _socket_path(root, env)
    assert path.startswith(env["XDG_RUNTIME_DIR"])
    victim = None
    reply = None
    if failure == "dies_during_job":     # the "job" is a sleep in its own group: the client must kill it
        victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
        threading.Thread(target=victim.wait, daemon=True).start()      # reaped as soon as it dies
        reply = struct.pack("!cq", b"P", victim.pid)
    _FakeServer(path, reply)
    _reference_teacher(root, cfg, work[2])
    log = _run(root, env, _teacher_argv(root, cfg, f"b_{failure}"), f"b_{failure}.log")
    assert "in-process" in log and "job_s=" in log
    assert _digest(root / f"b_{failure}/model/model.safetensors") == _digest(root / "t_cold/model/model.safetensors")
    if victim is not None:
        assert victim.wait(timeout=10) == -signal.SIGKILL


def test_when_it_is_off():
    assert disabled_reason({"KDBENCH_WARM_WORKER": "0"})
    assert disabled_reason({"WORLD_SIZE": "2"})
    assert disabled_reason({"SLURM_JOB_ID": "7"})
    assert disabled_reason({"SLURM_JOB_ID": "7", "KDBENCH_WARM_WORKER": "1"}) is None
    assert disabled_reason({"WORLD_SIZE": "1"}) is None


def test_key_follows_what_imports_read():
    base = worker_key("/x", {"OMP_NUM_THREADS": "1", "PATH": "/bin"})
    assert worker_key("/x", {"OMP_NUM_THREADS": "2", "PATH": "/bin"}) != base
    assert worker_key("/y", {"OMP_NUM_THREADS": "1", "PATH": "/bin"}) != base
    assert worker_key("/x", {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin", "KDBENCH_WARM_WORKER_IDLE": "5"}) == base
