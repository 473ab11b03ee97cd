"""The one training loop. Every method — SFT, vanilla KD, POCL, CPD, L2M-KD, TAID — runs through
``train``; they differ only through the hooks of :class:`kdbench.methods.Method` (which examples each
epoch sees, the loss at each step, per-step state). Runtime comparisons are fair by construction.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdbench.accounting import GpuClock, peak_rss_mb
from kdbench.batching import IGNORE_INDEX, Encoded, collate
from kdbench.config import TrainConfig  # noqa: F401  (re-exported: the loop's settings)
from kdbench.errors import TrainingError
from kdbench.integrity import set_aside, short
from kdbench.methods import Method, Schedule, ScheduleContext, StepInfo
from kdbench.models import PRECISIONS, ResponseLM
from kdbench.progress import bar


# --------------------------------------------------------------------------- teacher
class LiveTeacher:
    """Runs the teacher forward on each batch (eval mode, no grad)."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self.model = model.to(device=device, dtype=dtype).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.head = ResponseLM(self.model)
        self.forward_passes = 0

    @torch.no_grad()
    def response_logits(self, batch: dict[str, torch.Tensor], example_ids: list[str]) -> torch.Tensor:
        """[N, V] at the batch's response positions, in the order of ``logits[labels != -100]``."""
        self.forward_passes += 1
        return self.head(batch["input_ids"], batch["attention_mask"], batch["labels"])


# --------------------------------------------------------------------------- helpers
def epoch_order(indices: tuple[int, ...], seed: int, epoch: int) -> list[int]:
    """A permutation of one epoch's examples that depends only on (seed, epoch)."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(indices)
    rng.shuffle(order)
    return order


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr_min / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: TrainConfig, total_steps: int):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total_steps))
    return optimizer, scheduler


def check_schedule(schedule: Schedule, n_examples: int) -> None:
    if not schedule.stages or not schedule.epochs:
        raise TrainingError("the method's schedule has no epochs")
    for plan in schedule.epochs:
        if not plan.indices:
            raise TrainingError("the method's schedule has an empty epoch")
        bad = [i for i in plan.indices if not 0 <= i < n_examples]
        if bad:
            raise TrainingError(f"the method's schedule refers to example positions {bad[:5]} outside 0..{n_examples - 1}")


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the loop
def train(student, method: Method, encoded: list[Encoded], ctx: ScheduleContext, cfg: TrainConfig, *,
          pad_id: int, seed: int, device: torch.device, teacher=None, checkpoint_dir: str | Path | None = None,
          log: Callable[[str], None] = print, checkpoint_identity: dict | None = None,
          progress: str | None = None) -> dict[str, Any]:
    """Train ``student`` in place following ``method``; returns the training metrics.

    Under ``torchrun`` (an initialised process group) each global batch is split into contiguous
    per-rank slices and the student is wrapped in DistributedDataParallel: the same global batch
    gives the same optimisation whatever the number of processes (gradient accumulation makes up
    the difference), so a 2-process run matches a 1-process run with twice the accumulation.

    ``checkpoint_identity`` (the job's run id and input digests, kdbench.integrity.checkpoint_identity)
    is stored in every checkpoint; a checkpoint written for another identity is set aside, never resumed.
    ``progress`` names a progress bar over the optimiser steps (rank 0, stderr); None shows none."""
    world_size, rank = distributed_context()
    if method.needs_teacher and teacher is None:
        raise TrainingError(f"{type(method).__name__} needs a teacher but none was given")
    schedule = method.schedule(ctx)
    check_schedule(schedule, len(encoded))
    accumulation = cfg.accumulation_steps(world_size)
    batches_per_epoch = [math.ceil(len(p.indices) / cfg.global_batch_size) for p in schedule.epochs]
    stage_steps = []
    epoch_cursor = 0
    for stage in schedule.stages:
        stage_steps.append(sum(batches_per_epoch[epoch_cursor:epoch_cursor + len(stage.epochs)]))
        epoch_cursor += len(stage.epochs)
    total_steps = sum(stage_steps)
    autocast_dtype = PRECISIONS[cfg.precision]
    use_autocast = autocast_dtype != torch.float32
    # Loss scaling only for fp16; a disabled scaler passes every call straight through.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    student.to(device).train()
    model = ResponseLM(student)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(seed)
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    resume = load_checkpoint(ckpt_path, checkpoint_identity, log, rank == 0) if ckpt_path else None

    history: list[dict[str, Any]] = []
    trace: list[dict[str, Any]] = []
    step = 0
    counters = {"examples": 0, "tokens": 0, "response_tokens": 0, "teacher_forward_passes": 0}
    elapsed_before = 0.0
    stage_wall: list[float] = [0.0] * len(schedule.stages)
    start_epoch, start_batch = 0, 0
    optimizer = scheduler = None
    if resume is not None:
        student.load_state_dict(resume["model"])
        method.load_state_dict(resume["method"])
        step, start_epoch, start_batch = resume["step"], resume["epoch"], resume["batch"]
        history, trace, counters = resume["history"], resume["trace"], resume["counters"]
        elapsed_before, stage_wall = resume["elapsed"], resume["stage_wall"]
        log(f"resuming from {resume['loaded_from']} at step {step} (epoch {start_epoch}, batch {start_batch})")

    steps_bar = bar(total_steps, progress, unit="step", initial=step, disable=rank != 0)
    gpu_clock = GpuClock(device).start()
    t0 = time.perf_counter()
    global_epoch = 0
    for stage_index, stage in enumerate(schedule.stages):
        stage_t0 = time.perf_counter()
        if optimizer is None or schedule.restart_optimizer_per_stage:
            span = stage_steps[stage_index] if schedule.restart_optimizer_per_stage else total_steps
            optimizer, scheduler = make_optimizer(student, cfg, span)
        for plan in stage.epochs:
            if global_epoch < start_epoch:
                global_epoch += 1
                continue
            order = epoch_order(plan.indices, seed, global_epoch)
            batches = [order[i:i + cfg.global_batch_size] for i in range(0, len(order), cfg.global_batch_size)]
            first_batch = start_batch if global_epoch == start_epoch else 0
            if resume is not None and global_epoch == start_epoch:
                # A checkpoint taken at a stage boundary holds the finished stage's optimiser,
                # which a restarting schedule must not carry into the next stage.
                if not schedule.restart_optimizer_per_stage or resume["optimizer_stage"] == stage_index:
                    optimizer.load_state_dict(resume["optimizer"])
                    scheduler.load_state_dict(resume["scheduler"])
                    if scaler.is_enabled() and resume.get("scaler"):
                        scaler.load_state_dict(resume["scaler"])
                _set_rng_state(resume["rng"])
                resume = None
            if first_batch == 0:
                trace.append({"stage": stage_index, "stage_name": stage.name, "epoch": global_epoch,
                              "step": step, "n_examples": len(plan.indices), **plan.params, **method.trace(),
                              **ctx.composition(plan.indices)})
            for batch_index in range(first_batch, len(batches)):
                batch_positions = batches[batch_index]
                info = StepInfo(step=step, total_steps=total_steps, stage=stage_index,
                                num_stages=len(schedule.stages), epoch=global_epoch, params=plan.params)
                # Each rank takes a contiguous slice of the global batch; accumulation covers the rest.
                per_rank = math.ceil(len(batch_positions) / world_size)
                mine = batch_positions[rank * per_rank:(rank + 1) * per_rank]
                micro = [mine[i:i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)]
                step_loss = 0.0
                logged_sum: dict[str, float] = {}
                for micro_index, positions in enumerate(micro):
                    examples = [encoded[i] for i in positions]
                    batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
                    ids = [e.example_id for e in examples]
                    # Losses see the N response positions of the micro-batch as one [1, N, V] row: every
                    # loss averages over response tokens, so this is the same value as the padded [B, L, V].
                    with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
                        student_logits = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
                        teacher_logits = teacher.response_logits(batch, ids) if method.needs_teacher else None
                    response_labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
                    loss, logged = method.loss(student_logits.float()[None],
                                               None if teacher_logits is None else teacher_logits.float()[None],
                                               response_labels[None], info)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"non-finite loss {loss.item()} at step {step} (epoch {global_epoch}, "
                                            f"stage {stage_index}); example ids: {', '.join(ids)}")
                    # DDP all-reduces gradients on the last micro-batch of the step only.
                    last_micro = micro_index == len(micro) - 1
                    with contextlib.nullcontext() if world_size == 1 or last_micro else model.no_sync():
                        scaler.scale(loss / len(micro)).backward()
                    step_loss += float(loss.detach()) / len(micro)
                    for key, value in logged.items():
                        logged_sum[key] = logged_sum.get(key, 0.0) + value / len(micro)
                    counters["examples"] += len(examples)
                    counters["tokens"] += int(batch["attention_mask"].sum())
                    counters["response_tokens"] += int((batch["labels"] != -100).sum())
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if world_size > 1:
                    step_loss, logged_sum = _global_mean(step_loss, logged_sum, world_size)
                method.after_step(step_loss, info, logged_sum)
                step += 1
                steps_bar.update()
                if step % cfg.log_every == 0 or step == total_steps:
                    steps_bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
                    history.append({"step": step, "loss": step_loss, "lr": scheduler.get_last_lr()[0],
                                    "grad_norm": float(grad_norm), **logged_sum, **method.trace()})
                    log(f"step {step}/{total_steps} loss {step_loss:.4f} lr {scheduler.get_last_lr()[0]:.2e}")
                if (ckpt_path and rank == 0 and cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                        and step < total_steps):
                    next_epoch, next_batch = (global_epoch, batch_index + 1)
                    if next_batch == len(batches):
                        next_epoch, next_batch = global_epoch + 1, 0
                    stage_wall_now = list(stage_wall)
                    stage_wall_now[stage_index] += time.perf_counter() - stage_t0
                    save_checkpoint(ckpt_path, {
                        "model": student.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "optimizer_stage": stage_index,
                        "method": method.state_dict(), "rng": _rng_state(), "step": step,
                        "epoch": next_epoch, "batch": next_batch, "history": history, "trace": trace,
                        "counters": counters, "elapsed": elapsed_before + time.perf_counter() - t0,
                        "stage_wall": stage_wall_now, "identity": checkpoint_identity})
            global_epoch += 1
        stage_wall[stage_index] += time.perf_counter() - stage_t0
    steps_bar.close()
    if teacher is not None:
        counters["teacher_forward_passes"] += teacher.forward_passes
    if world_size > 1:
        counters = _global_sum(counters)
    wall = elapsed_before + time.perf_counter() - t0
    metrics = {
        "steps": step, "total_steps": total_steps, "epochs": len(schedule.epochs),
        "stages": [{"name": s.name, "epochs": len(s.epochs), "steps": n, "wall_s": w,
                    "examples": sum(len(e.indices) for e in s.epochs)}
                   for s, n, w in zip(schedule.stages, stage_steps, stage_wall)],
        "restart_optimizer_per_stage": schedule.restart_optimizer_per_stage,
        "wall_s": wall, **counters,
        "tokens_per_s": counters["tokens"] / wall if wall > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(), "history": history, "trace": trace,
        "final_loss": history[-1]["loss"] if history else None,
        "train_config": asdict(cfg), "accumulation_steps": accumulation, "world_size": world_size,
        "device": str(device),
    }
    metrics.update(gpu_clock.stop())
    if ckpt_path and rank == 0:
        for path in (ckpt_path, previous_checkpoint(ckpt_path)):
            path.unlink(missing_ok=True)
    return metrics


def distributed_context() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _global_mean(loss: float, logged: dict[str, float], world_size: int) -> tuple[float, dict[str, float]]:
    import torch.distributed as dist

    keys = sorted(logged)
    values = torch.tensor([loss] + [logged[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    values /= world_size
    return float(values[0]), {k: float(v) for k, v in zip(keys, values[1:])}


def _global_sum(counters: dict[str, int]) -> dict[str, int]:
    import torch.distributed as dist

    keys = sorted(counters)
    values = torch.tensor([counters[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: int(v) for k, v in zip(keys, values)}


def previous_checkpoint(path: Path) -> Path:
    """The checkpoint before ``path``, kept so that an unreadable newest one loses only checkpoint_every steps."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        # A hard link keeps `path` in place until the new checkpoint replaces it: there is always one.
        link = previous_checkpoint(path).with_name(f".{previous_checkpoint(path).name}.{os.getpid()}.tmp")
        link.unlink(missing_ok=True)
        try:
            os.link(path, link)
            os.replace(link, previous_checkpoint(path))
        except OSError:                      # no hard links on this file system
            os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)


def load_checkpoint(path: Path, identity: dict | None, log: Callable[[str], None],
                    may_move: bool = True) -> dict[str, Any] | None:
    """The newest readable checkpoint written for ``identity`` (``path``, else the previous one), or None
    to start fresh. An unreadable checkpoint, or one written for another run id or other inputs, is set
    aside (renamed ``*.corrupt`` / ``*.stale-<run id>``, logged, by rank 0 only) and never resumed."""
    set_aside_any = False
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, weights_only=False)
            written_for = state.get("identity")
        except Exception as exc:             # truncated, not a checkpoint, unpicklable: never resumed
            tag, why = "corrupt", f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if written_for == identity:
                return {**state, "loaded_from": candidate}
            old, new = written_for or {}, identity or {}
            tag = f"stale-{short(old.get('run_id'))}"
            if old.get("run_id") != new.get("run_id"):
                why = (f"written for run id {short(old.get('run_id'))}, this job's spec is run id "
                       f"{short(new.get('run_id'))}")
            else:
                changed = sorted(k for k in {*old.get("inputs", {}), *new.get("inputs", {})}
                                 if old.get("inputs", {}).get(k) != new.get("inputs", {}).get(k))
                why = f"written from other inputs ({', '.join(changed)} changed since)"
        if may_move:
            log(f"checkpoint {candidate} {why}: set aside as {set_aside(candidate, tag).name}, not resumed")
        set_aside_any = True
    if set_aside_any and may_move:
        log(f"no usable checkpoint in {path.parent}: training starts fresh")
    return None
