"""The smoke config through a real SLURM cluster (profiles/slurm), against a local run of the same config.

Needs a reachable SLURM controller with an idle node and snakemake-executor-plugin-slurm
(`pip install -e ".[slurm]"`); `.ci/slurm-setup.sh` starts a single-node cluster on loopback.
Without them the tests skip, except with KDBENCH_REQUIRE_SLURM=1, where they fail.

One module fixture runs both workflows at once, each in its own copy of the project: the SLURM run
mostly waits on the scheduler (status polling), so the local reference run overlaps it. The cluster has
no accounting database, so job status comes from squeue (`--slurm-status-command squeue`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]
PROJECT_ITEMS = ("Snakefile", "workflow", "config", "methods", "evals", "profiles")
# --workflow-profile none: the job blocks ('rule x:', 'jobid:') that the tests read (profiles/default hides them).
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "none"]
RUN_TIMEOUT_S = int(os.environ.get("KDBENCH_SLURM_TEST_TIMEOUT", "1200"))  # safety net only
# Options only this CI cluster needs: no slurmdbd (squeue for status), fast first status check, keep
# every job's SLURM log as evidence. The resources all come from profiles/slurm.
SLURM_TEST_ARGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                   "--slurm-keep-successful-logs")
SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.MULTILINE)
RUN_ID = re.compile(r"^SLURM run ID: (\S+)$", re.MULTILINE)
JOB_HEADER = re.compile(r"^(local)?rule (\w+):$")


def _unavailable(reason: str) -> None:
    reason = f"SLURM not available: {reason} (start a cluster with: bash .ci/slurm-setup.sh)"
    # A runner that started the cluster sets KDBENCH_REQUIRE_SLURM=1, so a broken cluster fails there.
    if os.environ.get("KDBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(reason + " -- required because KDBENCH_REQUIRE_SLURM=1")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """The idle partition's name; skips (fails with KDBENCH_REQUIRE_SLURM=1) without a usable cluster."""
    for tool in ("sbatch", "sinfo", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            _unavailable(f"'{tool}' is not on PATH")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        _unavailable("sinfo timed out")
    if proc.returncode != 0:
        _unavailable(f"sinfo failed: {proc.stderr.strip()}")
    usable = [line.split()[0] for line in proc.stdout.splitlines() if line.split()[1:] in (["idle"], ["mix"])]
    if not usable:
        _unavailable(f"no idle node (sinfo: {proc.stdout.strip() or 'empty'})")
    return usable[0].rstrip("*")


def _copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for item in PROJECT_ITEMS:
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, dest / item)
    return dest


@dataclass
class Runs:
    local: Path
    slurm: Path
    slurm_log: str          # the SLURM run's snakemake output (stdout + stderr)
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("slurm")
    local, slurm = _copy_project(root / "local"), _copy_project(root / "slurm")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in [v for v in env if v.startswith("KDBENCH_SLURM_")]:   # the cluster's default partition
        del env[var]
    start, seconds = time.monotonic(), {}
    with (root / "local.log").open("w") as local_log, (root / "slurm.log").open("w") as slurm_log:
        procs = {
            "local": subprocess.Popen([*SNAKEMAKE, "--profile", "profiles/local", "--cores", "2",
                                       "--configfile", "config/smoke.yaml"],
                                      cwd=local, stdout=local_log, stderr=subprocess.STDOUT, env=env),
            "slurm": subprocess.Popen([*SNAKEMAKE, "--profile", "profiles/slurm", "--configfile", "config/smoke.yaml",
                                       *SLURM_TEST_ARGS],
                                      cwd=slurm, stdout=slurm_log, stderr=subprocess.STDOUT, env=env),
        }
        try:
            for name, proc in procs.items():
                proc.wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - start)))
                seconds[name] = round(time.monotonic() - start, 1)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _stop(procs, (root / "slurm.log"))
    slurm_out = (root / "slurm.log").read_text()
    for name, proc in procs.items():
        text = slurm_out if name == "slurm" else (root / "local.log").read_text()
        extra = _slurm_job_logs(slurm) if name == "slurm" else ""
        assert name in seconds, f"{name} run still going after {RUN_TIMEOUT_S}s:\n{text[-6000:]}\n{extra}"
        assert proc.returncode == 0, f"{name} run failed:\n{text[-6000:]}\n{extra}"
    return Runs(local=local, slurm=slurm, slurm_log=slurm_out, seconds=seconds)


def _stop(procs: dict[str, subprocess.Popen], slurm_log: Path) -> None:
    """Interrupt runs still going (Snakemake then cancels its SLURM jobs); scancel what is left."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    run_id = RUN_ID.search(slurm_log.read_text())
    if run_id:
        subprocess.run(["scancel", "--name", run_id[1]], capture_output=True, timeout=30)


def _slurm_job_logs(workdir: Path, limit: int = 3) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs[-limit:])


def _job_rules(log: str) -> dict[int, tuple[str, bool]]:
    """Snakemake job id -> (rule, ran locally) from the run's job headers ('rule x:' / 'localrule x:')."""
    jobs, current = {}, None
    for line in log.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            current = (header[2], bool(header[1]))
        elif current and line.strip().startswith("jobid:"):
            jobs[int(line.split(":")[1])] = current
            current = None
    return jobs


def _squeue_states(run_id: str) -> dict[str, str]:
    proc = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T", "--name", run_id],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("|", 1) for line in proc.stdout.split())


def _scontrol_job(slurm_id: str) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "show", "job", "-o", slurm_id], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(field.split("=", 1) for field in proc.stdout.split() if "=" in field)


def _smoke_dag_size() -> int:
    """Jobs in the whole smoke DAG, from a dry run."""
    proc = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--nolock", "--configfile", "config/smoke.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(re.search(r"^total\s+(\d+)$", proc.stdout + proc.stderr, re.MULTILINE)[1])


def test_every_job_went_through_sbatch(runs):
    log = runs.slurm_log
    jobs = _job_rules(log)
    submitted = {int(m[1]): (m[2], Path(m[3])) for m in SUBMITTED.finditer(log)}
    local_jobs = {rule for rule, local in jobs.values() if local}
    assert local_jobs <= {"all"}, f"jobs run outside SLURM: {local_jobs}"
    remote = {jobid for jobid, (_, local) in jobs.items() if not local}
    whole_dag = _smoke_dag_size() - 1            # every job but the local target rule 'all'
    assert len(remote) == whole_dag, f"expected the whole smoke DAG ({whole_dag} jobs), parsed {len(remote)} jobs"
    assert set(submitted) == remote, (f"not submitted: {sorted(remote - set(submitted))}; "
                                      f"unknown: {sorted(set(submitted) - remote)}")
    slurm_ids = [slurm_id for slurm_id, _ in submitted.values()]
    assert len(set(slurm_ids)) == len(slurm_ids), "one SLURM job per Snakemake job"
    for jobid, (slurm_id, job_log) in submitted.items():
        rule = jobs[jobid][0]
        assert f"rule_{rule}" in job_log.parts, (rule, job_log)
        text = job_log.read_text()
        assert f"rule {rule}:" in text and "1 of 1 steps (100%) done" in text, f"{job_log}:\n{text[-2000:]}"
    # The scheduler's own record: squeue keeps finished jobs for MinJobAge (1 h on the CI cluster), no
    # accounting database needed.
    states = _squeue_states(RUN_ID.search(log)[1])
    assert {slurm_id: states.get(slurm_id) for slurm_id in slurm_ids} == dict.fromkeys(slurm_ids, "COMPLETED")


def test_profile_resources_reach_sbatch(runs):
    """cpus-per-task follows the rule's threads; memory and time limits come from profiles/slurm."""
    jobs = _job_rules(runs.slurm_log)
    # Every job runs one thread (workflow/rules/common.smk), so one CPU per task.
    expected = {"distill": ("1", "8000M", "04:00:00"), "teacher_sft": ("1", "8000M", "04:00:00"),
                "student_init": ("1", "4000M", "01:00:00"), "profile_difficulty": ("1", "8000M", "02:00:00"),
                "evaluate": ("1", "4000M", "02:00:00"), "prepare_data": ("1", "2000M", "00:30:00")}
    seen = set()
    for m in SUBMITTED.finditer(runs.slurm_log):
        rule = jobs[int(m[1])][0]
        if rule not in expected or rule in seen:
            continue
        seen.add(rule)
        job = _scontrol_job(m[2])
        got = (job.get("CPUs/Task"), job.get("MinMemoryNode"), job.get("TimeLimit"))
        assert got == expected[rule], f"{rule} (SLURM job {m[2]}): cpus/mem/time {got}, expected {expected[rule]}"
    assert seen == set(expected)


def _same_files(runs: Runs, pattern: str) -> int:
    local = sorted(p.relative_to(runs.local) for p in runs.local.glob(pattern))
    slurm = sorted(p.relative_to(runs.slurm) for p in runs.slurm.glob(pattern))
    assert local == slurm and local, f"{pattern}: different file sets"
    differ = [str(p) for p in local if (runs.local / p).read_bytes() != (runs.slurm / p).read_bytes()]
    assert not differ, f"differ between the SLURM and the local run: {differ}"
    return len(local)


def test_scores_identical_to_local_run(runs):
    # The smoke models are tiny (Rouge-L near 0), so the tables alone would hide a drift: the
    # generations of every model and the trained weights must be bit-identical too.
    _same_files(runs, "paper_tables/smoke/scores.csv")
    _same_files(runs, "paper_tables/smoke/difficulty.csv")
    _same_files(runs, "results/smoke/eval/**/predictions.jsonl")
    _same_files(runs, "results/smoke/**/model/model.safetensors")
    print(f"wall time (both runs started together): {runs.seconds}")
