"""``kdbench new-method`` (copy methods/_template) and ``kdbench check-method`` (a tiny end-to-end run)."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kdbench.errors import ConfigError, MethodError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# What methods/_template leaves for the author to fill in: its TODO markers, the scaffold's name tokens and
# the README's placeholder reference.
PLACEHOLDER = re.compile(r"\bTODO\b|__(?:NAME|CLASS|DISPLAY)__|<repo@commit>")
DESCRIBED_FILES = ("method.yaml", "README.md", "method.py")


def template_placeholders(directory: Path) -> list[str]:
    """'file:line: text' for every template placeholder still in a method's files."""
    found = []
    for name in DESCRIBED_FILES:
        path = directory / name
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if PLACEHOLDER.search(line):
                found.append(f"{path}:{lineno}: {line.strip()[:100]}")
    return found


def new_method(name: str, methods_root: Path) -> Path:
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"method name '{name}' must match {NAME_PATTERN.pattern} (lowercase, digits, underscores)")
    template = methods_root / "_template"
    target = methods_root / name
    if target.exists():
        raise MethodError(f"{target}: already exists")
    if not template.is_dir():
        raise MethodError(f"{template}: template folder not found")
    class_name = "".join(part.capitalize() for part in name.split("_"))
    display = name.replace("_", "-").upper()
    with tempfile.TemporaryDirectory(dir=methods_root) as tmp:
        staging = Path(tmp) / name
        shutil.copytree(template, staging, ignore=shutil.ignore_patterns("__pycache__"))
        for path in staging.iterdir():
            text = path.read_text(encoding="utf-8")
            text = text.replace("__NAME__", name).replace("__CLASS__", class_name).replace("__DISPLAY__", display)
            path.write_text(text, encoding="utf-8")
        staging.rename(target)
    return target


def check_method(name: str, methods_root: Path, seed: int = 0) -> dict[str, Any]:
    """Run every variant of a method on a tiny model and data; raise on any contract violation."""
    import pandas as pd

    from kdbench.batching import encode_records
    from kdbench.data import record_from_json
    from kdbench.data.synthetic import generate_examples
    from kdbench.methods import (MethodInfo, ScheduleContext, discover_methods, instantiate, resolve_runs)
    from kdbench.models import build_model, load_tokenizer, train_bpe_tokenizer
    from kdbench.train import LiveTeacher, TrainConfig, train

    methods = discover_methods(methods_root)
    if name not in methods:
        raise MethodError(f"{methods_root / name}: no such method (found: {', '.join(methods)})")
    info: MethodInfo = methods[name]
    runs = resolve_runs({"methods": {"include": [name]}}, methods)
    rows = [record_from_json(r, f"synthetic:{i}") for i, r in enumerate(generate_examples("train", 24, seed))]
    report: dict[str, Any] = {"method": name, "directory": str(info.directory), "variants": {},
                              "placeholders": template_placeholders(info.directory)}
    with tempfile.TemporaryDirectory() as tmp:
        train_bpe_tokenizer([t for r in rows for t in (r.prompt, r.output)], 320, tmp)
        tokenizer = load_tokenizer(tmp)
    arch = {"init": "scratch", "architecture": {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2,
                                                "n_positions": 160}}
    encoded = encode_records(tokenizer, rows, max_prompt_tokens=96, max_length=160)
    generator = torch.Generator().manual_seed(seed)
    profile = pd.DataFrame({"student_ce": torch.rand(len(rows), generator=generator).tolist(),
                            "student_rouge_l": (100 * torch.rand(len(rows), generator=generator)).tolist(),
                            "teacher_ce": torch.rand(len(rows), generator=generator).tolist()},
                           index=[r.id for r in rows])
    cfg = TrainConfig(epochs=2, lr=1e-3, global_batch_size=8, micro_batch_size=8, log_every=1)
    for run_name, run in runs.items():
        t0 = time.perf_counter()
        method = instantiate(run, methods)
        ctx = ScheduleContext(tuple(r.id for r in rows), cfg.epochs, seed, profile if method.needs_profile else None)
        first = method.schedule(ctx)
        again = instantiate(run, methods).schedule(ctx)
        if first != again:
            raise MethodError(f"{info.directory}: schedule of '{run_name}' is not deterministic for a fixed seed")
        teacher = LiveTeacher(build_model(arch, tokenizer, seed + 1), torch.device("cpu"), torch.float32) \
            if method.needs_teacher else None
        student = build_model(arch, tokenizer, seed)
        metrics = train(student, method, encoded, ctx, cfg, pad_id=tokenizer.pad_token_id, seed=seed,
                        device=torch.device("cpu"), teacher=teacher, log=lambda _: None)
        state = method.state_dict()
        instantiate(run, methods).load_state_dict(state)
        report["variants"][run_name] = {"steps": metrics["steps"], "final_loss": metrics["final_loss"],
                                        "examples_seen": metrics["examples"], "stages": len(first.stages),
                                        "seconds": round(time.perf_counter() - t0, 2)}
    return report
