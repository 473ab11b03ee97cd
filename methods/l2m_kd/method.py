"""L2M-KD — staged KD through least-to-most prompting (Zhang & Liu, Findings of EMNLP 2025).

RE-IMPLEMENTATION FROM THE PAPER'S ABSTRACT (no public code). Training examples are ranked by the
pre-distillation student's Rouge-L against the ground truth (high = easy) and split into cumulative
easy→hard stages; the KD loss moves from KLD to skew KLD over the stages:

    D_s = −Σ p log(α_s p + (1 − α_s) q)      (α_s = 0 is exactly the lineage's FKL)

with α_s following ``transition`` from ``alpha_start`` to ``alpha_end``. Ground-truth responses only.
"""

from dataclasses import dataclass

from kdbench.difficulty import SIGNALS, fused_easiness
from kdbench.methods import LossConfig, Method, cumulative_curriculum, interpolate, scheduled_kd_loss

TRANSITIONS = ("linear", "step")


@dataclass
class L2MKDConfig(LossConfig):
    loss: str = "sfkl"
    signal: str | list[str] = "student_rouge_l"   # a profile signal, or several fused by reciprocal rank
    num_stages: int = 4
    epochs_per_stage: int | None = None
    alpha_start: float = 0.0
    alpha_end: float = 0.1
    transition: str = "linear"
    kd_ratio: float = 1.0
    temperature: float = 1.0

    @property
    def signals(self) -> list[str]:
        return [self.signal] if isinstance(self.signal, str) else list(self.signal)

    def validate(self) -> None:
        super().validate()
        if self.loss != "sfkl":
            raise ValueError(f"L2M-KD moves from KLD to skew KLD, so loss must be 'sfkl', got '{self.loss}'")
        if self.num_stages < 2:
            raise ValueError(f"num_stages must be at least 2, got {self.num_stages}")
        for name in self.signals:
            if name not in SIGNALS:
                raise ValueError(f"signal '{name}' is not one of {', '.join(SIGNALS)}")
        if not self.signals:
            raise ValueError("signal must name at least one profile signal")
        if self.transition not in TRANSITIONS:
            raise ValueError(f"transition '{self.transition}' is not one of {', '.join(TRANSITIONS)}")
        for name in ("alpha_start", "alpha_end"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")


class L2MKD(Method):
    config_class = L2MKDConfig
    needs_profile = True

    def stage_params(self, s: int) -> dict:
        c = self.config
        if c.transition == "step":
            alpha = c.alpha_start if s == 0 else c.alpha_end
        else:
            alpha = interpolate(c.alpha_start, c.alpha_end, s / (c.num_stages - 1))
        return {"alpha": alpha, "temperature": c.temperature, "kd_ratio": c.kd_ratio}

    def hardness(self, profile):
        return -fused_easiness(profile, self.config.signals)

    def schedule(self, ctx):
        return cumulative_curriculum(ctx, self.hardness(ctx.difficulty.loc[list(ctx.example_ids)]),
                                     self.config.num_stages, self.config.epochs_per_stage, self.stage_params)

    def loss(self, student_logits, teacher_logits, labels, step):
        return scheduled_kd_loss(self.config, student_logits, teacher_logits, labels, step.params)
