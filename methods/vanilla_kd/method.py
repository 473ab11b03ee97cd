"""Vanilla white-box KD: every example every epoch, (1 - kd_ratio)·CE + kd_ratio·D(p_T, q_T)."""

from dataclasses import dataclass

from kdbench.methods import LossConfig, Method, kd_mixed_loss


@dataclass
class VanillaKDConfig(LossConfig):
    kd_ratio: float = 1.0
    temperature: float = 1.0


class VanillaKD(Method):
    config_class = VanillaKDConfig

    def loss(self, student_logits, teacher_logits, labels, step):
        return kd_mixed_loss(self.config, student_logits, teacher_logits, labels,
                             kd_ratio=self.config.kd_ratio, temperature=self.config.temperature)
