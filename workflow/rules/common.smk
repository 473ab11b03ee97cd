# Shared definitions: the resolved config, the discovered methods and eval sets, paths and helpers.
import json
import re
import sys

from snakemake.exceptions import WorkflowError

from kdbench.config import (data_spec, deep_merge, distill_spec, eval_spec, profile_spec, resolve, student_init_spec,
                            teacher_cache_spec, teacher_spec, tokenizer_spec)
from kdbench.data.sources import normalize_source_cfg
from kdbench.errors import KDBenchError
from kdbench.schema import load_yaml
from kdbench.evals import discover_evals
from kdbench.methods import SFT_RUN, TEACHER_RUN, discover_methods, resolve_runs

# Snakemake has merged the --configfile files over config/config.yaml with its own merge; kdbench
# merges them again with kdbench.config.deep_merge, which replaces a section whose kind changes (another
# data source, model init or tokenizer kind) instead of mixing the keys of both kinds.
OVERRIDE_FILES = [str(p) for p in (workflow.overwrite_configfiles or [])]
CONFIG_SOURCES = " + ".join((["config/config.yaml"] if not getattr(workflow.config_settings, "replace_workflow_config", False) else []) + OVERRIDE_FILES)
try:
    _replace = getattr(workflow.config_settings, "replace_workflow_config", False) and OVERRIDE_FILES
    _merged = {} if _replace else load_yaml("config/config.yaml")
    for _path in OVERRIDE_FILES:
        _merged = deep_merge(_merged, load_yaml(_path))
    _merged = deep_merge(_merged, getattr(workflow.config_settings, "config", None) or {})
    CFG = resolve(_merged, CONFIG_SOURCES)
    METHODS = discover_methods(CFG["methods"]["root"])
    RUNS = resolve_runs(CFG, METHODS)
    EVAL_SPECS = discover_evals("evals")
    SOURCE = normalize_source_cfg(CFG["data"]["source"], "data.source")
except KDBenchError as exc:
    raise WorkflowError(f"kdbench: {exc}") from None

for _name in CFG["evaluation"]["sets"]:
    if _name not in EVAL_SPECS:
        raise WorkflowError(f"kdbench: {CONFIG_SOURCES}: config key evaluation.sets: unknown eval set '{_name}'; "
                            f"available (folders in evals/): {', '.join(EVAL_SPECS)}")

PY = sys.executable
DEVICES = CFG["training"]["devices"]
# Several data-parallel processes per distillation job go through torchrun (DDP; gloo on CPU, NCCL on GPU).
LAUNCH = PY if DEVICES == 1 else f"{PY} -m torch.distributed.run --standalone --nproc_per_node {DEVICES}"
R = f"results/{CFG['name']}"
TABLES_DIR = f"{CFG['tables']['output_dir']}/{CFG['name']}"
SEEDS = CFG["training"]["seeds"]
TEACHER_SEED = CFG["teacher"]["seed"]
EVAL_SETS = CFG["evaluation"]["sets"]
EVAL_SEEDS = CFG["evaluation"]["seeds"]
TRAINED_RUNS = [SFT_RUN] + list(RUNS)
DATA_SPLITS = sorted({"synthetic": lambda s: s["sizes"], "jsonl": lambda s: s["files"],
                      "hf": lambda s: s["splits"], "dolly": lambda s: {"train": 1, "dev": 1}}[SOURCE["source"]](SOURCE))
CACHE_MODE = CFG["training"]["teacher_cache"]["mode"]
GPU = 1 if str(CFG["device"]).startswith("cuda") else 0
TRAIN_THREADS = 1   # one thread per job: N cores run N jobs (1.6x the throughput of 2-thread jobs on 2 cores,
                    # docs/benchmarks.md), and a job computes the same floats whatever --cores is
EVAL_THREADS = 1

for _key, _splits in (("teacher.data", CFG["teacher"]["data"]), ("student.warmup_data", CFG["student"]["warmup_data"])):
    for _split in _splits:
        if _split not in DATA_SPLITS:
            raise WorkflowError(f"kdbench: {CONFIG_SOURCES}: config key {_key}: data split '{_split}' is not produced "
                                f"by data.source (splits: {', '.join(DATA_SPLITS)})")

for _name in EVAL_SETS:
    _spec = EVAL_SPECS[_name]
    if _spec.source_kind == "workflow" and _spec.split not in DATA_SPLITS:
        raise WorkflowError(f"kdbench: {CONFIG_SOURCES}: eval set '{_name}' reads the data split '{_spec.split}', "
                            f"which data.source does not produce (splits: {', '.join(DATA_SPLITS)})")


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    run=_alternatives(TRAINED_RUNS + [TEACHER_RUN]),
    seed=r"\d+",
    eval_seed=r"\d+",
    eval_set=_alternatives(EVAL_SETS),
    split=_alternatives(DATA_SPLITS),


def spec_json(spec):
    return json.dumps(spec, sort_keys=True)


def run_identity(run):
    """What a trained run's results depend on (the SFT reference has no method directory)."""
    if run == SFT_RUN:
        identity = {"method": SFT_RUN, "needs_teacher": False, "needs_profile": False}
        if CFG["training"].get("sft_train"):
            identity["train"] = CFG["training"]["sft_train"]
        return identity
    spec = RUNS[run]
    return {**spec.identity(), "needs_teacher": spec.needs_teacher, "needs_profile": spec.needs_profile}


def model_dir(run, seed):
    if run == TEACHER_RUN:
        return f"{R}/teacher/model"
    return f"{R}/runs/{run}/seed{seed}/model"


def evaluated_models():
    """(run, seed) of every model in the tables: the teacher, the SFT student and every method run."""
    return [(TEACHER_RUN, TEACHER_SEED)] + [(run, seed) for run in TRAINED_RUNS for seed in SEEDS]


def all_scores():
    return [f"{R}/eval/{run}/seed{seed}/{es}/es{eval_seed}/scores.json"
            for run, seed in evaluated_models() for es in EVAL_SETS for eval_seed in EVAL_SEEDS]
