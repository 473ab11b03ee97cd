"""Integrity of every artifact: nothing stale, nothing corrupt is ever used.

The job that writes an artifact *seals* it: it records the sha256 of every file in it, in
``sha256sum`` format, where any later job finds the record from the artifact's path alone:

  a directory (tokenizer, model)          ``<dir>/SHA256SUMS``, written inside the atomic directory
  a file (data split, eval set, profile,  ``<file>.sha256`` beside it
  teacher cache)

(``cd <dir> && sha256sum -c SHA256SUMS`` checks one by hand.) Predictions are recorded in their
``scores.json`` (``predictions_sha256``), which the tables read anyway. The job that consumes an
artifact *verifies* it before use: a missing, extra or changed file is a ResultError naming the file,
the hash on record and the hash found. Each job's result JSON also records the digests of what it
read and what it wrote (``integrity``), and a training checkpoint carries the run id and the input
digests of the job that wrote it, so that it resumes only that job (kdbench.train.load_checkpoint).
docs/integrity.md says what this costs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from kdbench.errors import ResultError
from kdbench.io import sha256_file, sha256_json, write_text_atomic

SEAL_NAME = "SHA256SUMS"
SEAL_SUFFIX = ".sha256"


def seal_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact / SEAL_NAME if artifact.is_dir() else artifact.with_name(artifact.name + SEAL_SUFFIX)


def manifest(artifact: str | os.PathLike) -> dict[str, str]:
    """{path relative to the artifact (a file: its name): sha256} of every file in it, except the seal and
    hidden files (Snakemake marks a directory output with ``.snakemake_timestamp``; no job reads them)."""
    artifact = Path(artifact)
    if artifact.is_file():
        return {artifact.name: sha256_file(artifact)}
    if not artifact.is_dir():
        raise ResultError(f"{artifact}: missing")
    return {p.relative_to(artifact).as_posix(): sha256_file(p)
            for p in sorted(artifact.rglob("*")) if p.is_file() and p.name != SEAL_NAME
            and not any(part.startswith(".") for part in p.relative_to(artifact).parts)}


def digest(files: dict[str, str]) -> str:
    """One hash for a whole manifest: what result JSONs and checkpoints record."""
    return sha256_json(files)


def _format(files: dict[str, str]) -> str:
    return "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))


def _parse(path: Path) -> dict[str, str]:
    files = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        sha, sep, name = line.partition("  ")
        if not sep or len(sha) != 64 or not name:
            raise ResultError(f"{path}:{lineno}: not a sha256sum line ('<sha256>  <file>'): {line[:80]!r}")
        files[name] = sha
    return files


def seal(artifact: str | os.PathLike) -> str:
    """Record the sha256 of every file of ``artifact`` (call it once the artifact is complete; for a
    directory, inside ``atomic_directory`` so the seal appears with it). Returns the manifest digest."""
    files = manifest(artifact)
    write_text_atomic(seal_path(artifact), _format(files))
    return digest(files)


def verify(artifact: str | os.PathLike, expected: dict[str, str] | None = None,
           record: str | os.PathLike | None = None) -> dict[str, str]:
    """Check ``artifact`` against its seal (or against ``expected``, recorded in ``record``); returns
    the manifest. Any difference is a ResultError naming the file, the recorded and the actual hash."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise ResultError(f"{artifact}: missing")
    if expected is None:
        record = seal_path(artifact)
        if not record.is_file():
            raise ResultError(f"{artifact}: no integrity record ({record} is missing): it was not written by a "
                              "kdbench job, or by one from before artifacts were hashed; delete it and re-run the "
                              "job that writes it")
        expected = _parse(record)
    actual = manifest(artifact)
    base = artifact if artifact.is_dir() else artifact.parent
    remedy = f"delete {artifact} and re-run the job that writes it"
    for name, sha in sorted(expected.items()):
        if name not in actual:
            raise ResultError(f"{base / name}: missing; {record} records sha256 {sha}; {remedy}")
        if actual[name] != sha:
            raise ResultError(f"{base / name}: sha256 {actual[name]} does not match {sha} recorded in {record} by "
                              f"the job that wrote it: the file changed afterwards (corrupted, truncated or "
                              f"edited); {remedy}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise ResultError(f"{base / extra[0]}: not recorded in {record} ({len(extra)} unrecorded file(s)): "
                          f"something was added after the job wrote {artifact}; {remedy}")
    return actual


def verify_inputs(log: Callable[[str], None] | None = None, **artifacts: str | os.PathLike | None) -> dict:
    """Verify every given input artifact (None = not used by this job) before the job reads any of them.

    Returns {"inputs": {name: manifest digest}, "verify_s", "verified_bytes"} for the job's result JSON
    and its checkpoint identity."""
    t0 = time.perf_counter()
    digests, size = {}, 0
    for name, path in artifacts.items():
        if path is None:
            continue
        files = verify(path)
        digests[name] = digest(files)
        base = Path(path) if Path(path).is_dir() else Path(path).parent
        size += sum((base / f).stat().st_size for f in files)
    elapsed = time.perf_counter() - t0
    if log is not None and digests:
        log(f"verified {len(digests)} input(s) ({', '.join(digests)}; {size / 2**20:.1f} MiB) in {elapsed:.2f}s")
    return {"inputs": digests, "verify_s": elapsed, "verified_bytes": size}


def checkpoint_identity(run_id: str, verified: dict) -> dict:
    """What a checkpoint must have been written for to be resumed: the job's run id and input digests."""
    return {"run_id": run_id, "inputs": dict(verified["inputs"])}


def set_aside(path: str | os.PathLike, tag: str) -> Path:
    """Rename ``path`` to ``<path>.<tag>`` (``.<tag>-2``, ... if taken) so nothing reads it again; kept
    for inspection, never deleted."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{tag}")
    counter = 2
    while target.exists():
        target = path.with_name(f"{path.name}.{tag}-{counter}")
        counter += 1
    os.replace(path, target)
    return target


def short(value: str | None) -> str:
    return (value or "none")[:12]


__all__ = ["SEAL_NAME", "SEAL_SUFFIX", "seal", "seal_path", "manifest", "digest", "verify", "verify_inputs",
           "checkpoint_identity", "set_aside", "short"]
