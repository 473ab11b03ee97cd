"""CPD — Calibrated Progressive Distillation (Zhang & Liu, Findings of ACL 2026).

RE-IMPLEMENTATION FROM THE PAPER'S ABSTRACT: no code and no paper body are public; every assumption
below is a config knob (see README.md).

1. Difficulty profile d_i ≥ 0 per example (``difficulty``), sorted ascending d_(1) ≤ … ≤ d_(N).
2. Epoch e ∈ {0..E−1} trains on the easiest prefix of size n_e, where n_e is the smallest size whose
   mean difficulty reaches  target_e = m_0 + e/(E−1)·(m_N − m_0),  m_0 = mean of the first subset
   (the easiest ``start_fraction`` of the data), m_N = mean of all data. The mean difficulty of the
   subsets therefore rises by equal steps; the subset sizes follow the shape of the profile.
3. The distillation target mixes teacher and student: SRKL toward m = (1 − α_e)·p + α_e·q with the
   student share α_e and the temperature T_e moving with the progression
   π_e = (mean_e − m_0)/(m_N − m_0): α_e = α_start + π_e(α_end − α_start), T_e likewise.
   Early epochs are teacher-dominated (α ≈ 0), late ones student-informed.
"""

from dataclasses import dataclass, field

import numpy as np

from kdbench.difficulty import SIGNALS, normalised_difficulty
from kdbench.methods import EpochPlan, LossConfig, Method, Schedule, Stage, interpolate, scheduled_kd_loss

DIFFICULTY_KINDS = ("normalised_signals", "rrf_rank")


@dataclass
class CPDConfig(LossConfig):
    loss: str = "srkl"
    difficulty: str = "normalised_signals"
    signals: list[str] = field(default_factory=lambda: ["student_ce", "student_rouge_l"])
    rrf_k: int = 60
    start_fraction: float = 0.25
    alpha_start: float = 0.0
    alpha_end: float = 0.2
    temperature_start: float = 1.0
    temperature_end: float = 2.0
    kd_ratio: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.loss != "srkl":
            raise ValueError("CPD mixes the distillation target, which in the loss family is SRKL's "
                             f"second argument; loss must be 'srkl', got '{self.loss}'")
        if self.difficulty not in DIFFICULTY_KINDS:
            raise ValueError(f"difficulty '{self.difficulty}' is not one of {', '.join(DIFFICULTY_KINDS)}")
        if not 0.0 < self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in (0, 1], got {self.start_fraction}")
        for name in ("alpha_start", "alpha_end"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown or not self.signals:
            raise ValueError(f"signals {unknown or '[]'} not usable; choose from {', '.join(SIGNALS)}")


def difficulty_values(profile, config: CPDConfig) -> np.ndarray:
    """Per-example difficulty ≥ 0 (larger = harder) that keeps the profile's shape."""
    if config.difficulty == "rrf_rank":
        return normalised_difficulty(profile, config.signals, config.rrf_k).to_numpy()
    columns = []
    for signal in config.signals:
        values = profile[signal].to_numpy(dtype=np.float64)
        if SIGNALS[signal]:  # larger = easier: flip so that larger = harder
            values = -values
        span = values.max() - values.min()
        columns.append((values - values.min()) / span if span > 0 else np.zeros_like(values))
    return np.mean(columns, axis=0)


def epoch_subset_sizes(sorted_difficulty: np.ndarray, epochs: int, start_fraction: float) -> tuple[list[int], list[float]]:
    """Prefix sizes n_e whose mean difficulty rises by equal steps from the first subset to the full set."""
    n = len(sorted_difficulty)
    prefix_mean = np.cumsum(sorted_difficulty) / np.arange(1, n + 1)
    first = max(1, int(round(start_fraction * n)))
    m0, m_full = prefix_mean[first - 1], prefix_mean[-1]
    sizes, targets = [], []
    for e in range(epochs):
        target = m_full if epochs == 1 else interpolate(m0, m_full, e / (epochs - 1))
        # Prefix means of an ascending list never decrease, so the first size reaching the target is
        # found by binary search; the tolerance absorbs float round-off at the last epoch.
        size = int(np.searchsorted(prefix_mean[first - 1:], target - 1e-12, side="left")) + first
        sizes.append(min(max(size, first), n))
        targets.append(float(target))
    sizes[-1] = n
    return sizes, targets


class CPD(Method):
    config_class = CPDConfig
    needs_profile = True

    def hardness(self, profile):
        return difficulty_values(profile, self.config)

    def schedule(self, ctx):
        c = self.config
        values = self.hardness(ctx.difficulty.loc[list(ctx.example_ids)])
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        sizes, _ = epoch_subset_sizes(sorted_values, ctx.epochs, c.start_fraction)
        means = [float(sorted_values[:n].mean()) for n in sizes]
        spread = means[-1] - means[0]
        epochs = []
        for e, n in enumerate(sizes):
            progression = (means[e] - means[0]) / spread if spread > 0 else e / max(1, len(sizes) - 1)
            params = {"alpha": interpolate(c.alpha_start, c.alpha_end, progression),
                      "temperature": interpolate(c.temperature_start, c.temperature_end, progression),
                      "kd_ratio": c.kd_ratio, "mean_difficulty": means[e], "progression": progression}
            epochs.append(EpochPlan(tuple(int(i) for i in order[:n]), params))
        return Schedule((Stage("cpd", tuple(epochs)),))

    def loss(self, student_logits, teacher_logits, labels, step):
        return scheduled_kd_loss(self.config, student_logits, teacher_logits, labels, step.params)
