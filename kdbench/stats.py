"""Statistics behind the paper tables: the paired, seed-resampling bootstrap test and Holm's correction.

A comparison of two runs is paired twice over: both were trained with the same training seeds (same
student init and data order per seed) and decoded on the same prompts with the same eval seeds. The
unit of evidence is the per-example difference averaged over eval seeds, one row per training seed:
``d[s, i]``. The hierarchical bootstrap resamples training seeds with replacement, then examples with
replacement within each drawn seed, so the spread of its replicates contains the seed-to-seed variance
that a retrained model would show, not only the prompt and sampling noise. docs/statistics.md.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

BOOTSTRAP_SEED = 20250101            # fixed part of every bootstrap RNG seed: the tables are deterministic


def bootstrap_rng(*parts: str) -> np.random.Generator:
    """A generator seeded from the compared runs and the eval set only: deterministic, order-independent."""
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32("|".join(parts).encode("utf-8"))])


def hierarchical_bootstrap(diffs: np.ndarray, samples: int, rng: np.random.Generator,
                           seed_draws: np.ndarray | None = None) -> np.ndarray:
    """Means of ``samples`` two-level resamples of ``diffs`` ([training seeds, examples]): the seeds with
    replacement, then the examples with replacement within each drawn seed.

    ``seed_draws`` ([samples, seeds] indices) lets several eval sets share the same seed resamples, as
    they share the trained models; by default they are drawn here. With one training seed this is the
    ordinary paired bootstrap over examples."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=np.float64))
    n_seeds, n = diffs.shape
    if seed_draws is None:
        seed_draws = rng.integers(0, n_seeds, size=(samples, n_seeds))
    out = np.empty(samples, dtype=np.float64)
    chunk = max(1, 4_000_000 // max(1, n_seeds * n))         # bounds memory for large eval sets
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        examples = rng.integers(0, n, size=(size, n_seeds, n))
        picked = diffs[seed_draws[start:start + size, :, None], examples]
        out[start:start + size] = picked.mean(axis=(1, 2))
    return out


def seed_draws(n_seeds: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_seeds, size=(samples, n_seeds))


def bootstrap_p_value(boot: np.ndarray, delta: float) -> float:
    """Two-sided p for H0: mean difference 0, from the bootstrap distribution shifted to the null
    (|δ* − δ| ≥ |δ|), with the +1 correction so that p is never 0."""
    extreme = np.count_nonzero(np.abs(boot - delta) >= abs(delta) - 1e-12)
    return float((1 + extreme) / (len(boot) + 1))


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (NaN stays NaN)."""
    valid = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    adjusted = [float("nan")] * len(p_values)
    running, m = 0.0, len(valid)
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def mean_sd(values) -> tuple[float, float, int]:
    """Mean, sample sd (ddof 1; 0 for a single value) and count."""
    values = np.asarray(list(values), dtype=np.float64)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std(ddof=1)) if n > 1 else 0.0, n
