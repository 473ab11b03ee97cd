"""The method plug-in contract: discovery of ``methods/<name>/``, the hook interface, run resolution.

A method directory holds ``method.yaml`` (schema ``kdbench/schemas/method.schema.yaml``),
``method.py`` (a subclass of :class:`Method` named by ``class_name``) and ``README.md``.
Folders whose name starts with ``_`` (such as ``_template``) are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from kdbench.errors import ConfigError, MethodError
from kdbench.schema import load_yaml, validate

REQUIRED_FILES = ("method.yaml", "method.py", "README.md")
SFT_RUN = "sft"          # the reference student trained on the ground truth only
TEACHER_RUN = "teacher"  # the reference row for the teacher itself


# --------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class EpochPlan:
    """One pass: which training examples (positions in the train split) and the loss settings for it."""

    indices: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: tuple[EpochPlan, ...]


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    # POCL trains each stage as a separate run: new optimiser, LR schedule restarted.
    restart_optimizer_per_stage: bool = False

    @property
    def epochs(self) -> list[EpochPlan]:
        return [e for s in self.stages for e in s.epochs]

    def examples_seen(self) -> int:
        return sum(len(e.indices) for e in self.epochs)


@dataclass(frozen=True)
class ScheduleContext:
    """What a method may look at to plan its curriculum."""

    example_ids: tuple[str, ...]
    epochs: int                       # the shared training budget in full-data epochs
    seed: int
    difficulty: Any = None            # pandas DataFrame indexed by example id (profile), or None

    @property
    def n_examples(self) -> int:
        return len(self.example_ids)

    def composition(self, indices) -> dict[str, Any]:
        """What a subset of the training examples holds, from the profile's ground-truth columns (synthetic
        data): its mean true level and its count per task family. Empty without a profile or those columns."""
        if self.difficulty is None:
            return {}
        rows = self.difficulty.loc[[self.example_ids[i] for i in indices]]
        out: dict[str, Any] = {}
        if "true_difficulty" in rows.columns:
            out["mean_true_level"] = float(rows["true_difficulty"].mean())
        if "family" in rows.columns:
            out["families"] = {str(k): int(v) for k, v in sorted(rows["family"].value_counts().items())}
        return out


@dataclass(frozen=True)
class StepInfo:
    step: int                 # optimiser steps done before this one
    total_steps: int
    stage: int
    num_stages: int
    epoch: int                # global epoch index
    params: dict[str, Any]    # the current EpochPlan's params

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total_steps)


def full_data_schedule(ctx: ScheduleContext, params: dict[str, Any] | None = None) -> Schedule:
    """Every example, every epoch: the schedule of vanilla KD and SFT."""
    every = tuple(range(ctx.n_examples))
    plan = EpochPlan(every, dict(params or {}))
    return Schedule((Stage("all", tuple(plan for _ in range(ctx.epochs))),))


# --------------------------------------------------------------------------- method base
@dataclass
class LossConfig:
    """Loss-family settings shared by the KD methods; schedules add their own knobs."""

    loss: str = "fkl"
    skew_alpha: float = 0.1      # SFKL/SRKL mixture weight (DistiLLM default)
    jsd_beta: float = 0.1        # teacher weight of the generalised JSD mixture (lineage lam = 0.9)
    scale_by_t2: bool = False    # multiply the KD term by T^2

    def validate(self) -> None:
        from kdbench.losses import LOSS_NAMES

        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss '{self.loss}' is not one of {', '.join(LOSS_NAMES)}")
        if not 0.0 <= self.skew_alpha < 1.0:
            raise ValueError(f"skew_alpha must be in [0, 1), got {self.skew_alpha}")


class Method:
    """Hooks of the shared training loop. Subclasses set ``config_class`` and override hooks."""

    config_class: ClassVar[type] = LossConfig
    needs_teacher: ClassVar[bool] = True
    needs_profile: ClassVar[bool] = False

    def __init__(self, config):
        self.config = config

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        return full_data_schedule(ctx)

    def hardness(self, profile) -> "np.ndarray | None":
        """For a curriculum method: its difficulty score per row of ``profile`` (the shared difficulty
        profile, a DataFrame indexed by example id), larger = harder. The difficulty table reports how
        well it ranks the ground-truth level; None for a method that does not rank examples."""
        return None

    def loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
             labels: torch.Tensor, step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, loss_value: float, step: StepInfo, logged: dict[str, float]) -> None:
        """Per-step state update (TAID's t); called once per optimiser step with the step's loss and the
        mean of the values ``loss`` logged over its micro-batches (and over processes under DDP)."""

    def trace(self) -> dict[str, float]:
        """Scalars describing the method's current state, logged for curriculum plots."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def kd_mixed_loss(cfg: LossConfig, student_logits, teacher_logits, labels, *, kd_ratio: float,
                  temperature: float, **overrides):
    """(1 - kd_ratio)·CE + kd_ratio·KD(T); ``overrides`` replaces LossConfig fields for this step."""
    from kdbench.losses import get_loss, mix_with_ce, token_ce

    settings = {"loss": cfg.loss, "skew_alpha": cfg.skew_alpha, "jsd_beta": cfg.jsd_beta,
                "scale_by_t2": cfg.scale_by_t2, **overrides}
    mask = labels != -100
    ce = token_ce(student_logits, labels)
    kd = get_loss(settings["loss"])(student_logits, teacher_logits, mask, temperature=temperature,
                                    scale_by_t2=settings["scale_by_t2"], skew_alpha=settings["skew_alpha"],
                                    jsd_beta=settings["jsd_beta"])
    total = mix_with_ce(ce, kd, kd_ratio)
    logged = {"ce": float(ce.detach()), "kd": float(kd.detach()), "kd_ratio": float(kd_ratio),
              "temperature": float(temperature)}
    return total, logged


def scheduled_kd_loss(cfg: LossConfig, student_logits, teacher_logits, labels, params: dict[str, Any], **overrides):
    """The KD loss with the settings a curriculum put in the epoch's ``params``: kd_ratio, temperature,
    and the skew coefficient ``alpha`` when the schedule moves it."""
    if "alpha" in params:
        overrides.setdefault("skew_alpha", params["alpha"])
    total, logged = kd_mixed_loss(cfg, student_logits, teacher_logits, labels, kd_ratio=params["kd_ratio"],
                                  temperature=params["temperature"], **overrides)
    if "alpha" in params:
        logged["alpha"] = params["alpha"]
    return total, logged


def interpolate(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction


def budget_matched_epochs_per_stage(total_epochs: int, num_stages: int) -> int:
    """Epochs per cumulative stage so that a staged run sees as many examples as ``total_epochs`` full
    passes: stages cover 1/S, 2/S, ..., 1 of the data, i.e. (S+1)/2 full passes per stage-epoch.
    (POCL: 8 epochs x 4 stages against a 20-epoch KD baseline.)"""
    return max(1, round(2 * total_epochs / (num_stages + 1)))


def cumulative_stage_sizes(n: int, num_stages: int) -> list[int]:
    """POCL's partition: stage s keeps the easiest (s+1)*floor(n/S) examples; the last keeps all."""
    each = n // num_stages
    return [(s + 1) * each for s in range(num_stages - 1)] + [n]


class SupervisedFineTuning(Method):
    """Plain SFT on the ground-truth responses: the student reference row and the warm-up."""

    @dataclass
    class Config:
        pass

    config_class = Config
    needs_teacher = False

    def loss(self, student_logits, teacher_logits, labels, step):
        from kdbench.losses import token_ce

        ce = token_ce(student_logits, labels)
        return ce, {"ce": float(ce.detach())}


# --------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class MethodInfo:
    name: str
    directory: Path
    manifest: dict[str, Any]
    cls: type[Method]

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def display_name(self) -> str:
        return self.manifest["display_name"]


def _import_method_class(directory: Path, class_name: str) -> type[Method]:
    module_name = f"kdbench_methods.{directory.name}"
    spec = importlib.util.spec_from_file_location(module_name, directory / "method.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any failure inside a user's method.py is a broken directory
        sys.modules.pop(module_name, None)
        raise MethodError(f"{directory}: method.py failed to import: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise MethodError(f"{directory}: method.py defines no subclass of kdbench.methods.Method named "
                          f"'{class_name}' (method.yaml class_name)")
    if not dataclasses.is_dataclass(cls.config_class):
        raise MethodError(f"{directory}: {class_name}.config_class must be a dataclass")
    return cls


def load_method_dir(directory: Path) -> MethodInfo:
    directory = Path(directory)
    missing = [f for f in REQUIRED_FILES if not (directory / f).is_file()]
    if missing:
        raise MethodError(f"{directory}: method directory lacks {', '.join(missing)}")
    manifest = load_yaml(directory / "method.yaml")
    if not isinstance(manifest, dict):
        raise MethodError(f"{directory}/method.yaml: expected a mapping")
    try:
        validate(manifest, "method", f"{directory}/method.yaml")
    except ConfigError as exc:
        raise MethodError(str(exc)) from None
    if manifest["name"] != directory.name:
        raise MethodError(f"{directory}/method.yaml: name '{manifest['name']}' must equal the folder name "
                          f"'{directory.name}'")
    if manifest["name"] in (SFT_RUN, TEACHER_RUN):
        raise MethodError(f"{directory}: '{manifest['name']}' is reserved for a reference row")
    cls = _import_method_class(directory, manifest["class_name"])
    if cls.needs_profile != manifest["needs_profile"]:
        raise MethodError(f"{directory}: method.yaml needs_profile={manifest['needs_profile']} but "
                          f"{cls.__name__}.needs_profile={cls.needs_profile}")
    info = MethodInfo(manifest["name"], directory, manifest, cls)
    for variant in variant_overrides(info):
        try:
            make_config(info, variant, {})  # defaults and every variant must build a valid config
        except ConfigError as exc:
            raise MethodError(str(exc)) from None
    return info


def discover_methods(root: str | Path = "methods") -> dict[str, MethodInfo]:
    root = Path(root)
    if not root.is_dir():
        raise MethodError(f"{root}: methods folder not found")
    found = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if directory.name == "__pycache__":
            continue
        info = load_method_dir(directory)
        found[info.name] = info
    return found


def variant_overrides(info: MethodInfo) -> dict[str, dict[str, Any]]:
    return info.manifest.get("variants") or {"default": {}}


def make_config(info: MethodInfo, variant: str, overrides: dict[str, Any], where: str | None = None):
    """The method's config dataclass from manifest defaults < variant < user overrides."""
    values = dict(info.manifest.get("defaults") or {})
    values.update(variant_overrides(info).get(variant, {}))
    values.update(overrides or {})
    allowed = [f.name for f in dataclasses.fields(info.cls.config_class)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        source = where or f"{info.directory}/method.yaml"
        raise ConfigError(f"{source}: unknown hyperparameter(s) {', '.join(unknown)} for method "
                          f"'{info.name}'; allowed: {', '.join(allowed)}")
    try:
        config = info.cls.config_class(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or info.directory}: bad hyperparameters for '{info.name}': {exc}") from None
    check = getattr(config, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{where or info.directory}: method '{info.name}' variant '{variant}': {exc}") from None
    return config


# --------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One trained student: a method variant with fully resolved hyperparameters."""

    run: str
    method: str
    variant: str
    label: str
    version: int
    hparams: dict[str, Any]
    needs_teacher: bool
    needs_profile: bool
    order: int
    train: dict[str, Any] = dataclasses.field(default_factory=dict)   # methods.settings.<m>.train overrides

    def identity(self) -> dict[str, Any]:
        identity = {"method": self.method, "variant": self.variant, "version": self.version, "hparams": self.hparams}
        if self.train:      # only when set, so runs without overrides keep their specs (and results)
            identity["train"] = self.train
        return identity


def run_name(method: str, variant: str, n_variants: int) -> str:
    return method if n_variants == 1 and variant == "default" else f"{method}-{variant}"


def _check_profile_has_signal(hparams: dict, config: dict, where: str) -> None:
    """A method ranking by the sampled Rouge-L needs the profile to sample (``profile.samples`` > 0)."""
    samples = (config.get("profile") or {}).get("samples", 1)
    signal = hparams.get("signal")
    if "student_rouge_l_sampled" in ([signal] if isinstance(signal, str) else signal or []) and not samples:
        raise ConfigError(f"{where}: 'student_rouge_l_sampled' needs sampled generations in the difficulty "
                          f"profile, but profile.samples is {samples}; set profile.samples > 0 or another signal")


def resolve_runs(config: dict, methods: dict[str, MethodInfo]) -> dict[str, RunSpec]:
    """Every run the config asks for, in table order. Unknown names are errors naming the config key."""
    section = config.get("methods") or {}
    include = section.get("include", "all")
    names = list(methods) if include == "all" else list(include)
    for key in ("include", "exclude"):
        requested = [] if section.get(key, []) == "all" else section.get(key, [])
        for name in requested:
            if name not in methods:
                raise ConfigError(f"config key methods.{key}: unknown method '{name}'; "
                                  f"available: {', '.join(methods)}")
    names = [n for n in names if n not in set(section.get("exclude", []))]
    settings = section.get("settings") or {}
    for name in settings:
        if name not in methods:
            raise ConfigError(f"config key methods.settings.{name}: unknown method; available: {', '.join(methods)}")
    runs: dict[str, RunSpec] = {}
    for name in names:
        info = methods[name]
        user = settings.get(name) or {}
        variants = variant_overrides(info)
        chosen = user.get("variants", list(variants))
        for variant in chosen:
            if variant not in variants:
                raise ConfigError(f"config key methods.settings.{name}.variants: unknown variant '{variant}'; "
                                  f"available: {', '.join(variants)}")
        for variant in chosen:
            cfg = make_config(info, variant, user.get("hparams") or {}, where=f"config key methods.settings.{name}.hparams")
            hparams = dataclasses.asdict(cfg)
            _check_profile_has_signal(hparams, config, f"config key methods.settings.{name}.hparams.signal")
            label = info.display_name if len(variants) == 1 else f"{info.display_name} ({variant.upper()})"
            rname = run_name(name, variant, len(variants))
            runs[rname] = RunSpec(rname, name, variant, label, info.version, hparams,
                                  info.cls.needs_teacher, info.cls.needs_profile, info.manifest.get("order", 100),
                                  dict(user.get("train") or {}))
    return dict(sorted(runs.items(), key=lambda kv: (kv[1].order, kv[1].method, kv[0])))


def instantiate(run: RunSpec, methods: dict[str, MethodInfo]) -> Method:
    info = methods[run.method]
    return info.cls(info.cls.config_class(**run.hparams))


def cumulative_curriculum(ctx: ScheduleContext, hardness, num_stages: int,
                          epochs_per_stage: int | None, stage_params) -> Schedule:
    """POCL-style "baby step" curriculum: stage s trains on the easiest cumulative prefix for
    ``epochs_per_stage`` epochs, each stage a separate run (optimiser and LR schedule restarted).
    ``hardness`` is the method's difficulty per example in ``ctx.example_ids`` order (equal values keep
    that order); ``stage_params(s)`` gives the loss settings of stage s."""
    import numpy as np

    ordered = [int(i) for i in np.argsort(np.asarray(hardness, dtype=np.float64), kind="stable")]
    epochs = epochs_per_stage or budget_matched_epochs_per_stage(ctx.epochs, num_stages)
    stages = []
    for s, size in enumerate(cumulative_stage_sizes(len(ordered), num_stages)):
        plan = EpochPlan(tuple(ordered[:size]), stage_params(s))
        stages.append(Stage(f"stage{s}", tuple(plan for _ in range(epochs))))
    return Schedule(tuple(stages), restart_optimizer_per_stage=True)
