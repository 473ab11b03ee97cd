"""Worker for test_ddp.py: distillation on a tiny model under torchrun (gloo) or as one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from kdbench.batching import encode_records
from kdbench.data import record_from_json
from kdbench.data.synthetic import generate_examples
from kdbench.methods import ScheduleContext, discover_methods, instantiate, resolve_runs
from kdbench.models import build_model, load_tokenizer, train_bpe_tokenizer
from kdbench.train import LiveTeacher, TrainConfig, train

ARCH = {"init": "scratch", "architecture": {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32,
                                            "intermediate_size": 64, "num_attention_heads": 2,
                                            "num_key_value_heads": 2, "max_position_embeddings": 160}}


def main(out: Path, tok_dir: Path, micro_batch: int) -> None:
    distributed = "WORLD_SIZE" in __import__("os").environ
    if distributed:
        dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rows = [record_from_json(r, f"syn:{i}") for i, r in enumerate(generate_examples("train", 40, seed=4))]
    if not (tok_dir / "tokenizer.json").exists():
        train_bpe_tokenizer([t for r in rows for t in (r.prompt, r.output)], 320, tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    encoded = encode_records(tokenizer, rows, max_prompt_tokens=96, max_length=160)
    methods = discover_methods("methods")
    method = instantiate(resolve_runs({"methods": {"include": ["vanilla_kd"]}}, methods)["vanilla_kd-fkl"], methods)
    cfg = TrainConfig(epochs=2, lr=3e-3, global_batch_size=8, micro_batch_size=micro_batch, log_every=1)
    student = build_model(ARCH, tokenizer, 0)
    teacher = LiveTeacher(build_model(ARCH, tokenizer, 1), torch.device("cpu"), torch.float32)
    metrics = train(student, method, encoded, ScheduleContext(tuple(r.id for r in rows), cfg.epochs, 9), cfg,
                    pad_id=tokenizer.pad_token_id, seed=9, device=torch.device("cpu"), teacher=teacher,
                    log=lambda _: None)
    if not distributed or dist.get_rank() == 0:
        torch.save(student.state_dict(), out.with_suffix(".pt"))
        out.write_text(json.dumps({"losses": [h["loss"] for h in metrics["history"]], "steps": metrics["steps"],
                                   "world_size": metrics["world_size"], "examples": metrics["examples"],
                                   "accumulation": metrics["accumulation_steps"]}))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
