"""Load, validate and resolve a workflow config; derive the per-job specs whose hash is the run id."""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.data.sources import normalize_source_cfg
from kdbench.errors import ConfigError, TrainingError
from kdbench.io import sha256_json
from kdbench.schema import load_yaml, validate

EVAL_DEFAULTS = {"decoding": "sample", "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                 "no_repeat_ngram_size": 6, "max_new_tokens": None, "batch_size": 32,
                 "max_examples": None, "set_options": {}}
PROFILE_DEFAULTS = {"batch_size": 32, "max_new_tokens": None, "no_repeat_ngram_size": 6, "samples": 4}
TABLE_DEFAULTS = {"baseline": "vanilla_kd", "output_dir": "paper_tables", "significance_level": 0.05,
                  "bootstrap_samples": 2000}


# --------------------------------------------------------------------------- training settings
# Every training section (teacher, student warm-up, distillation) resolves to these; the defaults are
# written here once, and a config's training section only states what differs.
@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    lr_min: float = 0.0
    lr_schedule: str = "cosine"          # cosine | constant
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    global_batch_size: int = 32          # examples per optimiser step, whatever the device count
    micro_batch_size: int = 32           # examples per forward pass on one device
    precision: str = "fp32"              # fp32 | bf16 | fp16
    log_every: int = 10
    checkpoint_every: int = 50           # optimiser steps between checkpoints; 0 = never

    @classmethod
    def from_dict(cls, section: dict) -> "TrainConfig":
        return cls(**section)

    def accumulation_steps(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise TrainingError(f"training.global_batch_size={self.global_batch_size} is not a multiple of "
                                f"micro_batch_size ({self.micro_batch_size}) x devices ({world_size})")
        return self.global_batch_size // per_step


TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


# A mapping whose kind changes (a different data source, model init or tokenizer kind) is replaced
# whole by an override file: its old keys belong to the other kind.
DISCRIMINATORS = ("source", "init", "kind")


def _kind_changes(base: dict, override: dict) -> bool:
    return any(k in base and k in override and base[k] != override[k] for k in DISCRIMINATORS)


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _kind_changes(merged[key], value):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _train_section(section: dict | None) -> dict | None:
    return None if section is None else {**TRAIN_DEFAULTS, **section}


def _check_batch_sizes(cfg: dict, source: str) -> None:
    """Each optimiser step's global batch must split into whole micro-batches on every process."""
    devices = f"{cfg['training']['devices']} process(es) (training.devices)"
    sections = [("teacher.train", cfg["teacher"]["train"], 1, "1 process"),
                ("student.warmup", cfg["student"]["warmup"], 1, "1 process"),
                ("training.train", cfg["training"]["train"], cfg["training"]["devices"], devices)]
    if cfg["training"].get("sft_train"):
        sections.append(("training.sft_train", run_train_section(cfg, cfg["training"]["sft_train"]),
                         cfg["training"]["devices"], devices))
    for name, settings in (cfg["methods"].get("settings") or {}).items():
        if (settings or {}).get("train"):
            sections.append((f"methods.settings.{name}.train", run_train_section(cfg, settings["train"]),
                             cfg["training"]["devices"], devices))
    for key, section, processes, label in sections:
        if section is not None and section["global_batch_size"] % (section["micro_batch_size"] * processes):
            raise ConfigError(f"{source}: config key {key}: global_batch_size {section['global_batch_size']} is not a "
                              f"multiple of micro_batch_size {section['micro_batch_size']} x {label}")


# Architecture keys that must agree, under each name transformers' model types use for them.
ARCH_ALIASES = {"width": ("hidden_size", "n_embd", "d_model"), "heads": ("num_attention_heads", "n_head"),
                "kv_heads": ("num_key_value_heads",), "positions": ("max_position_embeddings", "n_positions")}


def _check_architectures(cfg: dict, source: str) -> None:
    """A from-scratch model's shape must be buildable and hold the longest sequence a job feeds it: checked
    here, naming the key, instead of a transformers traceback jobs later."""
    longest = max(cfg["data"]["max_length"], cfg["data"]["max_prompt_tokens"]
                  + max(cfg["evaluation"]["max_new_tokens"], cfg["profile"]["max_new_tokens"]))
    for section in ("teacher", "student"):
        model = cfg[section]["model"]
        if model["init"] != "scratch":
            continue
        arch, where = model["architecture"], f"{section}.model.architecture"
        given = {}
        for kind, names in ARCH_ALIASES.items():
            for name in names:
                if name in arch:
                    value = arch[name]
                    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                        raise ConfigError(f"{source}: config key {where}.{name} must be a positive integer, "
                                          f"got {value!r}")
                    given[kind] = (f"{where}.{name}", value)
        width, heads, kv, positions = (given.get(k) for k in ARCH_ALIASES)
        if width and heads and "head_dim" not in arch and width[1] % heads[1]:
            raise ConfigError(f"{source}: config key {width[0]} = {width[1]} is not a multiple of {heads[0]} = "
                              f"{heads[1]}: every attention head needs the same number of dimensions")
        if heads and kv and heads[1] % kv[1]:
            raise ConfigError(f"{source}: config key {heads[0]} = {heads[1]} is not a multiple of {kv[0]} = {kv[1]}")
        if positions and positions[1] < longest:
            raise ConfigError(f"{source}: config key {positions[0]} = {positions[1]} is shorter than the longest "
                              f"sequence the jobs feed the model ({longest}: data.max_length, or "
                              "data.max_prompt_tokens + evaluation/profile max_new_tokens)")


def resolve(config: dict, source: str = "config") -> dict:
    """Validate ``config`` (naming ``source`` in errors) and fill every default explicitly."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    validate(config, "config", source)
    cfg = copy.deepcopy(config)
    cfg.setdefault("data_dir", "../shared/data")
    cfg.setdefault("device", "auto")
    cfg["teacher"]["train"] = _train_section(cfg["teacher"]["train"])
    cfg["teacher"].setdefault("seed", cfg["seed"])
    cfg["teacher"].setdefault("data", ["train"])
    cfg["student"].setdefault("warmup_data", ["train"])
    cfg["student"]["warmup"] = _train_section(cfg["student"].get("warmup"))
    cfg["student"].setdefault("seed", cfg["seed"])
    cfg["training"]["train"] = _train_section(cfg["training"]["train"])
    cache = {"mode": "live", "storage": "fp32", "top_k": 64, "batch_size": 64, **cfg["training"].get("teacher_cache", {})}
    cfg["training"]["teacher_cache"] = cache
    cfg["training"].setdefault("devices", 1)
    cfg["profile"] = {**PROFILE_DEFAULTS, **cfg["profile"]}
    cfg["evaluation"] = {**EVAL_DEFAULTS, **cfg["evaluation"]}
    cfg["tables"] = {**TABLE_DEFAULTS, **cfg["tables"]}
    cfg["methods"].setdefault("root", "methods")
    _check_batch_sizes(cfg, source)
    data = cfg["data"]
    if data["max_prompt_tokens"] >= data["max_length"]:
        raise ConfigError(f"{source}: data.max_prompt_tokens ({data['max_prompt_tokens']}) must be below "
                          f"data.max_length ({data['max_length']})")
    if cfg["evaluation"]["max_new_tokens"] is None:
        cfg["evaluation"]["max_new_tokens"] = data["max_length"] - data["max_prompt_tokens"]
    if cfg["profile"]["max_new_tokens"] is None:
        cfg["profile"]["max_new_tokens"] = cfg["evaluation"]["max_new_tokens"]
    _check_architectures(cfg, source)
    try:
        normalize_source_cfg(cfg["data"]["source"], "config key data.source")   # checked, not rewritten
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for section, key in (("teacher", "model"), ("student", "model")):
        if cfg[section][key]["init"] == "pretrained" and cfg["tokenizer"]["kind"] == "bpe":
            raise ConfigError(f"{source}: {section}.model.init is 'pretrained' but tokenizer.kind is 'bpe'; "
                              "a pretrained model needs its own tokenizer (tokenizer.kind: pretrained)")
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str | os.PathLike] = ()) -> dict:
    config = load_yaml(path)
    sources = [str(path)]
    for extra in overrides:
        config = deep_merge(config, load_yaml(extra))
        sources.append(str(extra))
    return resolve(config, " + ".join(sources))


# --------------------------------------------------------------------------- profiles
# The Snakefile's `configfile:`. `snakemake --configfile config/<x>.yaml` merges config/<x>.yaml over it, so
# every profile, overlay or complete, means "this file over config/config.yaml".
WORKFLOW_CONFIG = Path("config/config.yaml")
DEFAULT_PROFILE = "default"


def shipped_profiles(config_dir: Path = WORKFLOW_CONFIG.parent) -> list[str]:
    return sorted(DEFAULT_PROFILE if p == WORKFLOW_CONFIG.name else p.removesuffix(".yaml")
                  for p in os.listdir(config_dir) if p.endswith(".yaml")) if config_dir.is_dir() else []


def profile_file(profile: str | os.PathLike) -> Path:
    """A profile by name ('smoke' is config/smoke.yaml, 'default' config/config.yaml) or by its file."""
    text = str(profile)
    if text == DEFAULT_PROFILE:
        return WORKFLOW_CONFIG
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    named = WORKFLOW_CONFIG.parent / f"{text}.yaml"
    if named.is_file():
        return named
    raise ConfigError(f"no profile '{text}': no file {named}; profiles here: {', '.join(shipped_profiles()) or 'none'} "
                      "(or give a config file's path)")


def profile_files(profile: str | os.PathLike, overrides: list[str | os.PathLike] = (),
                  standalone: bool = False) -> list[Path]:
    """The files, in merge order, of the config `snakemake --configfile <profile> <overrides>` runs
    (``standalone``: the profile alone, as with Snakemake's --replace-workflow-config)."""
    path = profile_file(profile)
    is_base = path.resolve() == WORKFLOW_CONFIG.resolve() if WORKFLOW_CONFIG.exists() else False
    base = [] if standalone or is_base else [WORKFLOW_CONFIG]
    return [*base, path, *(Path(p) for p in overrides)]


def load_profile(profile: str | os.PathLike, overrides: list[str | os.PathLike] = (),
                 standalone: bool = False) -> dict:
    """The resolved config that the workflow runs for ``profile`` (see :func:`profile_files`)."""
    files = profile_files(profile, overrides, standalone)
    return load_config(files[0], files[1:])


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON-like values differ ('train.lr', 'data.source.sizes.train')."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [path for key in sorted(set(a) | set(b), key=str)
                for path in differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".") or "(value)"]


def tables_dir(cfg: dict) -> Path:
    return Path(cfg["tables"]["output_dir"]) / cfg["name"]


def results_dir(cfg: dict) -> Path:
    return Path("results") / cfg["name"]


# --------------------------------------------------------------------------- job specs
# Each spec holds everything a job's result depends on; its hash is the job's run id, and
# Snakemake re-runs a job when its spec (a rule param) changes.
def data_spec(cfg: dict) -> dict:
    return {"seed": cfg["seed"], "source": cfg["data"]["source"], "data_dir": cfg["data_dir"]}


def tokenizer_spec(cfg: dict) -> dict:
    return {"data": data_spec(cfg), "tokenizer": cfg["tokenizer"]}


def _lengths(cfg: dict) -> dict:
    return {"max_prompt_tokens": cfg["data"]["max_prompt_tokens"], "max_length": cfg["data"]["max_length"]}


def teacher_spec(cfg: dict) -> dict:
    return {"tokenizer": tokenizer_spec(cfg), "lengths": _lengths(cfg), **cfg["teacher"], "device": cfg["device"]}


def student_init_spec(cfg: dict) -> dict:
    return {"tokenizer": tokenizer_spec(cfg), "lengths": _lengths(cfg), **cfg["student"], "device": cfg["device"]}


def profile_spec(cfg: dict) -> dict:
    return {"student": student_init_spec(cfg), "teacher": teacher_spec(cfg), "profile": cfg["profile"]}


def teacher_cache_spec(cfg: dict) -> dict:
    return {"teacher": teacher_spec(cfg), "cache": cfg["training"]["teacher_cache"]}


def run_train_section(cfg: dict, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``training.train`` with a run's optimiser overrides (methods.settings.<m>.train, training.sft_train)."""
    return {**cfg["training"]["train"], **(overrides or {})}


def distill_spec(cfg: dict, run: dict[str, Any], seed: int) -> dict:
    """``run`` is RunSpec.identity() (method, variant, version, hparams[, train]) or the SFT reference."""
    training = {k: v for k, v in cfg["training"].items() if k != "sft_train"}
    training["train"] = run_train_section(cfg, run.get("train"))
    spec = {"student": student_init_spec(cfg), "training": training, "run": run, "seed": seed}
    if run.get("needs_teacher", True):
        spec["teacher"] = teacher_spec(cfg)
    if run.get("needs_profile", False):
        spec["profile"] = profile_spec(cfg)
    return spec


def eval_spec(cfg: dict, eval_set: str) -> dict:
    keys = ("decoding", "temperature", "top_k", "top_p", "no_repeat_ngram_size", "max_new_tokens",
            "batch_size", "max_examples")
    return {"eval_set": eval_set, "options": cfg["evaluation"]["set_options"].get(eval_set, {}),
            "decoding": {k: cfg["evaluation"][k] for k in keys}, "lengths": _lengths(cfg)}


def run_id(spec: dict) -> str:
    return sha256_json(spec)[:16]


def project_root() -> Path:
    return Path.cwd()
