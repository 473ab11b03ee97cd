"""The workflow's jobs as plain functions (each Snakemake rule calls one through ``kdbench stage``).

Each takes the job's resolved spec (see kdbench.config) and explicit input/output paths, writes its
outputs atomically, and records a result JSON whose run id is the hash of the spec.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.batching import encode_records
from kdbench.data import Record, load_records, records_to_rows
from kdbench.errors import ResultError
from kdbench.integrity import checkpoint_identity, seal, verify_inputs
from kdbench.io import atomic_directory, sha256_file, write_jsonl_atomic, write_json_atomic, write_text_atomic
from kdbench.methods import (SFT_RUN, ScheduleContext, SupervisedFineTuning, discover_methods, instantiate,
                             RunSpec)
from kdbench.models import (PRECISIONS, build_model, load_model, load_tokenizer, resolve_device, save_model,
                            train_bpe_tokenizer, count_parameters)
from kdbench.config import run_id
from kdbench.results import read_result, write_result
from kdbench.accounting import GpuClock, peak_rss_mb
from kdbench.train import LiveTeacher, TrainConfig, train


def log(message: str) -> None:
    print(f"[kdbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _device(spec: dict) -> torch.device:
    return resolve_device(spec.get("device", "auto"))


def _init_distributed(device: torch.device) -> tuple[torch.device, int]:
    """Join the torchrun process group when launched with several processes; returns (device, rank)."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, 0
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank()


def _teacher_dtype(precision: str, device: torch.device) -> torch.dtype:
    # Half-precision teachers only pay off on GPUs; CPU kernels for bf16 are slow and inexact.
    return PRECISIONS[precision] if device.type == "cuda" else torch.float32


# --------------------------------------------------------------------------- data
def prepare_data(spec: dict, out_dir: Path) -> None:
    from kdbench.data.sources import load_training_source

    splits = load_training_source(spec["source"], data_dir=Path(spec["data_dir"]), seed=spec["seed"])
    manifest = {"source": spec["source"], "seed": spec["seed"], "splits": {}}
    for name, records in splits.items():
        path = out_dir / f"{name}.jsonl"
        write_jsonl_atomic(path, records_to_rows(records))
        seal(path)
        manifest["splits"][name] = {"file": path.name, "count": len(records), "sha256": sha256_file(path)}
        log(f"split {name}: {len(records)} records")
    write_result(out_dir / "manifest.json", "data", spec, manifest)


def prepare_eval_set(spec: dict, data_dir: Path, workflow_split: Path | None, out_jsonl: Path,
                     out_info: Path) -> None:
    from kdbench.evals import discover_evals, load_eval_set

    specs = discover_evals(spec.get("evals_root", "evals"))
    verified = verify_inputs(log, workflow_split=workflow_split)
    records, info = load_eval_set(specs[spec["eval_set"]], data_dir=data_dir, workflow_split=workflow_split,
                                  options=spec.get("options") or {})
    write_jsonl_atomic(out_jsonl, records_to_rows(records))
    outputs = {"records": seal(out_jsonl)}
    write_result(out_info, "eval_set", spec, {"info": info, "display_name": specs[spec["eval_set"]].display_name,
                                              "integrity": {**verified, "outputs": outputs}})
    log(f"eval set {spec['eval_set']}: {len(records)} records")


def build_tokenizer(spec: dict, train_jsonl: Path, out_dir: Path) -> None:
    tok = spec["tokenizer"]
    verify_inputs(log, train=train_jsonl if tok["kind"] == "bpe" else None)
    with atomic_directory(out_dir) as tmp:
        if tok["kind"] == "bpe":
            records = load_records(train_jsonl)
            texts = [t for r in records for t in (r.prompt, r.output)]
            train_bpe_tokenizer(texts, tok.get("vocab_size", 1000), tmp)
        else:
            load_tokenizer(tok["name_or_path"]).save_pretrained(str(tmp))
        seal(tmp)
    log(f"tokenizer written to {out_dir}")


# --------------------------------------------------------------------------- training jobs
def _sft(model, tokenizer, records: list[Record], train_cfg: dict, spec: dict, seed: int,
         device: torch.device, checkpoint_dir: Path | None, verified: dict, progress: str) -> dict[str, Any]:
    encoded = encode_records(tokenizer, records, **spec["lengths"])
    cfg = TrainConfig.from_dict(train_cfg)
    ctx = ScheduleContext(tuple(r.id for r in records), cfg.epochs, seed)
    method = SupervisedFineTuning(SupervisedFineTuning.Config())
    return train(model, method, encoded, ctx, cfg, pad_id=tokenizer.pad_token_id, seed=seed, device=device,
                 checkpoint_dir=checkpoint_dir, log=log,
                 checkpoint_identity=checkpoint_identity(run_id(spec), verified), progress=progress)


def _load_splits(paths: list[Path]) -> list[Record]:
    """The records of several data splits, in the order given (the teacher's pool, then train, ...)."""
    return [record for path in paths for record in load_records(path)]


def _split_inputs(paths: list[Path]) -> dict[str, Path]:
    return {f"data:{Path(p).stem}": Path(p) for p in paths}


def train_teacher(spec: dict, data: list[Path], tokenizer_dir: Path, out_dir: Path, metrics_path: Path) -> None:
    """SFT of the teacher on the splits of ``teacher.data`` (its pretraining pool and/or train)."""
    device = _device(spec)
    verified = verify_inputs(log, tokenizer=tokenizer_dir, **_split_inputs(data))
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(spec["model"], tokenizer, spec["seed"])
    log(f"teacher: {count_parameters(model) / 1e6:.2f}M parameters on {device}")
    metrics = _sft(model, tokenizer, _load_splits(data), spec["train"], spec, spec["seed"], device,
                   out_dir.with_name(out_dir.name + ".ckpt"), verified, "teacher SFT")
    with atomic_directory(out_dir) as tmp:
        save_model(model.float().cpu(), tokenizer, tmp)
        outputs = {"model": seal(tmp)}
    write_result(metrics_path, "train", spec, {"role": "teacher", "parameters": count_parameters(model),
                                               "precision": spec["train"]["precision"], "metrics": metrics,
                                               "integrity": {**verified, "outputs": outputs}})


def init_student(spec: dict, data: list[Path], tokenizer_dir: Path, out_dir: Path, metrics_path: Path) -> None:
    """The student every method starts from: built (or loaded pretrained), then an optional warm-up SFT on
    the splits of ``student.warmup_data``."""
    device = _device(spec)
    verified = verify_inputs(log, tokenizer=tokenizer_dir, **_split_inputs(data))
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(spec["model"], tokenizer, spec["seed"])
    log(f"student: {count_parameters(model) / 1e6:.2f}M parameters on {device}")
    metrics = None
    if spec.get("warmup"):
        metrics = _sft(model, tokenizer, _load_splits(data), spec["warmup"], spec, spec["seed"], device,
                       out_dir.with_name(out_dir.name + ".ckpt"), verified, "student warm-up")
    with atomic_directory(out_dir) as tmp:
        save_model(model.float().cpu(), tokenizer, tmp)
        outputs = {"model": seal(tmp)}
    write_result(metrics_path, "train", spec, {"role": "student_init", "parameters": count_parameters(model),
                                               "precision": (spec.get("warmup") or {}).get("precision", "fp32"),
                                               "metrics": metrics, "integrity": {**verified, "outputs": outputs}})


def profile_difficulty(spec: dict, train_jsonl: Path, student_dir: Path, teacher_dir: Path,
                       out_csv: Path, out_summary: Path) -> None:
    """Every difficulty signal of kdbench.difficulty for every training example, from the student the
    methods start from (and the teacher): one forward pass of both models, greedy generation, and
    ``profile.samples`` sampled generations."""
    import pandas as pd

    from kdbench.difficulty import response_statistics
    from kdbench.generation import generate
    from kdbench.metrics import rouge_l

    device = _device(spec["student"])
    verified = verify_inputs(log, train=train_jsonl, student=student_dir, teacher=teacher_dir)
    records = load_records(train_jsonl)
    tokenizer = load_tokenizer(student_dir)
    encoded = encode_records(tokenizer, records, **spec["student"]["lengths"])
    references = [list(r.references) for r in records]
    prompts = [r.prompt for r in records]
    prof = spec["profile"]
    timings = {}
    gpu_clock = GpuClock(device).start()
    t0 = time.perf_counter()
    student, teacher = load_model(student_dir), load_model(teacher_dir)
    signals = response_statistics(student, encoded, teacher=teacher, pad_id=tokenizer.pad_token_id,
                                  batch_size=prof["batch_size"], device=device, progress="student and teacher CE")
    timings["forward_s"] = time.perf_counter() - t0

    def student_rouge(decoding: str, seed: int) -> tuple[list[float], dict]:
        label = "greedy generation" if decoding == "greedy" else f"sampled generation {seed}/{prof['samples']}"
        settings = {"decoding": decoding, "max_new_tokens": prof["max_new_tokens"], "temperature": 1.0,
                    "top_k": 0, "top_p": 1.0, "no_repeat_ngram_size": prof["no_repeat_ngram_size"]}
        predictions, stats = generate(student, tokenizer, prompts, decoding=settings, seed=seed, device=device,
                                      max_prompt_tokens=spec["student"]["lengths"]["max_prompt_tokens"],
                                      batch_size=prof["batch_size"], progress=label)
        return rouge_l(predictions, references), stats

    t0 = time.perf_counter()
    signals["student_rouge_l"], gen_stats = student_rouge("greedy", 0)
    timings["greedy_generation_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if prof["samples"]:
        draws = [student_rouge("sample", seed)[0] for seed in range(1, prof["samples"] + 1)]
        signals["student_rouge_l_sampled"] = np.mean(draws, axis=0)
    timings["sampled_generation_s"] = time.perf_counter() - t0
    gpu = gpu_clock.stop()
    frame = pd.DataFrame({"id": [r.id for r in records], **signals})
    for column, meta_key in (("true_difficulty", "difficulty"), ("family", "family"), ("noisy", "noisy")):
        if all(meta_key in r.meta for r in records):
            frame[column] = [r.meta[meta_key] for r in records]
    write_text_atomic(out_csv, frame.to_csv(index=False))
    outputs = {"difficulty": seal(out_csv)}
    # Tokens through a forward pass: the CE pass reads every prompt+response token once per model;
    # generation reads the (truncated) prompts and then one token per new token, once per draw.
    ce_tokens = sum(len(e.input_ids) for e in encoded)
    tokens = {"forward": 2 * ce_tokens,
              "generation": (1 + prof["samples"]) * (gen_stats["prompt_tokens"] + gen_stats["new_tokens"])}
    wall = sum(timings.values())
    write_result(out_summary, "profile", spec, {
        "n_examples": len(frame), "timings": timings, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
        "tokens": tokens, "tokens_per_s": sum(tokens.values()) / wall if wall > 0 else None,
        "dtype": str(teacher.dtype).removeprefix("torch."), "device": str(device), **gpu,
        "generation": gen_stats, "integrity": {**verified, "outputs": outputs},
        "means": {c: float(frame[c].mean()) for c in signals}})


def build_teacher_cache(spec: dict, train_jsonl: Path, teacher_dir: Path, tokenizer_dir: Path,
                        out_tensors: Path, out_meta: Path) -> None:
    from kdbench.teacher_cache import build_cache, cache_key

    device = _device(spec["teacher"])
    cache = spec["cache"]
    verified = verify_inputs(log, train=train_jsonl, teacher=teacher_dir, tokenizer=tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    encoded = encode_records(tokenizer, load_records(train_jsonl), **spec["teacher"]["lengths"])
    dtype = _teacher_dtype(spec["teacher"]["train"]["precision"], device)
    key = cache_key(teacher_dir, encoded, cache["mode"], cache["storage"], cache["top_k"], dtype)
    teacher = load_model(teacher_dir, dtype)
    tmp = out_tensors.with_name(f".{out_tensors.name}.tmp")
    gpu_clock = GpuClock(device).start()
    meta = build_cache(teacher, encoded, pad_id=tokenizer.pad_token_id, device=device,
                       batch_size=cache["batch_size"], mode=cache["mode"], storage=cache["storage"],
                       top_k=cache["top_k"], key=key, out_tensors=tmp, out_meta=out_meta, progress="teacher cache")
    gpu = gpu_clock.stop()
    tmp.replace(out_tensors)
    outputs = {"cache": seal(out_tensors)}
    tokens = sum(len(e.input_ids) for e in encoded)
    write_result(out_meta, "teacher_cache", spec, {
        "cache": meta, "wall_s": meta["build_s"], "tokens": tokens,
        "tokens_per_s": tokens / meta["build_s"] if meta["build_s"] > 0 else None, "peak_rss_mb": peak_rss_mb(),
        **gpu, "integrity": {**verified, "outputs": outputs}})
    log(f"teacher cache: {meta['n_examples']} examples, {meta['bytes'] / 2**20:.1f} MiB, {meta['build_s']:.1f}s")


def load_profile(path: Path) -> "pd.DataFrame":
    import pandas as pd    # only jobs that read the difficulty profile pay for pandas

    frame = pd.read_csv(path, dtype={"id": str})
    return frame.set_index("id")


def distill(spec: dict, run: str, methods_root: Path, train_jsonl: Path, student_dir: Path,
            teacher_dir: Path | None, profile_csv: Path | None, out_dir: Path, metrics_path: Path,
            cache_tensors: Path | None = None, cache_meta: Path | None = None) -> None:
    device, rank = _init_distributed(_device(spec["student"]))
    seed = spec["seed"]
    verified = verify_inputs(log, train=train_jsonl, student=student_dir, teacher=teacher_dir, profile=profile_csv,
                             cache=cache_tensors)
    tokenizer = load_tokenizer(student_dir)
    records = load_records(train_jsonl)
    encoded = encode_records(tokenizer, records, **spec["student"]["lengths"])
    if run == SFT_RUN:
        method = SupervisedFineTuning(SupervisedFineTuning.Config())
    else:
        identity = spec["run"]
        methods = discover_methods(methods_root)
        info = methods[identity["method"]]
        run_spec = RunSpec(run, identity["method"], identity["variant"], run, identity["version"],
                           identity["hparams"], info.cls.needs_teacher, info.cls.needs_profile, 0)
        method = instantiate(run_spec, methods)
    cfg = TrainConfig.from_dict(spec["training"]["train"])
    difficulty = load_profile(profile_csv) if method.needs_profile else None
    if difficulty is not None:
        missing = set(r.id for r in records) - set(difficulty.index)
        if missing:
            raise ResultError(f"{profile_csv}: no difficulty for {len(missing)} training examples "
                              f"(e.g. {sorted(missing)[:3]}); re-run profile_difficulty")
    ctx = ScheduleContext(tuple(r.id for r in records), cfg.epochs, seed, difficulty)
    teacher = None
    # The teacher runs in its own training precision, live or cached, so both give the same logits.
    teacher_dtype = _teacher_dtype(spec["teacher"]["train"]["precision"], device) if method.needs_teacher else None
    if method.needs_teacher and cache_tensors is not None:
        from kdbench.teacher_cache import CachedTeacher, cache_key

        cache = spec["training"]["teacher_cache"]
        expected = cache_key(teacher_dir, encoded, cache["mode"], cache["storage"], cache["top_k"], teacher_dtype)
        teacher = CachedTeacher(cache_tensors, read_result(cache_meta, "teacher_cache")["cache"], expected)
    elif method.needs_teacher:
        teacher = LiveTeacher(load_model(teacher_dir), device, teacher_dtype)
    student = load_model(student_dir)
    metrics = train(student, method, encoded, ctx, cfg, pad_id=tokenizer.pad_token_id, seed=seed, device=device,
                    teacher=teacher, checkpoint_dir=out_dir.with_name(out_dir.name + ".ckpt"), log=log,
                    checkpoint_identity=checkpoint_identity(run_id(spec), verified),
                    progress=f"distill {run} seed {seed}")
    if rank != 0:
        return
    with atomic_directory(out_dir) as tmp:
        save_model(student.float().cpu(), tokenizer, tmp)
        outputs = {"model": seal(tmp)}
    write_result(metrics_path, "train", spec, {"role": "distill", "run": run, "seed": seed,
                                               "precision": cfg.precision, "metrics": metrics,
                                               "teacher_source": type(teacher).__name__ if teacher else None,
                                               "integrity": {**verified, "outputs": outputs}})


# --------------------------------------------------------------------------- evaluation
def evaluate(spec: dict, model_dir: Path, eval_jsonl: Path, eval_seeds: list[int], model_label: str,
             out_dir: Path, device_name: str = "auto") -> None:
    """Generate and score once per eval seed; writes es<seed>/predictions.jsonl and es<seed>/scores.json.
    One job covers every seed of a (model, eval set) so the model is loaded once."""
    from kdbench.generation import generate
    from kdbench.metrics import exact_match, rouge_l

    device = resolve_device(device_name)
    verified = verify_inputs(log, model=model_dir, eval_set=eval_jsonl)
    records = load_records(eval_jsonl)
    decoding = spec["decoding"]
    if decoding["max_examples"]:
        records = records[:decoding["max_examples"]]
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    references = [list(r.references) for r in records]
    for eval_seed in eval_seeds:
        predictions, gen_stats = generate(model, tokenizer, [r.prompt for r in records],
                                          max_prompt_tokens=spec["lengths"]["max_prompt_tokens"],
                                          decoding=decoding, seed=eval_seed, batch_size=decoding["batch_size"],
                                          device=device, progress=f"generation, eval seed {eval_seed}")
        t0 = time.perf_counter()
        rouge = rouge_l(predictions, references)
        em = exact_match(predictions, references)
        scoring_s = time.perf_counter() - t0
        rows = [{"id": r.id, "prediction": p, "references": list(r.references), "rouge_l": s, "exact_match": e,
                 **({"true_difficulty": r.meta["difficulty"]} if "difficulty" in r.meta else {}),
                 **({"family": r.meta["family"]} if "family" in r.meta else {})}
                for r, p, s, e in zip(records, predictions, rouge, em)]
        seed_dir = out_dir / f"es{eval_seed}"
        write_jsonl_atomic(seed_dir / "predictions.jsonl", rows)
        n = len(rows)
        write_result(seed_dir / "scores.json", "scores", {**spec, "eval_seed": eval_seed}, {
            "model": model_label, "eval_set": spec["eval_set"], "eval_seed": eval_seed, "n": n,
            "rouge_l": sum(rouge) / n, "exact_match": sum(em) / n,
            "predictions_file": "predictions.jsonl", "predictions_sha256": sha256_file(seed_dir / "predictions.jsonl"),
            "generation": gen_stats, "scoring_s": scoring_s, "device": str(device),
            "dtype": str(model.dtype).removeprefix("torch."), "peak_rss_mb": peak_rss_mb(), "integrity": verified})
        log(f"{model_label} on {spec['eval_set']} seed {eval_seed}: Rouge-L {sum(rouge) / n:.2f} over {n}")


def read_predictions(path: Path, expected: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if expected is not None and len(rows) != expected:
        raise ResultError(f"{path}: {len(rows)} predictions but the scores file says {expected}")
    return rows
