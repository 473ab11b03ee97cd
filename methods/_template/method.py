"""__DISPLAY__ — one paragraph on what the method changes in the shared loop, with the source.

Hooks (see kdbench/methods.py): ``schedule`` (which examples each epoch sees), ``loss`` (per step),
``after_step`` (per-step state), ``state_dict``/``load_state_dict`` (resume), ``trace`` (plots).
"""

from dataclasses import dataclass

from kdbench.methods import LossConfig, Method, full_data_schedule, kd_mixed_loss


@dataclass
class __CLASS__Config(LossConfig):
    kd_ratio: float = 1.0
    temperature: float = 1.0


class __CLASS__(Method):
    config_class = __CLASS__Config
    needs_profile = False  # True to receive the shared difficulty profile in ctx.difficulty

    def schedule(self, ctx):
        return full_data_schedule(ctx)

    def loss(self, student_logits, teacher_logits, labels, step):
        return kd_mixed_loss(self.config, student_logits, teacher_logits, labels,
                             kd_ratio=self.config.kd_ratio, temperature=self.config.temperature)
