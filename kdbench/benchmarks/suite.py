"""Where kdbench's time goes: each benchmark measures two ways of doing the same work side by side,
in one process, and reports their ratio.

    python -m kdbench.benchmarks.suite --out benchmarks.json [--quick] [--only NAME ...] [--threads N]
                                       [--device cpu|cuda|auto]

teacher_cache  distillation throughput (tokens/s) reading the dense teacher cache, over the same run
               with the live teacher (same student init, data, batches, method vanilla_kd-fkl); the
               teacher has ~6x the student's parameters (the default config's shapes)
generation     one-prompt-at-a-time HF ``model.generate`` wall time over batched, length-sorted
               :func:`kdbench.generation.generate`, same prompts and greedy decoding, outputs compared;
               for a briefly fine-tuned student (short answers ending in EOS, the headline) and for an
               untrained one (every completion runs to max_new_tokens)
rouge          rouge_score wall time over kdbench's Rouge-L (:func:`kdbench.benchmarks.rouge_speed.measure`)
train_flops    the training loop's achieved FLOP/s over the measured fp32 square-matmul peak (same
               device and thread count), and the loop's overhead: the kdbench.train call's wall time
               over that of a bare PyTorch loop doing the same math (checked: same losses and weights)

Timed variants are interleaved (A B, B A, ...) after an untimed warm-up, and each ratio uses the
best (shortest) time of each variant, so a burst of load from other processes hits both and the
ratio is as little disturbed as it can be. Each timed run also records its process CPU time; the
``*_cpu`` ratios, computed from it, are less sensitive to the process being descheduled on a shared
machine (with one torch thread). Every raw time is kept in the JSON.

FLOP count (train_flops): per token, 6·N_student (forward 2N + backward 4N) plus 2·N_teacher (the
live teacher's forward), N = the model's parameter count (tied embeddings counted once), tokens =
non-padding tokens. Attention-score FLOPs (which grow with sequence length), softmaxes and the
optimiser are not counted, so this understates the arithmetic done; ``*_padded`` counts every
position the hardware computes, padding included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = ("teacher_cache", "generation", "rouge", "train_flops")
SCHEMA_VERSION = 1

# The default config's model shapes (config/config.yaml): the teacher has ~6x the student's parameters.
TEACHER_ARCH = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 128, "intermediate_size": 256,
                "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 192,
                "tie_word_embeddings": True}
STUDENT_ARCH = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 192,
                "tie_word_embeddings": True}
RUN = "vanilla_kd-fkl"
UNTRAINED_INIT = 0.3          # wide enough that an untrained model's greedy outputs are not one repeated token


@dataclass(frozen=True)
class Sizes:
    n_train: int = 256              # training examples (synthetic suite)
    vocab_size: int = 600
    max_prompt_tokens: int = 128
    max_length: int = 192
    batch_size: int = 32            # global = micro batch: one forward per optimiser step
    epochs: int = 1
    train_repeats: int = 6          # timed runs of each variant (teacher_cache, train_flops); even = balanced order
    gen_prompts: int = 48
    gen_batch_size: int = 16
    gen_max_new_tokens: int = 48
    gen_sft_epochs: int = 4         # short SFT of the generation model: answers that stop at EOS
    gen_repeats: int = 3
    rouge_pairs: int = 2000
    rouge_repeats: int = 3
    matmul_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    matmul_repeats: int = 5


QUICK = Sizes(n_train=32, batch_size=8, train_repeats=2, gen_prompts=6, gen_batch_size=4, gen_max_new_tokens=8,
              gen_sft_epochs=1, rouge_pairs=200, rouge_repeats=1, matmul_sizes=(128, 256), matmul_repeats=2)


# --------------------------------------------------------------------------- shared setup
@dataclass
class Workspace:
    """Data, tokenizer and models shared by the benchmarks, built on first use."""

    root: Path
    sizes: Sizes
    device: torch.device
    seed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict)
    setup_s: dict[str, float] = field(default_factory=dict)

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._cache:
            t0 = time.perf_counter()
            self._cache[name] = build()
            self.setup_s[name] = time.perf_counter() - t0
        return self._cache[name]

    @property
    def rows(self):
        from kdbench.data import record_from_json
        from kdbench.data.synthetic import generate_examples

        return self._once("rows", lambda: [record_from_json(r, f"syn:{i}") for i, r in
                                           enumerate(generate_examples("train", self.sizes.n_train, seed=self.seed))])

    @property
    def tokenizer(self):
        from kdbench.models import load_tokenizer, train_bpe_tokenizer

        def build():
            train_bpe_tokenizer([t for r in self.rows for t in (r.prompt, r.output)], self.sizes.vocab_size,
                                self.root / "tokenizer")
            return load_tokenizer(self.root / "tokenizer")
        return self._once("tokenizer", build)

    @property
    def encoded(self):
        from kdbench.batching import encode_records

        tokenizer = self.tokenizer   # built (and timed) on its own
        return self._once("encoded", lambda: encode_records(tokenizer, self.rows,
                                                            max_prompt_tokens=self.sizes.max_prompt_tokens,
                                                            max_length=self.sizes.max_length))

    def student(self):
        """A fresh student, identical at every call (same seed)."""
        from kdbench.models import build_model

        return build_model({"init": "scratch", "architecture": STUDENT_ARCH}, self.tokenizer, self.seed + 1)

    @property
    def teacher_dir(self) -> Path:
        from kdbench.models import build_model, save_model

        tokenizer = self.tokenizer

        def build():
            model = build_model({"init": "scratch", "architecture": TEACHER_ARCH}, tokenizer, self.seed + 2)
            save_model(model, tokenizer, self.root / "teacher")
            return self.root / "teacher"
        return self._once("teacher", build)

    def teacher(self):
        from kdbench.models import load_model

        return load_model(self.teacher_dir)

    def train_config(self):
        from kdbench.train import TrainConfig

        s = self.sizes
        return TrainConfig(epochs=s.epochs, lr=3e-3, lr_min=1e-5, warmup_steps=2, global_batch_size=s.batch_size,
                           micro_batch_size=s.batch_size, log_every=1)

    def method(self):
        from kdbench.methods import discover_methods, instantiate, resolve_runs

        root = Path(__file__).resolve().parents[2] / "methods"   # the repository's methods/, whatever the cwd
        methods = discover_methods(root if root.is_dir() else "methods")
        runs = resolve_runs({"methods": {"include": ["vanilla_kd"], "settings": {"vanilla_kd": {"variants": ["fkl"]}}}},
                            methods)
        return instantiate(runs[RUN], methods)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(ws: Workspace, teacher, encoded=None) -> dict[str, Any]:
    """One kdbench.train run of vanilla_kd-fkl from the same student initialisation."""
    from kdbench.methods import ScheduleContext
    from kdbench.train import train

    encoded = ws.encoded if encoded is None else encoded
    cfg = ws.train_config()
    ctx = ScheduleContext(tuple(e.example_id for e in encoded), cfg.epochs, ws.seed)
    student = ws.student()
    method = ws.method()
    passes_before = teacher.forward_passes
    cpu0, t0 = time.process_time(), time.perf_counter()
    metrics = train(student, method, encoded, ctx, cfg, pad_id=ws.tokenizer.pad_token_id, seed=ws.seed,
                    device=ws.device, teacher=teacher, log=lambda _: None)
    _sync(ws.device)
    # wall_s is train()'s own clock (its loop); call_s and cpu_s cover the whole call, setup included.
    metrics["call_s"] = time.perf_counter() - t0
    metrics["cpu_s"] = time.process_time() - cpu0
    # train() adds the teacher's lifetime count; the teacher object is shared between runs.
    metrics["teacher_forward_passes"] = teacher.forward_passes - passes_before
    metrics["_student"] = student
    return metrics


def _run_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("wall_s", "call_s", "cpu_s", "steps", "tokens", "response_tokens", "tokens_per_s",
                                    "teacher_forward_passes", "final_loss")}


def _interleaved(variants: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict]]:
    """Run each variant ``repeats`` times, alternating which goes first."""
    names = list(variants)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(variants[name]())
    return out


def _losses_match(a: Sequence[float], b: Sequence[float], rel: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(1.0, abs(x)) for x, y in zip(a, b))


# --------------------------------------------------------------------------- 1. teacher cache
def bench_teacher_cache(ws: Workspace) -> dict[str, Any]:
    from kdbench.teacher_cache import CachedTeacher, build_cache, cache_key
    from kdbench.train import LiveTeacher

    s = ws.sizes
    encoded = ws.encoded
    live = LiveTeacher(ws.teacher(), ws.device, torch.float32)
    key = cache_key(ws.teacher_dir, encoded, "dense", "fp32", None)
    tensors = ws.root / "cache-dense-fp32.safetensors"
    meta = build_cache(ws.teacher(), encoded, pad_id=ws.tokenizer.pad_token_id, device=ws.device,
                       batch_size=s.batch_size, mode="dense", storage="fp32", top_k=None, key=key,
                       out_tensors=tensors, out_meta=None)
    cached = CachedTeacher(tensors, meta, key)
    # Warm-up (untimed): one optimiser step each, so lazy initialisation is not charged to either side.
    for teacher in (live, cached):
        _train(ws, teacher, encoded[:s.batch_size])
    runs = _interleaved({"live": lambda: _train(ws, live), "cache": lambda: _train(ws, cached)}, s.train_repeats)
    best = {k: min(v, key=lambda m: m["wall_s"]) for k, v in runs.items()}
    cpu = {k: min(m["cpu_s"] for m in v) for k, v in runs.items()}
    live_losses = [h["loss"] for h in runs["live"][0]["history"]]
    cache_losses = [h["loss"] for h in runs["cache"][0]["history"]]
    n_student = ws.student().num_parameters()
    n_teacher = live.model.num_parameters()
    saved_per_epoch = (best["live"]["wall_s"] - best["cache"]["wall_s"]) / s.epochs
    return {
        "description": "distillation throughput with the dense teacher cache vs the live teacher",
        "ratio": best["cache"]["tokens_per_s"] / best["live"]["tokens_per_s"],
        "ratio_definition": "tokens/s reading the dense cache / tokens/s with the live teacher (best run of each)",
        "ratio_cpu": cpu["live"] / cpu["cache"],
        "parameters": {"run": RUN, "n_examples": len(encoded), "epochs": s.epochs, "batch_size": s.batch_size,
                       "student_params": n_student, "teacher_params": n_teacher,
                       "teacher_to_student_params": n_teacher / n_student, "student_arch": STUDENT_ARCH,
                       "teacher_arch": TEACHER_ARCH, "vocab_size": len(ws.tokenizer), "repeats": s.train_repeats,
                       "cache_mode": "dense", "cache_storage": "fp32"},
        "timings": {"live": [_run_summary(m) for m in runs["live"]],
                    "cache": [_run_summary(m) for m in runs["cache"]],
                    "cache_build_s": meta["build_s"], "cache_build_forward_passes": meta["forward_passes"],
                    "cache_bytes": meta["bytes"]},
        "ratio_per_repeat": [c["tokens_per_s"] / l["tokens_per_s"] for l, c in zip(runs["live"], runs["cache"])],
        "ratio_median_of_repeats": statistics.median(c["tokens_per_s"] / l["tokens_per_s"]
                                                     for l, c in zip(runs["live"], runs["cache"])),
        "ratio_cpu_median_of_repeats": statistics.median(l["cpu_s"] / c["cpu_s"]
                                                         for l, c in zip(runs["live"], runs["cache"])),
        "wall_saved_per_epoch_s": saved_per_epoch,
        "epochs_to_repay_cache_build": meta["build_s"] / saved_per_epoch if saved_per_epoch > 0 else None,
        "checks": {
            "cache_teacher_forward_passes": [m["teacher_forward_passes"] for m in runs["cache"]],
            "live_teacher_forward_passes": [m["teacher_forward_passes"] for m in runs["live"]],
            "steps": best["live"]["steps"],
            "losses_match": _losses_match(live_losses, cache_losses),
            "max_loss_rel_diff": max(abs(a - b) / max(1e-12, abs(a)) for a, b in zip(live_losses, cache_losses)),
        },
    }


# --------------------------------------------------------------------------- 2. generation
def _one_at_a_time(model, tokenizer, prompts, *, max_prompt_tokens: int, decoding: dict, device) -> tuple[list[str], dict]:
    """The naive baseline: ``model.generate`` on each prompt alone (no padding), same decoding settings."""
    from kdbench.batching import encode_prompt
    from kdbench.generation import generation_kwargs

    kwargs = generation_kwargs(decoding, tokenizer)
    outputs, lengths = [], []
    model.to(device).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, prompt, max_prompt_tokens)], dtype=torch.long, device=device)
            tokens = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:].tolist()
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
            lengths.append(len(tokens))
            outputs.append(tokenizer.decode(tokens, skip_special_tokens=True))
    _sync(device)
    wall = time.perf_counter() - t0
    return outputs, {"wall_s": wall, "examples": len(prompts), "new_tokens": sum(lengths),
                     "tokens_per_s": sum(lengths) / wall if wall > 0 else 0.0, "completion_tokens": lengths}


def _generation_case(ws: Workspace, model, prompts: list[str]) -> dict[str, Any]:
    from kdbench.generation import generate

    s = ws.sizes
    tokenizer = ws.tokenizer
    model.eval()
    decoding = {"decoding": "greedy", "max_new_tokens": s.gen_max_new_tokens}
    common = {"max_prompt_tokens": s.max_prompt_tokens, "decoding": decoding, "device": ws.device}
    # Warm-up (untimed) on two prompts.
    generate(model, tokenizer, prompts[:2], seed=ws.seed, batch_size=2, **common)
    _one_at_a_time(model, tokenizer, prompts[:1], **common)
    outputs: dict[str, list[list[str]]] = {"batched": [], "one_at_a_time": []}

    def timed(name, fn):
        def run():
            cpu0 = time.process_time()
            out, stats = fn()
            stats["cpu_s"] = time.process_time() - cpu0
            outputs[name].append(out)
            return stats
        return run

    runs = _interleaved({
        "batched": timed("batched", lambda: generate(model, tokenizer, prompts, seed=ws.seed,
                                                     batch_size=s.gen_batch_size, **common)),
        "one_at_a_time": timed("one_at_a_time", lambda: _one_at_a_time(model, tokenizer, prompts, **common)),
    }, s.gen_repeats)
    wall = {k: min(m["wall_s"] for m in v) for k, v in runs.items()}
    cpu = {k: min(m["cpu_s"] for m in v) for k, v in runs.items()}
    a, b = outputs["batched"][0], outputs["one_at_a_time"][0]
    mismatches = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    lengths = runs["one_at_a_time"][0]["completion_tokens"]
    consistent = all(o == a for o in outputs["batched"]) and all(o == b for o in outputs["one_at_a_time"])
    return {
        "ratio": wall["one_at_a_time"] / wall["batched"],
        "ratio_cpu": cpu["one_at_a_time"] / cpu["batched"],
        "model_params": model.num_parameters(),
        "timings": runs,
        "checks": {"outputs_equal": not mismatches and len(a) == len(b) == len(prompts) and consistent,
                   "n_outputs": len(a), "n_mismatches": len(mismatches),
                   "first_mismatch": None if not mismatches else {"index": mismatches[0], "batched": a[mismatches[0]],
                                                                  "one_at_a_time": b[mismatches[0]]},
                   "distinct_outputs": len(set(a)),
                   "completions_stopped_by_eos": sum(1 for n in lengths if n < s.gen_max_new_tokens),
                   "mean_completion_tokens": sum(lengths) / max(1, len(lengths))},
        "sample_outputs": [o[:80] for o in a[:2]],
    }


def bench_generation(ws: Workspace) -> dict[str, Any]:
    from kdbench.data import record_from_json
    from kdbench.data.synthetic import generate_examples
    from kdbench.methods import ScheduleContext, SupervisedFineTuning
    from kdbench.models import build_model
    from kdbench.train import train

    s = ws.sizes
    tokenizer = ws.tokenizer
    records = [record_from_json(r, f"test:{i}") for i, r in
               enumerate(generate_examples("test", s.gen_prompts, seed=ws.seed))]
    prompts = [r.prompt for r in records]
    # "trained": the student briefly fine-tuned, so that completions stop at EOS as a trained model's do
    # (early: the model is weak); a batch runs until its longest member stops. "untrained": a random model
    # with a wide initialisation, whose greedy completions differ from prompt to prompt and almost never
    # hit EOS, so every one runs to max_new_tokens (the most generation work per prompt).
    t0 = time.perf_counter()
    trained = ws.student()
    sft_cfg = replace(ws.train_config(), epochs=s.gen_sft_epochs, lr=1e-2, log_every=10 ** 9)
    sft = train(trained, SupervisedFineTuning(SupervisedFineTuning.Config()), ws.encoded,
                ScheduleContext(tuple(e.example_id for e in ws.encoded), sft_cfg.epochs, ws.seed), sft_cfg,
                pad_id=tokenizer.pad_token_id, seed=ws.seed, device=ws.device, log=lambda _: None)
    sft_s = time.perf_counter() - t0
    untrained = build_model({"init": "scratch", "architecture": {**STUDENT_ARCH, "initializer_range": UNTRAINED_INIT}},
                            tokenizer, ws.seed + 3)
    cases = {"trained": _generation_case(ws, trained, prompts), "untrained": _generation_case(ws, untrained, prompts)}
    return {
        "description": "batched length-sorted generation vs one prompt at a time with HF generate",
        "ratio": cases["trained"]["ratio"],
        "ratio_definition": "one-at-a-time wall time / batched wall time (best run of each), trained student: "
                            "the batched speed-up",
        "ratio_cpu": cases["trained"]["ratio_cpu"],
        "ratio_untrained": cases["untrained"]["ratio"],
        "parameters": {"model_arch": STUDENT_ARCH, "sft_epochs": s.gen_sft_epochs, "sft_examples": len(ws.encoded),
                       "sft_final_loss": sft["final_loss"], "untrained_initializer_range": UNTRAINED_INIT,
                       "n_prompts": len(prompts), "batch_size": s.gen_batch_size,
                       "max_prompt_tokens": s.max_prompt_tokens,
                       "decoding": {"decoding": "greedy", "max_new_tokens": s.gen_max_new_tokens},
                       "repeats": s.gen_repeats},
        "timings": {"trained": cases["trained"]["timings"], "untrained": cases["untrained"]["timings"],
                    "sft_setup_s": sft_s},
        "cases": {name: {k: v for k, v in case.items() if k != "timings"} for name, case in cases.items()},
        "checks": {"outputs_equal": all(c["checks"]["outputs_equal"] for c in cases.values()),
                   **{f"{name}_{k}": v for name, c in cases.items() for k, v in c["checks"].items()
                      if k in ("n_outputs", "n_mismatches", "distinct_outputs", "completions_stopped_by_eos")}},
    }


# --------------------------------------------------------------------------- 3. rouge
def bench_rouge(ws: Workspace) -> dict[str, Any]:
    from kdbench.benchmarks.rouge_speed import measure

    s = ws.sizes
    result = measure(n_pairs=s.rouge_pairs, seed=ws.seed, repeats=s.rouge_repeats)
    return {
        "description": "kdbench Rouge-L vs rouge_score on the same pairs (kdbench.benchmarks.rouge_speed.measure)",
        "ratio": result["speedup_cold"],
        "ratio_definition": "rouge_score wall time / kdbench wall time with cold caches (best of repeats)",
        "ratio_warm": result["speedup_warm"],
        "parameters": {"n_pairs": result["n_pairs"], "source": result["source"], "repeats": result["repeats"]},
        "timings": {k: result[k] for k in ("rouge_score_s", "kdbench_cold_s", "kdbench_warm_s")},
        "checks": {"identical": result["identical"]},
    }


# --------------------------------------------------------------------------- 4. FLOP/s and loop overhead
def matmul_peak(device: torch.device, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Best fp32 FLOP/s of square matmuls (2·n³ FLOPs each) at the current thread count."""
    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        torch.mm(a, b)
        _sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            times.append(time.perf_counter() - t0)
        per_size[str(n)] = {"times_s": times, "flops_per_s": 2 * n ** 3 / min(times)}
    best = max(per_size, key=lambda k: per_size[k]["flops_per_s"])
    return {"peak_flops_per_s": per_size[best]["flops_per_s"], "peak_size": int(best), "sizes": per_size}


def bare_loop(student, teacher_model, encoded, cfg, *, pad_id: int, seed: int, device: torch.device,
              loss_settings: dict[str, Any]) -> dict[str, Any]:
    """Plain PyTorch: the same batch order and padding, models and loss functions ((1 - r)·CE + r·KD from
    kdbench.losses, as the method computes them), AdamW with the same parameter groups and LR schedule,
    gradient clipping, and nothing else: no finiteness check, counters, history, logged values,
    method hooks or autocast context."""
    from kdbench.batching import collate
    from kdbench.losses import get_loss, mix_with_ce, token_ce
    from kdbench.models import ResponseLM
    from kdbench.train import epoch_order, lr_factor

    student_head, teacher_head = ResponseLM(student), ResponseLM(teacher_model)

    settings = dict(loss_settings)
    kd_ratio = settings.pop("kd_ratio")
    kd_loss = get_loss(settings.pop("loss"))
    cpu0, t0 = time.process_time(), time.perf_counter()
    batches = []
    for epoch in range(cfg.epochs):
        order = epoch_order(tuple(range(len(encoded))), seed, epoch)
        batches += [[encoded[i] for i in order[i:i + cfg.global_batch_size]]
                    for i in range(0, len(order), cfg.global_batch_size)]
    total = len(batches)
    student.to(device).train()
    decay = [p for p in student.parameters() if p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total))
    torch.manual_seed(seed)
    losses = []
    for examples in batches:
        batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
        # The same math as kdbench.train: logits at the response positions only, as one [1, N, V] row.
        logits = student_head(batch["input_ids"], batch["attention_mask"], batch["labels"])[None]
        with torch.no_grad():
            teacher_logits = teacher_head(batch["input_ids"], batch["attention_mask"], batch["labels"])[None]
        labels = batch["labels"][batch["labels"] != -100][None]
        loss = mix_with_ce(token_ce(logits, labels),
                           kd_loss(logits, teacher_logits, labels != -100, **settings), kd_ratio)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    _sync(device)
    wall = time.perf_counter() - t0
    return {"call_s": wall, "cpu_s": time.process_time() - cpu0, "steps": total, "losses": [float(x) for x in losses]}


def _padded_tokens(encoded, cfg, seed: int) -> int:
    from kdbench.train import epoch_order

    total = 0
    for epoch in range(cfg.epochs):
        order = epoch_order(tuple(range(len(encoded))), seed, epoch)
        for i in range(0, len(order), cfg.global_batch_size):
            chunk = order[i:i + cfg.global_batch_size]
            total += len(chunk) * max(len(encoded[j].input_ids) for j in chunk)
    return total


def bench_train_flops(ws: Workspace) -> dict[str, Any]:
    from kdbench.train import LiveTeacher

    s = ws.sizes
    cfg = ws.train_config()
    peak = matmul_peak(ws.device, s.matmul_sizes, s.matmul_repeats)
    live = LiveTeacher(ws.teacher(), ws.device, torch.float32)
    method_cfg = ws.method().config

    def bare(encoded=None):
        student = ws.student()
        result = bare_loop(student, live.model, ws.encoded if encoded is None else encoded, cfg,
                           pad_id=ws.tokenizer.pad_token_id, seed=ws.seed, device=ws.device,
                           loss_settings={"loss": method_cfg.loss, "kd_ratio": method_cfg.kd_ratio,
                                          "temperature": method_cfg.temperature,
                                          "scale_by_t2": method_cfg.scale_by_t2,
                                          "skew_alpha": method_cfg.skew_alpha, "jsd_beta": method_cfg.jsd_beta})
        result["_student"] = student
        return result

    bare(ws.encoded[:s.batch_size])
    _train(ws, live, ws.encoded[:s.batch_size])
    runs = _interleaved({"kdbench": lambda: _train(ws, live), "bare": bare}, s.train_repeats)
    best = {k: min(v, key=lambda m: m["call_s"]) for k, v in runs.items()}
    cpu = {k: min(m["cpu_s"] for m in v) for k, v in runs.items()}
    kd, bare_run = runs["kdbench"][0], runs["bare"][0]
    kd_losses = [h["loss"] for h in kd["history"]]
    diffs = [float((p - q).abs().max()) for p, q in zip(kd["_student"].state_dict().values(),
                                                       bare_run["_student"].state_dict().values())]
    student = ws.student()
    n_student, n_teacher = student.num_parameters(), live.model.num_parameters()
    head_student = student.get_output_embeddings().weight.numel()
    head_teacher = live.model.get_output_embeddings().weight.numel()
    tokens, response_tokens = best["kdbench"]["tokens"], best["kdbench"]["response_tokens"]
    padded = _padded_tokens(ws.encoded, cfg, ws.seed)
    # The LM heads run at the response positions only (kdbench.models.ResponseLM), the bodies everywhere.
    flops_per_token = 6 * (n_student - head_student) + 2 * (n_teacher - head_teacher)
    flops_per_response_token = 6 * head_student + 2 * head_teacher
    flops = flops_per_token * tokens + flops_per_response_token * response_tokens
    loop_wall = min(m["wall_s"] for m in runs["kdbench"])
    achieved = flops / loop_wall
    achieved_padded = (flops_per_token * padded + flops_per_response_token * response_tokens) / loop_wall
    threads = torch.get_num_threads() if ws.device.type == "cpu" else 1
    per_cpu_s = flops / cpu["kdbench"]
    return {
        "description": "training loop FLOP/s vs the measured matmul peak; loop overhead vs a bare PyTorch loop",
        "ratio": achieved / peak["peak_flops_per_s"],
        "ratio_definition": "achieved FLOP/s of the training loop / measured fp32 matmul peak FLOP/s",
        "flops_formula": "(6*(N_student - H_student) + 2*(N_teacher - H_teacher)) * tokens + (6*H_student + "
                         "2*H_teacher) * response_tokens; tokens = non-padding tokens; N = parameter count; "
                         "H = LM-head parameters (applied at response positions only)",
        "achieved_flops_per_s": achieved,
        "achieved_flops_per_s_padded": achieved_padded,
        "ratio_padded": achieved_padded / peak["peak_flops_per_s"],
        "achieved_flops_per_cpu_s": per_cpu_s,
        "ratio_cpu": per_cpu_s / (peak["peak_flops_per_s"] / threads),
        "ratio_cpu_definition": "FLOPs per CPU-second of the loop / (matmul peak / torch threads)",
        "overhead": best["kdbench"]["call_s"] / best["bare"]["call_s"] - 1.0,
        "overhead_definition": "wall time of the whole kdbench.train call / of the whole bare PyTorch loop call - 1 "
                               "(best run of each); target <= 0.05",
        "overhead_cpu": cpu["kdbench"] / cpu["bare"] - 1.0,
        "overhead_cpu_median_of_repeats": statistics.median(k["cpu_s"] / b["cpu_s"] - 1.0
                                                            for k, b in zip(runs["kdbench"], runs["bare"])),
        "overhead_per_repeat": [k["call_s"] / b["call_s"] - 1.0 for k, b in zip(runs["kdbench"], runs["bare"])],
        "overhead_median_of_repeats": statistics.median(k["call_s"] / b["call_s"] - 1.0
                                                        for k, b in zip(runs["kdbench"], runs["bare"])),
        "parameters": {"run": RUN, "n_examples": len(ws.encoded), "epochs": s.epochs, "batch_size": s.batch_size,
                       "student_params": n_student, "teacher_params": n_teacher, "flops_per_token": flops_per_token,
                       "student_head_params": head_student, "teacher_head_params": head_teacher,
                       "flops_per_response_token": flops_per_response_token, "flops": flops,
                       "tokens": tokens, "response_tokens": response_tokens, "padded_tokens": padded, "repeats": s.train_repeats,
                       "matmul_sizes": list(s.matmul_sizes), "matmul_repeats": s.matmul_repeats},
        "timings": {"matmul": peak, "kdbench": [_run_summary(m) for m in runs["kdbench"]],
                    "bare": [{k: v for k, v in m.items() if k not in ("losses", "_student")} for m in runs["bare"]]},
        "checks": {"losses_match": _losses_match(kd_losses, bare_run["losses"], rel=1e-6),
                   "max_loss_abs_diff": max(abs(a - b) for a, b in zip(kd_losses, bare_run["losses"])),
                   "max_param_abs_diff": max(diffs), "steps": kd["steps"]},
    }


RUNNERS: dict[str, Callable[[Workspace], dict[str, Any]]] = {
    "teacher_cache": bench_teacher_cache, "generation": bench_generation, "rouge": bench_rouge,
    "train_flops": bench_train_flops,
}


# --------------------------------------------------------------------------- machine and CLI
def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    import transformers

    info = {"cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": _cpu_model(), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "transformers_version": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": str(device), "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_suite(names: Sequence[str], *, quick: bool, device: torch.device, seed: int = 0,
              workdir: Path | None = None, train_repeats: int | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    sizes = QUICK if quick else Sizes()
    if train_repeats:
        sizes = replace(sizes, train_repeats=train_repeats)
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "suite": "kdbench.benchmarks.suite", "quick": quick,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": seed,
                              "machine": machine_info(device), "benchmarks": {}}
    report["machine"]["loadavg_before"] = _loadavg()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdbench-bench-", dir=workdir) as tmp:
        ws = Workspace(Path(tmp), sizes, device, seed)
        for name in names:
            log(f"[{name}] running")
            t0 = time.perf_counter()
            result = RUNNERS[name](ws)
            result["wall_s"] = time.perf_counter() - t0
            result["loadavg_after"] = _loadavg()
            report["benchmarks"][name] = result
            log(f"[{name}] ratio {result['ratio']:.3g} ({result['ratio_definition']}) in {result['wall_s']:.1f}s")
        report["setup_s"] = dict(ws.setup_s)
    report["wall_s"] = time.perf_counter() - t_all
    report["machine"]["loadavg_after"] = _loadavg()
    return report


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="write the result JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (for tests)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-repeats", type=int, default=None,
                        help="timed runs of each variant in teacher_cache and train_flops (default 6, quick 2)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary files")
    args = parser.parse_args(argv)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from kdbench.models import resolve_device

        device = resolve_device(args.device)
        names = [n for n in BENCHMARKS if n in set(args.only)] if args.only else list(BENCHMARKS)
        report = run_suite(names, quick=args.quick, device=device, seed=args.seed, workdir=args.workdir,
                           train_repeats=args.train_repeats, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads_before)   # main() may be called in-process (tests)
    report["command"] = "python -m kdbench.benchmarks.suite " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(report, indent=2, default=_json_default, allow_nan=False)
    from kdbench.io import write_text_atomic

    write_text_atomic(args.out, text + "\n")
    for name, result in report["benchmarks"].items():
        extra = f"  overhead {result['overhead']:+.1%}" if "overhead" in result else ""
        print(f"{name:14s} ratio {result['ratio']:8.3f}  {result['ratio_definition']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
