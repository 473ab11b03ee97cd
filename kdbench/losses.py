"""Token-level white-box KD losses of the MiniLLM -> DistiLLM -> POCL / TAID lineage.

Every formula lives in :func:`per_token_divergence`; the loss functions returned by
:func:`get_loss` only reduce it over the response tokens.

Conventions (docs/protocol.md sections 1.3, 4, 5):

* logits are ``[B, L, V]`` and already aligned (position i predicts token i+1);
* ``p`` is the teacher softmax, ``q`` the student softmax, both at temperature T
  (both logits divided by T), computed in float32 whatever the input dtype;
* per-token values are summed over the vocabulary, then averaged over all masked
  (response) tokens of the batch, flattened, as the lineage does with
  ``sum(x * mask) / sum(mask)``;
* vocabulary entries whose logit is infinite in either model contribute nothing (the
  lineage's ``inf_mask``). With ``-inf`` at the same entries in both models this is
  exact; where only one model has ``-inf`` the term the lineage drops would be
  infinite (e.g. RKL), and we drop it the same way. ``+inf`` logits are not supported
  (the softmax itself is undefined).

Deliberate differences from the released code, none of which changes a value beyond
rounding: logits are cast to float32 *before* the division by T (the lineage divides
in the model dtype, so an fp16 teacher is rounded once more there), and mixtures are
formed in log space (``logaddexp``) instead of ``log(a*p + b*q)``, so they stay finite
when both probabilities underflow.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from kdbench.errors import ConfigError

LOSS_NAMES = ("fkl", "rkl", "jsd", "tvd", "sfkl", "srkl")
TAID = "taid"
_ACCEPTED = LOSS_NAMES + (TAID,)

# Whether POCL's released ``tem_*`` losses (pocl/losses.py) multiply by T^2. The
# choice is inconsistent across losses (docs/protocol.md section 1.3), so a method that
# reproduces POCL passes ``scale_by_t2=POCL_RELEASED_T2[name]``. The released
# ``tem_tv_distance`` crashes (undefined names); it would not have scaled.
POCL_RELEASED_T2 = {
    "fkl": True,
    "rkl": False,
    "jsd": True,
    "tvd": False,
    "sfkl": False,
    "srkl": True,
}


def _check_name(name: str) -> None:
    if name not in _ACCEPTED:
        raise ConfigError(
            f"unknown KD loss {name!r}; allowed: {', '.join(_ACCEPTED)}")


def _check_unit_interval(label: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{label} must be in [0, 1], got {value}")
    return value


def _check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return temperature


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 3:
        raise ValueError(
            f"logits must be [B, L, V], got student shape {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape (vocabularies must be aligned)")


def _log_mix(w: float, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log(w*a + (1-w)*b) from log a and log b, without leaving log space."""
    # Endpoints short-circuit because log(0) = -inf would otherwise enter the graph.
    if w == 1.0:
        return log_a
    if w == 0.0:
        return log_b
    return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w))


def _t2_factor(temperature: float, scale_by_t2: bool) -> float:
    return temperature * temperature if scale_by_t2 else 1.0


def per_token_divergence(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    scale_by_t2: bool = False,
    skew_alpha: float = 0.1,
    jsd_beta: float = 0.1,
    t: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Unreduced loss ``[B, L]`` (float32): the vocabulary sum at every position.

    With p = softmax(z_teacher / T), q = softmax(z_student / T), a = skew_alpha,
    b = jsd_beta, and terms at infinite logits dropped:

    * ``fkl``:  -sum p log q. Cross-entropy form, as in the lineage: it equals
      KL(p||q) + H(p), so it is H(p), not 0, when q == p; the gradient is KL's.
    * ``rkl``:  sum q (log q - log p) = KL(q||p).
    * ``jsd``:  m = b p + (1-b) q; (1-b) KL(q||m) + b KL(p||m). Generalised JSD; the
      lineage's ``js_distance(lam=0.9)`` is b = 0.1 (GKD's beta = 0.1), not the
      symmetric 0.5/0.5 JSD.
    * ``tvd``:  0.5 sum |p - q|.
    * ``sfkl``: -sum p log(a p + (1-a) q). Cross-entropy form of DistiLLM's skew KL
      KL(p || a p + (1-a) q), larger by H(p).
    * ``srkl``: sum q (log q - log((1-a) p + a q)) = KL(q || (1-a) p + a q).
    * ``taid``: p_t = softmax((1-t) stopgrad(z_student) + t z_teacher) (logit space);
      -sum p_t log q with T = 1. TAID has no temperature: ``temperature`` must be 1.

    ``scale_by_t2`` multiplies the result by T^2 (see :data:`POCL_RELEASED_T2`).
    Gradients reach the student only: the teacher logits are detached here.
    """
    _check_name(name)
    _check_logits(student_logits, teacher_logits)
    temperature = _check_temperature(temperature)

    z_s = student_logits.float()
    z_t = teacher_logits.detach().float()
    # Either model's infinite logit removes the term: log-probs there are -inf, and
    # products such as 0 * -inf would poison values and gradients.
    inf_mask = torch.isinf(z_s) | torch.isinf(z_t)

    def finite(x: torch.Tensor) -> torch.Tensor:
        # Replacing -inf *before* it meets another op keeps the backward pass finite
        # as well (masking only the result would still leave 0 * nan in the gradient).
        return torch.where(inf_mask, torch.zeros((), dtype=x.dtype), x)

    def vocab_sum(terms: torch.Tensor) -> torch.Tensor:
        return finite(terms).sum(dim=-1)

    if name == TAID:
        if temperature != 1.0:
            raise ValueError(f"TAID uses no temperature; got temperature={temperature}")
        if t is None:
            raise ValueError("TAID needs the interpolation parameter t")
        t = _check_unit_interval("TAID t", t)
        target_logits = (1.0 - t) * finite(z_s.detach()) + t * finite(z_t)
        target_logits = target_logits.masked_fill(inf_mask, float("-inf"))
        p_t = F.softmax(target_logits, dim=-1)
        log_q = F.log_softmax(z_s, dim=-1)
        return -vocab_sum(p_t * finite(log_q))

    log_p = finite(F.log_softmax(z_t / temperature, dim=-1))
    log_q = finite(F.log_softmax(z_s / temperature, dim=-1))
    p, q = log_p.exp(), log_q.exp()

    if name == "fkl":
        value = -vocab_sum(p * log_q)
    elif name == "rkl":
        value = vocab_sum(q * (log_q - log_p))
    elif name == "jsd":
        b = _check_unit_interval("jsd_beta", jsd_beta)
        log_m = _log_mix(b, log_p, log_q)
        value = (1.0 - b) * vocab_sum(q * (log_q - log_m)) + b * vocab_sum(p * (log_p - log_m))
    elif name == "tvd":
        value = 0.5 * vocab_sum((p - q).abs())
    elif name == "sfkl":
        a = _check_unit_interval("skew_alpha", skew_alpha)
        value = -vocab_sum(p * _log_mix(a, log_p, log_q))
    else:  # srkl
        a = _check_unit_interval("skew_alpha", skew_alpha)
        value = vocab_sum(q * (log_q - _log_mix(1.0 - a, log_p, log_q)))
    return value * _t2_factor(temperature, scale_by_t2)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` [B, L] over masked positions / number of masked positions.

    An empty mask gives 0 that still carries a graph, so ``backward()`` works on it.
    """
    if mask.shape != values.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match the token grid {tuple(values.shape)}")
    keep = mask != 0
    # where(), not values * mask: a masked position holding inf/nan must not leak.
    total = torch.where(keep, values, torch.zeros((), dtype=values.dtype)).sum()
    count = keep.sum().clamp_min(1).to(values.dtype)
    return total / count


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The reduced loss ``fn(student_logits, teacher_logits, mask, **params) -> scalar``.

    For the six divergences the parameters are ``temperature=1.0, scale_by_t2=False,
    skew_alpha=0.1, jsd_beta=0.1``; for ``"taid"`` it is the required ``t`` in [0, 1]
    (``temperature`` is accepted only when it is 1). Other keyword arguments are
    ignored, so a caller may pass a whole parameter set.
    """
    _check_name(name)

    if name == TAID:
        def taid_loss(student_logits, teacher_logits, mask, *, t, temperature=1.0, **unused):
            per_token = per_token_divergence(
                TAID, student_logits, teacher_logits, temperature=temperature, t=t)
            return masked_token_mean(per_token, mask)

        taid_loss.__name__ = "taid_loss"
        return taid_loss

    def loss(student_logits, teacher_logits, mask, *, temperature=1.0, scale_by_t2=False,
             skew_alpha=0.1, jsd_beta=0.1, **unused):
        per_token = per_token_divergence(
            name, student_logits, teacher_logits, temperature=temperature,
            skew_alpha=skew_alpha, jsd_beta=jsd_beta)
        # T^2 applied after the reduction so the scaled loss is bitwise T^2 times the unscaled.
        return masked_token_mean(per_token, mask) * _t2_factor(temperature, scale_by_t2)

    loss.__name__ = f"{name}_loss"
    return loss


def token_ce(student_logits: torch.Tensor, labels: torch.Tensor,
             ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy (float32) over positions where ``labels != ignore_index``.

    ``labels`` is ``[B, L]`` and aligned with the logits like the KD losses. No masked
    positions gives 0 with a graph (``F.cross_entropy``'s mean would give nan).
    """
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, L, V] and labels [B, L], got {tuple(student_logits.shape)} "
            f"and {tuple(labels.shape)}")
    keep = labels != ignore_index
    nll = F.cross_entropy(
        student_logits.float().flatten(0, 1), labels.flatten(),
        ignore_index=ignore_index, reduction="none").view_as(labels)
    return masked_token_mean(nll, keep)


def mix_with_ce(ce: torch.Tensor, kd: torch.Tensor, kd_ratio: float) -> torch.Tensor:
    """``(1 - kd_ratio) * ce + kd_ratio * kd`` (``finetune.py`` of the lineage)."""
    kd_ratio = _check_unit_interval("kd_ratio", kd_ratio)
    return (1.0 - kd_ratio) * ce + kd_ratio * kd
