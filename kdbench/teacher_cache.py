"""Teacher-output cache: the teacher's logits on the training set, computed once and shared by every
method and seed that trains on the ground-truth responses.

Keyed by content, never by batch position: the key hashes the teacher weights, every example's id,
token ids and labels (so the tokenizer and the truncation parameters), the storage dtype and the mode. Each
example's rows are looked up by example id and checked against a hash of its token ids.

Modes
  dense   exact logits at every response position (the positions any loss reads), float32 or bf16
  topk    opt-in for large vocabularies: the top-k log-probabilities plus one tail bucket whose mass
          is spread uniformly over the other V - k tokens; ``approximation_error`` measures the cost
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdbench.batching import IGNORE_INDEX, Encoded, collate
from kdbench.errors import ResultError
from kdbench.io import sha256_file
from kdbench.models import ResponseLM, unreadable_artifact
from kdbench.progress import batch_starts

MODES = ("live", "dense", "topk")
STORAGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _example_digest(example: Encoded) -> str:
    blob = json.dumps([example.input_ids, example.labels], separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _weights_digest(model_dir: Path) -> str:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ResultError(f"{model_dir}: no safetensors weights to key the teacher cache on")
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def cache_key(teacher_dir: Path, encoded: list[Encoded], mode: str, storage: str, top_k: int | None,
              compute_dtype: torch.dtype = torch.float32) -> str:
    # Token ids and labels already carry the tokenizer and the truncation parameters; the teacher's
    # compute dtype changes its logits (a bf16 GPU cache is not the fp32 CPU teacher).
    parts = {"weights": _weights_digest(teacher_dir),
             "examples": hashlib.sha256("".join(e.example_id + _example_digest(e) for e in encoded).encode()).hexdigest(),
             "mode": mode, "storage": storage, "top_k": top_k if mode == "topk" else None}
    if compute_dtype != torch.float32:     # fp32 keeps the key of caches written before the dtype was keyed
        parts["compute_dtype"] = str(compute_dtype).removeprefix("torch.")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def build_cache(teacher, encoded: list[Encoded], *, pad_id: int, device: torch.device, batch_size: int,
                mode: str, storage: str, top_k: int | None, key: str, out_tensors: Path, out_meta: Path,
                progress: str | None = None) -> dict:
    """Run the teacher once over ``encoded`` and store its outputs at the response positions
    (``progress``: the name of a progress bar over the examples)."""
    if mode not in ("dense", "topk"):
        raise ValueError(f"cache mode must be dense or topk, got {mode!r}")
    teacher.to(device).eval()
    t0 = time.perf_counter()
    rows: dict[str, torch.Tensor] = {}
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    forward_passes = 0
    head = ResponseLM(teacher)
    for start in batch_starts(len(order), batch_size, progress):
        chunk = [encoded[i] for i in order[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        logits = head(batch["input_ids"], batch["attention_mask"], batch["labels"]).float()
        forward_passes += 1
        ends = (batch["labels"] != IGNORE_INDEX).sum(1).cumsum(0).tolist()
        for r, example in enumerate(chunk):
            values = logits[(ends[r - 1] if r else 0):ends[r]]
            if mode == "dense":
                rows[f"{example.example_id}"] = values.to(STORAGE_DTYPES[storage]).cpu().contiguous()
            else:
                logp = torch.log_softmax(values, dim=-1)
                top = logp.topk(top_k, dim=-1)
                rows[f"{example.example_id}.logp"] = top.values.to(STORAGE_DTYPES[storage]).cpu().contiguous()
                rows[f"{example.example_id}.idx"] = top.indices.to(torch.int32).cpu().contiguous()
    vocab = teacher.config.vocab_size
    meta = {"key": key, "mode": mode, "storage": storage, "top_k": top_k, "vocab_size": vocab,
            "n_examples": len(encoded), "forward_passes": forward_passes,
            "digests": {e.example_id: _example_digest(e) for e in encoded},
            "bytes": sum(t.numel() * t.element_size() for t in rows.values()),
            "build_s": time.perf_counter() - t0}
    save_file(rows, str(out_tensors), metadata={"key": key})
    return meta


def reconstruct_topk(logp: torch.Tensor, idx: torch.Tensor, vocab: int) -> torch.Tensor:
    """Full-vocabulary log-probabilities from top-k plus a uniform tail bucket."""
    logp = logp.float()
    tail_mass = (1.0 - logp.exp().sum(-1, keepdim=True)).clamp(min=1e-12)
    other = torch.log(tail_mass / max(1, vocab - logp.shape[-1]))
    full = other.expand(*logp.shape[:-1], vocab).clone()
    full.scatter_(-1, idx.long(), logp)
    return full


class CachedTeacher:
    """Drop-in for LiveTeacher that reads the cache; it makes no forward passes."""

    def __init__(self, tensors: Path, meta: dict[str, Any], expected_key: str):
        if meta["key"] != expected_key:
            raise ResultError(f"{tensors}: teacher cache key {meta['key'][:12]}… does not match the current teacher, "
                              f"tokenizer and data ({expected_key[:12]}…); re-run the teacher_cache rule")
        with unreadable_artifact(tensors, "teacher cache"):
            self.rows = load_file(str(tensors))
        self.meta = meta
        self.forward_passes = 0

    def response_logits(self, batch: dict[str, torch.Tensor], example_ids: list[str]) -> torch.Tensor:
        """[N, V] at the batch's response positions, in the order of ``logits[labels != -100]`` (the cache
        stores exactly those rows per example, so this is a concatenation; no padded B x L x V tensor)."""
        labels = batch["labels"]
        vocab = self.meta["vocab_size"]
        parts = []
        for r, example_id in enumerate(example_ids):
            n_positions = int((labels[r] != IGNORE_INDEX).sum())
            if self.meta["mode"] == "dense":
                values = self.rows[example_id].float()
            else:
                values = reconstruct_topk(self.rows[f"{example_id}.logp"], self.rows[f"{example_id}.idx"], vocab)
            if values.shape[0] != n_positions:
                raise ResultError(f"teacher cache row for '{example_id}' has {values.shape[0]} positions, the batch "
                                  f"has {n_positions}: the cache does not belong to this data")
            parts.append(values)
        return torch.cat(parts).to(labels.device)


def approximation_error(dense_logits: torch.Tensor, top_k: int) -> dict[str, float]:
    """KL(p_dense ‖ p_topk) and total variation per position, for reporting the top-k cache's cost."""
    logp = torch.log_softmax(dense_logits.float(), dim=-1)
    top = logp.topk(top_k, dim=-1)
    approx = reconstruct_topk(top.values, top.indices, logp.shape[-1])
    kl = (logp.exp() * (logp - approx)).sum(-1)
    tv = 0.5 * (logp.exp() - approx.exp()).abs().sum(-1)
    return {"top_k": top_k, "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "tv_mean": float(tv.mean()), "tv_max": float(tv.max())}
