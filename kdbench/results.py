"""One JSON per run: schema version, run id, resolved spec, seeds, package versions, git commit."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from kdbench import RESULT_SCHEMA_VERSION, __version__
from kdbench.config import run_id
from kdbench.errors import ResultError
from kdbench.io import read_json, write_json_atomic

PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "rouge_score", "rapidfuzz", "numpy", "pandas", "snakemake")


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["kdbench"] = __version__
    return {"packages": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "git": git_state()}


def git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def write_result(path: str | Path, kind: str, spec: dict, payload: dict[str, Any]) -> dict[str, Any]:
    document = {"schema_version": RESULT_SCHEMA_VERSION, "kind": kind, "run_id": run_id(spec),
                "spec": spec, "provenance": provenance(), **payload}
    write_json_atomic(path, document)
    return document


def read_result(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ResultError(f"{path}: result file missing")
    try:
        document = read_json(path)
    except ValueError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    version = document.get("schema_version") if isinstance(document, dict) else None
    if version != RESULT_SCHEMA_VERSION:
        raise ResultError(f"{path}: result schema_version {version!r}, this kdbench reads version "
                          f"{RESULT_SCHEMA_VERSION}; re-run the job that wrote it")
    if kind is not None and document.get("kind") != kind:
        raise ResultError(f"{path}: expected a '{kind}' result, found '{document.get('kind')}'")
    return document
