"""End to end: the smoke config through Snakemake, then the incremental-rerun guarantees.

One finished smoke run (module fixture) is reused by every test below; each later test only
asks Snakemake what it *would* do, or runs the few jobs it expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SNAKEMAKE, "--configfile", "config/smoke.yaml", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count from a dry run's job-stats table."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("project")
    for item in ("Snakefile", "workflow", "config", "methods", "evals"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / item)
    snakemake(workdir, "--cores", "2")
    return workdir


def test_smoke_run_produces_every_table(project):
    tables = project / "paper_tables" / "smoke"
    for name in ("scores", "runtime", "difficulty", "per_level", "curriculum"):
        for ext in ("md", "tex", "csv"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    scores = pd.read_csv(tables / "scores.csv")
    # config/smoke.yaml: every method once, vanilla KD in the losses the methods are compared against.
    expected_runs = {"teacher", "sft", "vanilla_kd-fkl", "vanilla_kd-sfkl", "vanilla_kd-srkl", "pocl-fkl", "cpd",
                     "l2m_kd", "taid"}
    assert set(scores.run) == expected_runs
    assert (scores.n == 2).all()                      # 1 training seed x 2 eval seeds
    runtime = pd.read_csv(tables / "runtime.csv")
    assert {"teacher SFT", "student init", "profiling", "distillation", "evaluation"} <= set(runtime.phase)
    tex = (tables / "scores.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex
    assert "POCL (FKL)" in (tables / "scores.md").read_text()


def test_runs_csv_is_the_long_form_of_the_scores(project):
    tables = project / "paper_tables" / "smoke"
    runs, scores = pd.read_csv(tables / "runs.csv"), pd.read_csv(tables / "scores.csv")
    # 8 trained runs x 1 training seed + the teacher, x 2 eval sets x 2 eval seeds
    assert len(runs) == 9 * 2 * 2 and set(runs.run) == set(scores.run)
    assert {"run", "model", "method", "training_seed", "eval_set", "eval_seed", "rouge_l", "exact_match"} <= set(runs)
    means = runs.groupby(["run", "eval_set"]).rouge_l.mean()
    for row in scores.to_dict("records"):
        for eval_set in ("synthetic_test", "synthetic_ood"):
            assert means[(row["run"], eval_set)] == pytest.approx(row[f"{eval_set}_mean"], abs=1e-9)


def test_report_documents_the_run_and_refuses_a_profile_without_results(project):
    out = project / "report.html"
    snakemake(project, "--report", str(out))
    html = out.read_text(errors="replace")
    for name in ("scores.csv", "per_level.csv", "runs.csv", "curriculum.png", "training_curves.png"):
        assert name in html, name
    missing = project / "missing-report.html"
    proc = subprocess.run([*SNAKEMAKE, "--configfile", "config/synthetic-gpu.yaml", "--report", str(missing)],
                          cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not missing.exists()
    assert "no report for profile 'synthetic-gpu'" in proc.stdout + proc.stderr
    assert "results of other profiles here: smoke" in proc.stdout + proc.stderr


def test_rerun_after_finish_does_nothing(project):
    assert planned_jobs(project) == {}


def test_tables_rebuild_without_training(project):
    out = project / "rebuilt"
    proc = subprocess.run([sys.executable, "-m", "kdbench.cli", "tables", "--profile", "smoke", "--out", str(out)],
                          cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "scores.csv").read_text() == (project / "paper_tables/smoke/scores.csv").read_text()
    # the default profile's tables from the smoke results: an error that names the right profile
    wrong = subprocess.run([sys.executable, "-m", "kdbench.cli", "tables", "--results", "results/smoke",
                            "--out", str(project / "wrong")], cwd=project, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "not produced by profile 'default'" in wrong.stderr
    assert "kdbench tables --profile smoke" in wrong.stderr and not (project / "wrong").exists()
    assert planned_jobs(project, "paper_tables", "--forcerun", "paper_tables") == {"paper_tables": 1}


def test_deleting_one_method_reruns_only_that_method(project):
    # A method's results: its trained models and its evaluations (Snakemake does not rebuild a deleted
    # intermediate file whose consumers are still up to date).
    shutil.rmtree(project / "results/smoke/runs/taid")
    shutil.rmtree(project / "results/smoke/eval/taid")
    assert planned_jobs(project) == {"distill": 1, "evaluate": 2, "paper_tables": 1, "all": 1}


def test_changing_one_method_hyperparameter_reruns_only_that_method(project):
    override = project / "config" / "tweak.yaml"
    override.write_text(yaml.safe_dump({"methods": {"settings": {"cpd": {"hparams": {"alpha_end": 0.3}}}}}))
    jobs = planned_jobs(project, "--configfile", "config/smoke.yaml", "config/tweak.yaml")
    # taid was deleted by the previous test, so its jobs are pending too.
    assert jobs.get("distill") == 2 and jobs.get("evaluate") == 4
    assert "teacher_sft" not in jobs and "profile_difficulty" not in jobs


def test_adding_a_method_directory_adds_a_dag_node_and_a_table_row(project):
    proc = subprocess.run([sys.executable, "-m", "kdbench.cli", "new-method", "added_method"], cwd=project,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    snakemake(project, "--cores", "2")
    scores = pd.read_csv(project / "paper_tables/smoke/scores.csv")
    assert "added_method" in set(scores.run)
    assert "ADDED-METHOD" in (project / "paper_tables/smoke/scores.md").read_text()


def test_bad_config_fails_before_any_job(project):
    bad = project / "config" / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"train": {"epoch": 3}}}))
    proc = snakemake(project, "-n", "--configfile", "config/smoke.yaml", "config/bad.yaml", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "training.train.epoch" in text and "allowed keys here" in text
    bad.write_text(yaml.safe_dump({"evaluation": {"sets": ["synthetic_test", "dolly_typo"]}}))
    proc = snakemake(project, "-n", "--configfile", "config/smoke.yaml", "config/bad.yaml", check=False)
    assert proc.returncode != 0 and "unknown eval set 'dolly_typo'" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- integrity (docs/integrity.md)
# These run last: each puts back what it breaks, except the last, which leaves taid trained under its override.
def test_a_malformed_config_yaml_is_named_with_its_line(tmp_path):
    for item in ("Snakefile", "workflow", "config", "methods", "evals"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / item)
    config = tmp_path / "config" / "config.yaml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join(lines[:5] + ["seed: [1, 2"] + lines[5:]) + "\n")
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "config/config.yaml:7: malformed YAML" in proc.stdout + proc.stderr


def test_tables_without_the_profile_are_an_error_not_a_smaller_table(project):
    profile, aside = project / "results/smoke/profile", project / "profile.aside"
    out = project / "tables-without-profile"
    shutil.move(profile, aside)
    try:
        proc = subprocess.run([sys.executable, "-m", "kdbench.cli", "tables", "--results", "results/smoke", "--out",
                               str(out), "--config", "config/config.yaml", "--overrides", "config/smoke.yaml"],
                              cwd=project, capture_output=True, text=True, timeout=300)
    finally:
        shutil.move(aside, profile)
    assert proc.returncode == 2, proc.stderr
    assert "results/smoke/profile/summary.json: missing, but results/smoke/runs/" in proc.stderr
    assert not out.exists()


TAID = "results/smoke/runs/taid/seed1/train.json"


def test_a_corrupted_teacher_cache_fails_the_run_that_reads_it(project):
    results = project / "results/smoke"
    cache = results / "teacher/cache.safetensors"
    original, stat = cache.read_bytes(), cache.stat()
    shutil.rmtree(results / "runs/taid", ignore_errors=True)
    shutil.rmtree(results / "eval/taid", ignore_errors=True)
    with open(cache, "r+b") as handle:        # 200 KB overwritten in place, the mtime kept
        handle.seek(len(original) // 4)
        handle.write(os.urandom(200_000))
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    corrupted = hashlib.sha256(cache.read_bytes()).hexdigest()
    try:
        proc = snakemake(project, "--cores", "2", TAID, check=False)
    finally:
        cache.write_bytes(original)
        os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert proc.returncode != 0
    log = (results / "logs/distill/taid/seed1.log").read_text()
    assert (f"results/smoke/teacher/cache.safetensors: sha256 {corrupted} does not match "
            f"{hashlib.sha256(original).hexdigest()} recorded in results/smoke/teacher/cache.safetensors.sha256") in log
    assert not (project / TAID).exists() and not (results / "runs/taid/seed1/model").exists()


def test_a_checkpoint_of_a_changed_spec_is_set_aside_not_resumed(project):
    """Kill Snakemake after TAID's first checkpoint, change t_start, resume as the README says."""
    results = project / "results/smoke"
    run_dir = results / "runs/taid/seed1"
    checkpoint = run_dir / "model.ckpt/checkpoint.pt"
    settings = {"train": {"epochs": 40, "checkpoint_every": 2}}   # 240 steps: time to kill it after step 2
    override = project / "config/checkpointed.yaml"
    override.write_text(yaml.safe_dump({"methods": {"settings": {"taid": settings}}}))
    configs = ("--configfile", "config/smoke.yaml", "config/checkpointed.yaml")
    proc = subprocess.Popen([*SNAKEMAKE, *configs, "--cores", "2", TAID], cwd=project, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)        # Snakemake itself and its job
    proc.wait()
    assert checkpoint.exists() and not (project / TAID).exists()
    import torch

    stale = torch.load(checkpoint, weights_only=False)["identity"]["run_id"]
    settings["hparams"] = {"t_start": 0.9}
    override.write_text(yaml.safe_dump({"methods": {"settings": {"taid": settings}}}))
    snakemake(project, *configs, "--unlock")
    snakemake(project, *configs, "--cores", "2", "--rerun-incomplete", TAID)
    log = (results / "logs/distill/taid/seed1.log").read_text()
    assert f"set aside as checkpoint.pt.stale-{stale[:12]}" in log and "training starts fresh" in log
    assert "resuming" not in log
    assert (run_dir / f"model.ckpt/checkpoint.pt.stale-{stale[:12]}").is_file()
    doc = json.loads((project / TAID).read_text())
    assert doc["spec"]["run"]["hparams"]["t_start"] == 0.9 and doc["metrics"]["trace"][0]["t"] == 0.9
    weights = (run_dir / "model/model.safetensors").read_bytes()
    shutil.rmtree(run_dir / "model")           # a clean run of the new spec gives the same weights
    (project / TAID).unlink()
    snakemake(project, *configs, "--cores", "2", TAID)
    assert (run_dir / "model/model.safetensors").read_bytes() == weights
