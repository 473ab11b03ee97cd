"""Difficulty signals, computed once per (student init, teacher, training data) and shared by methods.

Signals per training example (POCL §1.1 of reference/methods.md):
  student_ce       mean token CE of the pre-distillation student on the reference response
  student_rouge_l  Rouge-L of the student's greedy generation against the reference (x100)
  teacher_ce       mean token CE of the teacher on the reference response
Ranks are 1 = easiest. Reciprocal rank fusion: score = sum_r 1 / (rank_r + k), higher = easier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from kdbench.batching import IGNORE_INDEX, Encoded, collate
from kdbench.models import ResponseLM
from kdbench.progress import batch_starts

if TYPE_CHECKING:   # pandas is imported where a frame is built: every distillation job imports this module
    import pandas as pd

SIGNALS = {  # signal -> True when a larger value means an easier example
    "student_ce": False,
    "student_rouge_l": True,
    "teacher_ce": False,
}


@torch.no_grad()
def sequence_ce(model, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int,
                device: torch.device, progress: str | None = None) -> np.ndarray:
    """Mean next-token cross-entropy over each example's response tokens (``progress``: a bar's name)."""
    model.to(device).eval()
    values = np.zeros(len(encoded), dtype=np.float64)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    head = ResponseLM(model)
    for start in batch_starts(len(order), batch_size, progress):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
        labels = batch["labels"]
        keep = labels != IGNORE_INDEX
        logits = head(batch["input_ids"], batch["attention_mask"], labels).float()
        token_loss = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="none")
        # Sum each example's response tokens back into its row, then average (no response: 0).
        example_of_token = keep.nonzero()[:, 0]
        totals = torch.zeros(len(rows), dtype=torch.float64, device=logits.device)
        totals.index_add_(0, example_of_token, token_loss.double())
        values[rows] = (totals / keep.sum(1).clamp(min=1)).cpu().numpy()
    return values


def ranks(values: Sequence[float], larger_is_easier: bool) -> np.ndarray:
    """Ordinal ranks, 1 = easiest; ties keep dataset order (a stable sort, as POCL's pandas sort)."""
    values = np.asarray(values, dtype=np.float64)
    key = -values if larger_is_easier else values
    order = np.argsort(key, kind="stable")
    out = np.empty(len(values), dtype=np.int64)
    out[order] = np.arange(1, len(values) + 1)
    return out


def reciprocal_rank_fusion(rank_lists: Sequence[np.ndarray], k: int = 60) -> np.ndarray:
    """Higher score = easier (every input rank has 1 = easiest)."""
    return np.sum([1.0 / (np.asarray(r, dtype=np.float64) + k) for r in rank_lists], axis=0)


def easy_to_hard(profile: pd.DataFrame, signals: Sequence[str], rrf_k: int = 60) -> list[str]:
    """Example ids from easiest to hardest by RRF over ``signals`` (one signal = its own ranking)."""
    rank_lists = [ranks(profile[s].to_numpy(), SIGNALS[s]) for s in signals]
    score = reciprocal_rank_fusion(rank_lists, rrf_k)
    order = np.argsort(-score, kind="stable")
    return [profile.index[i] for i in order]


def normalised_difficulty(profile: pd.DataFrame, signals: Sequence[str], rrf_k: int = 60) -> pd.Series:
    """Difficulty in [0, 1] (0 = easiest) from the fused ranking, indexed by example id."""
    import pandas as pd

    ordered = easy_to_hard(profile, signals, rrf_k)
    n = len(ordered)
    return pd.Series(np.arange(n) / max(1, n - 1), index=ordered, name="difficulty").reindex(profile.index)


def signal_quality(profile: pd.DataFrame, rrf_k: int = 60) -> pd.DataFrame:
    """Spearman correlation of each signal's difficulty ranking with the ground-truth level."""
    import pandas as pd
    from scipy.stats import spearmanr

    if "true_difficulty" not in profile.columns:
        return pd.DataFrame(columns=["signal", "spearman", "n"])
    truth = profile["true_difficulty"].to_numpy()
    rows = []
    candidates = {s: [s] for s in SIGNALS if s in profile.columns}
    candidates["rrf(student_ce, student_rouge_l)"] = ["student_ce", "student_rouge_l"]
    for label, signals in candidates.items():
        hardness = normalised_difficulty(profile, signals, rrf_k).to_numpy()
        rho = spearmanr(hardness, truth).statistic
        rows.append({"signal": label, "spearman": float(rho), "n": len(truth)})
    return pd.DataFrame(rows)
