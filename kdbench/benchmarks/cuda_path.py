"""Run the workflow's jobs in sequence on a GPU (bf16) and record timings and CUDA memory.

    python -m kdbench.benchmarks.cuda_path --config config/config.yaml --work /tmp/kd --out cuda.json

It calls the same stage functions as the Snakemake rules (no Snakemake needed on the GPU host) for
the teacher, the student init, the profile, the teacher cache, a few distillation runs with the
live teacher and with the cache, and evaluation, then writes one JSON with every result's timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kdbench import stages
from kdbench.config import (data_spec, distill_spec, eval_spec, load_config, profile_spec, student_init_spec,
                            teacher_cache_spec, teacher_spec, tokenizer_spec)
from kdbench.io import read_json
from kdbench.methods import discover_methods, resolve_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--overrides", nargs="*", default=[])
    parser.add_argument("--work", default="results/cuda_path")
    parser.add_argument("--runs", nargs="*", default=["vanilla_kd-fkl", "pocl-fkl", "taid"])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark checks the GPU path")
    cfg = load_config(args.config, args.overrides)
    cfg["device"] = "cuda"
    for section in (cfg["teacher"]["train"], cfg["training"]["train"], cfg["student"]["warmup"]):
        section["precision"] = args.precision
    work = Path(args.work)
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "precision": args.precision,
                    "steps": {}}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        fn(*a)
        report["steps"][name] = {"wall_s": time.perf_counter() - t0}
        print(f"{name}: {report['steps'][name]['wall_s']:.1f}s", flush=True)

    data = work / "data"
    timed("prepare_data", stages.prepare_data, data_spec(cfg), data)
    timed("tokenizer", stages.build_tokenizer, tokenizer_spec(cfg), data / "train.jsonl", work / "tokenizer")
    timed("teacher_sft", stages.train_teacher, teacher_spec(cfg), data / "train.jsonl", work / "tokenizer",
          work / "teacher/model", work / "teacher/train.json")
    timed("student_init", stages.init_student, student_init_spec(cfg), data / "train.jsonl", work / "tokenizer",
          work / "student_init/model", work / "student_init/train.json")
    timed("profile", stages.profile_difficulty, profile_spec(cfg), data / "train.jsonl", work / "student_init/model",
          work / "teacher/model", work / "profile/difficulty.csv", work / "profile/summary.json")
    cfg["training"]["teacher_cache"]["mode"] = "dense"
    timed("teacher_cache", stages.build_teacher_cache, teacher_cache_spec(cfg), data / "train.jsonl",
          work / "teacher/model", work / "tokenizer", work / "teacher/cache.safetensors", work / "teacher/cache.json")
    runs = resolve_runs(cfg, discover_methods(cfg["methods"]["root"]))
    for run in args.runs:
        spec = runs[run]
        identity = {**spec.identity(), "needs_teacher": spec.needs_teacher, "needs_profile": spec.needs_profile}
        for source in ("live", "cache"):
            out = work / "runs" / f"{run}-{source}"
            cache = (work / "teacher/cache.safetensors", work / "teacher/cache.json") if source == "cache" else (None, None)
            timed(f"distill:{run}:{source}", stages.distill, distill_spec(cfg, identity, 1), run,
                  Path(cfg["methods"]["root"]), data / "train.jsonl", work / "student_init/model",
                  work / "teacher/model", work / "profile/difficulty.csv", out / "model", out / "train.json", *cache)
            metrics = read_json(out / "train.json")["metrics"]
            report["steps"][f"distill:{run}:{source}"].update(
                {k: metrics.get(k) for k in ("wall_s", "cuda_time_s", "cuda_peak_memory_mb", "tokens_per_s",
                                            "teacher_forward_passes", "steps", "final_loss")})
    for es in ("synthetic_test",):
        stages.prepare_eval_set({**eval_spec(cfg, es), "data_dir": cfg["data_dir"]}, Path(cfg["data_dir"]),
                                data / "test.jsonl", work / f"evalsets/{es}.jsonl", work / f"evalsets/{es}.json")
        timed(f"evaluate:teacher:{es}", stages.evaluate, eval_spec(cfg, es), work / "teacher/model",
              work / f"evalsets/{es}.jsonl", cfg["evaluation"]["seeds"], "teacher", work / f"eval/teacher/{es}", "cuda")
        scores = read_json(work / f"eval/teacher/{es}/es{cfg['evaluation']['seeds'][0]}/scores.json")
        report["steps"][f"evaluate:teacher:{es}"].update({"rouge_l": scores["rouge_l"], "generation": scores["generation"]})
    for name in ("teacher", "student_init"):
        metrics = read_json(work / name / "train.json")["metrics"] or {}
        report["steps"]["teacher_sft" if name == "teacher" else "student_init"].update(
            {k: metrics.get(k) for k in ("cuda_time_s", "cuda_peak_memory_mb", "tokens_per_s", "steps", "final_loss")})
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
