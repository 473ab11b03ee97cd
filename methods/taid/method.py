"""TAID — Temporally Adaptive Interpolated Distillation (Shing et al., ICLR 2025), following the
official code SakanaAI/TAID@a062892 (src/distil_losses/taid.py).

Target p_t = softmax((1 − t)·stopgrad(z_s) + t·z_T), loss = −Σ p_t log q (averaged over response
tokens). After every optimiser step, with the step's distillation loss J_n
(``step`` = optimiser steps done before it, as Lightning's global_step):
    δ_n = (J_{n−1} − J_n)/(J_{n−1} + 1e−15);  m_n = β m_{n−1} + (1 − β) δ_n
    t_lin = t_start + (t_end − t_start)·step/total_steps
    t ← min(t_end, max(t_lin, t + α·sigmoid(m_n)·(1 − t)))
The first step only records J_0.
"""

import math
from dataclasses import dataclass

from kdbench.losses import get_loss, mix_with_ce, token_ce
from kdbench.methods import Method


@dataclass
class TAIDConfig:
    t_start: float = 0.4
    t_end: float = 1.0
    alpha: float = 5e-4
    beta: float = 0.99
    disable_adaptive: bool = False
    kd_ratio: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.t_start <= self.t_end <= 1.0:
            raise ValueError(f"need 0 <= t_start <= t_end <= 1, got {self.t_start}, {self.t_end}")
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")


class TAID(Method):
    config_class = TAIDConfig

    def __init__(self, config):
        super().__init__(config)
        self.t = config.t_start
        self.prev_loss = math.inf
        self.momentum = 0.0
        self.adaptive_steps = 0      # steps at which the adaptive increment, not the linear floor, set t

    def loss(self, student_logits, teacher_logits, labels, step):
        mask = labels != -100
        kd = get_loss("taid")(student_logits, teacher_logits, mask, t=self.t)
        ce = token_ce(student_logits, labels)
        total = mix_with_ce(ce, kd, self.config.kd_ratio)
        return total, {"ce": float(ce.detach()), "kd": float(kd.detach()), "t": self.t}

    def linear_t(self, step: int, total_steps: int) -> float:
        c = self.config
        return c.t_start + (c.t_end - c.t_start) * (step / max(1, total_steps))

    def after_step(self, loss_value, step, logged):
        c = self.config
        kd_loss = logged["kd"]  # the reference updates t from the distillation loss, not the CE-mixed total
        if math.isinf(self.prev_loss):
            self.prev_loss = kd_loss
            return
        delta = (self.prev_loss - kd_loss) / (self.prev_loss + 1e-15)
        self.momentum = c.beta * self.momentum + (1 - c.beta) * delta
        linear = self.linear_t(step.step, step.total_steps)
        if c.disable_adaptive:
            self.t = linear
        else:
            adaptive = self.t + c.alpha * (1.0 / (1.0 + math.exp(-self.momentum))) * (1 - self.t)
            self.adaptive_steps += int(adaptive > linear and self.t < c.t_end)
            self.t = min(c.t_end, max(linear, adaptive))
        self.prev_loss = kd_loss

    def trace(self):
        return {"t": self.t, "momentum": self.momentum, "adaptive_steps": self.adaptive_steps}

    def state_dict(self):
        return {"t": self.t, "prev_loss": self.prev_loss, "momentum": self.momentum,
                "adaptive_steps": self.adaptive_steps}

    def load_state_dict(self, state):
        self.t, self.prev_loss, self.momentum = state["t"], state["prev_loss"], state["momentum"]
        self.adaptive_steps = state.get("adaptive_steps", 0)
