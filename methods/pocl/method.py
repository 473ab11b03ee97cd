"""POCL (Liu & Zhang, arXiv 2506.05695), following the official code liuliuyuan6/POCL@fa3fc6f.

Difficulty: reciprocal rank fusion (k = 60) of the pre-distillation student's Rouge-L rank
(descending) and CE rank (ascending). Schedule: S = 4 cumulative easy→hard stages (25/50/75/100 %),
each a separate run of ``epochs_per_stage`` epochs with the LR schedule restarted. Stage s uses
T_s = T_start + s·(T_end − T_start)/(S − 1) and kd_ratio w_s = w_start + s·(w_end − w_start)/(S − 1).
"""

from dataclasses import dataclass, field

from kdbench.difficulty import SIGNALS, fused_easiness
from kdbench.losses import POCL_RELEASED_T2
from kdbench.methods import LossConfig, Method, cumulative_curriculum, interpolate, scheduled_kd_loss

T2_POLICIES = ("pocl_released", "always", "never")


@dataclass
class PoclConfig(LossConfig):
    num_stages: int = 4
    epochs_per_stage: int | None = None      # None: budget-matched to the shared epoch budget
    temperature_start: float = 1.0
    temperature_end: float = 2.0
    kd_ratio_start: float = 0.7
    kd_ratio_end: float = 1.0
    rrf_k: int = 60
    signals: list[str] = field(default_factory=lambda: ["student_rouge_l", "student_ce"])
    t2_policy: str = "pocl_released"

    def validate(self) -> None:
        super().validate()
        if self.num_stages < 2:
            raise ValueError(f"num_stages must be at least 2, got {self.num_stages}")
        if self.t2_policy not in T2_POLICIES:
            raise ValueError(f"t2_policy '{self.t2_policy}' is not one of {', '.join(T2_POLICIES)}")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown or not self.signals:
            raise ValueError(f"signals {unknown or '[]'} not usable; choose from {', '.join(SIGNALS)}")


class Pocl(Method):
    config_class = PoclConfig
    needs_profile = True

    def stage_params(self, s: int) -> dict:
        c = self.config
        fraction = s / (c.num_stages - 1)
        return {"temperature": interpolate(c.temperature_start, c.temperature_end, fraction),
                "kd_ratio": interpolate(c.kd_ratio_start, c.kd_ratio_end, fraction)}

    def hardness(self, profile):
        return -fused_easiness(profile, self.config.signals, self.config.rrf_k)

    def schedule(self, ctx):
        return cumulative_curriculum(ctx, self.hardness(ctx.difficulty.loc[list(ctx.example_ids)]),
                                     self.config.num_stages, self.config.epochs_per_stage, self.stage_params)

    def scale_by_t2(self) -> bool:
        policy = self.config.t2_policy
        return POCL_RELEASED_T2[self.config.loss] if policy == "pocl_released" else policy == "always"

    def loss(self, student_logits, teacher_logits, labels, step):
        return scheduled_kd_loss(self.config, student_logits, teacher_logits, labels, step.params,
                                 scale_by_t2=self.scale_by_t2())
