"""Difficulty signals, computed once per (student init, teacher, training data) and shared by methods.

Signals per training example; ``larger is easier`` says which way each one points:

=========================  =====  ==========================================================================
signal                     easy↑  meaning
=========================  =====  ==========================================================================
student_ce                 no     POCL: mean token cross-entropy of the pre-distillation student on the reference
student_rouge_l            yes    POCL: Rouge-L (×100) of the student's greedy output against the reference
teacher_ce                 no     mean token cross-entropy of the teacher on the reference
student_nll_sum            no     extra: summed (not averaged) negative log-likelihood of the reference
teacher_student_kl         no     extra: mean per-token KL(p_teacher ‖ q_student) on the reference response
student_rouge_l_sampled    yes    extra: Rouge-L of the student's samples (T = 1), averaged over several draws
=========================  =====  ==========================================================================

The POCL signals (Liu & Zhang 2025, arXiv:2506.05695) are what POCL, CPD and L2M-KD rank by; the extra
ones are what a researcher would try next, labelled as such in the difficulty table. Ranks are 1 = easiest,
ties get their average rank; reciprocal rank fusion (RRF): score = Σ_r 1 / (rank_r + k), higher = easier.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kdbench.batching import IGNORE_INDEX, Encoded, collate
from kdbench.models import ResponseLM
from kdbench.progress import batch_starts

SIGNALS = {  # signal -> True when a larger value means an easier example
    "student_ce": False,
    "student_rouge_l": True,
    "teacher_ce": False,
    "student_nll_sum": False,
    "teacher_student_kl": False,
    "student_rouge_l_sampled": True,
}
POCL_SIGNALS = ("student_ce", "student_rouge_l")
EXTRA_SIGNALS = ("student_nll_sum", "teacher_student_kl", "student_rouge_l_sampled")
# A signal whose most common value covers more than this share of the examples cannot rank them:
# the difficulty table flags it as degenerate instead of giving it a correlation.
DEGENERATE_SHARE = 0.2


@torch.no_grad()
def response_statistics(student, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int,
                        device: torch.device, teacher=None, progress: str | None = None) -> dict[str, np.ndarray]:
    """Per example, over its response tokens: the student's mean and summed NLL of the reference, and
    with a teacher its mean NLL and the mean token KL(p_teacher ‖ q_student). One pass, both models
    (``progress``: a progress bar's name, kdbench.progress)."""
    models = {"student": ResponseLM(student.to(device).eval())}
    if teacher is not None:
        models["teacher"] = ResponseLM(teacher.to(device).eval())
    n = len(encoded)
    out = {key: np.zeros(n, dtype=np.float64) for key in ("student_ce", "student_nll_sum")}
    if teacher is not None:
        out.update(teacher_ce=np.zeros(n), teacher_student_kl=np.zeros(n))
    order = sorted(range(n), key=lambda i: -len(encoded[i].input_ids))
    for start in batch_starts(n, batch_size, progress):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in rows], pad_id).items()}
        keep = batch["labels"] != IGNORE_INDEX
        targets = batch["labels"][keep]
        example_of_token = keep.nonzero()[:, 0]
        counts = keep.sum(1).clamp(min=1).double()

        def per_example(token_values: torch.Tensor) -> torch.Tensor:
            totals = torch.zeros(len(rows), dtype=torch.float64, device=token_values.device)
            return totals.index_add_(0, example_of_token, token_values.double())

        log_q = torch.log_softmax(models["student"](batch["input_ids"], batch["attention_mask"], batch["labels"]).float(), -1)
        nll = per_example(-log_q.gather(1, targets[:, None])[:, 0])
        out["student_nll_sum"][rows] = nll.cpu().numpy()
        out["student_ce"][rows] = (nll / counts).cpu().numpy()
        if teacher is not None:
            log_p = torch.log_softmax(models["teacher"](batch["input_ids"], batch["attention_mask"], batch["labels"]).float(), -1)
            out["teacher_ce"][rows] = (per_example(-log_p.gather(1, targets[:, None])[:, 0]) / counts).cpu().numpy()
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            out["teacher_student_kl"][rows] = (per_example(kl) / counts).cpu().numpy()
    return out


def sequence_ce(model, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int,
                device: torch.device, progress: str | None = None) -> np.ndarray:
    """Mean next-token cross-entropy over each example's response tokens."""
    return response_statistics(model, encoded, pad_id=pad_id, batch_size=batch_size, device=device,
                               progress=progress)["student_ce"]


def ranks(values: Sequence[float], larger_is_easier: bool) -> np.ndarray:
    """Ranks with 1 = easiest; tied values share their average rank (so a tie carries no order)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    return rankdata(-values if larger_is_easier else values, method="average")


def reciprocal_rank_fusion(rank_lists: Sequence[np.ndarray], k: int = 60) -> np.ndarray:
    """Higher score = easier (every input rank has 1 = easiest)."""
    return np.sum([1.0 / (np.asarray(r, dtype=np.float64) + k) for r in rank_lists], axis=0)


def fused_easiness(profile, signals: Sequence[str], rrf_k: int = 60) -> np.ndarray:
    """RRF score per example (higher = easier) over ``signals``; one signal gives its own ranking."""
    return reciprocal_rank_fusion([ranks(profile[s].to_numpy(), SIGNALS[s]) for s in signals], rrf_k)


def easy_to_hard(profile, signals: Sequence[str], rrf_k: int = 60) -> list[str]:
    """Example ids from easiest to hardest by RRF over ``signals``; equal scores keep dataset order."""
    order = np.argsort(-fused_easiness(profile, signals, rrf_k), kind="stable")
    return [profile.index[i] for i in order]


def normalised_difficulty(profile, signals: Sequence[str], rrf_k: int = 60):
    """Difficulty in [0, 1] (0 = easiest) from the fused ranking, indexed by example id."""
    import pandas as pd

    ordered = easy_to_hard(profile, signals, rrf_k)
    n = len(ordered)
    return pd.Series(np.arange(n) / max(1, n - 1), index=ordered, name="difficulty").reindex(profile.index)


def constant_share(values: Sequence[float]) -> float:
    """Share of the examples at the most common value (rounded to 1e-9): 1/n for a continuous signal."""
    values = np.round(np.asarray(values, dtype=np.float64), 9)
    if len(values) == 0:
        return float("nan")
    _, counts = np.unique(values, return_counts=True)
    return float(counts.max() / len(values))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def ranking_quality(hardness: np.ndarray, truth: np.ndarray, family: np.ndarray | None) -> dict[str, float]:
    """How well a hardness score (larger = harder) ranks the ground-truth level: Spearman ρ over all
    examples, the mean of the per-family ρ, and the share at the modal value (degenerate above 0.2)."""
    share = constant_share(hardness)
    within = float("nan")
    if family is not None:
        rhos = [_spearman(hardness[family == f], truth[family == f]) for f in np.unique(family)]
        rhos = [r for r in rhos if not np.isnan(r)]
        within = float(np.mean(rhos)) if rhos else float("nan")
    return {"spearman": _spearman(hardness, truth), "spearman_within_family": within, "constant_share": share,
            "degenerate": bool(share > DEGENERATE_SHARE), "n": int(len(hardness))}
