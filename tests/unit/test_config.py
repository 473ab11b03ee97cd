"""Config validation: bad input fails before any job runs, naming the key and what is allowed."""

from __future__ import annotations

import copy

import pytest
import yaml

from kdbench.config import load_config, resolve
from kdbench.errors import ConfigError
from kdbench.methods import discover_methods, resolve_runs


@pytest.fixture(scope="module")
def default_config():
    with open("config/config.yaml") as handle:
        return yaml.safe_load(handle)


def test_shipped_configs_are_valid():
    # The default and smoke run every method once, with vanilla KD in each loss a method is compared against;
    # loss-grid runs the full six-loss x POCL grid.
    every_method = {"vanilla_kd-fkl", "vanilla_kd-sfkl", "vanilla_kd-srkl", "pocl-fkl", "cpd", "l2m_kd", "taid"}
    for overrides, expected in (([], every_method), (["config/smoke.yaml"], every_method),
                                (["config/synthetic-gpu.yaml"], every_method), (["config/loss-grid.yaml"], None)):
        cfg = load_config("config/config.yaml", overrides)
        runs = resolve_runs(cfg, discover_methods("methods"))
        if expected is not None:
            assert set(runs) == expected
        else:
            assert every_method <= set(runs) and len(runs) == 15


def test_unknown_key_names_key_suggestion_and_allowed(default_config):
    bad = copy.deepcopy(default_config)
    bad["training"]["train"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError) as err:
        resolve(bad, "cfg.yaml")
    message = str(err.value)
    assert "cfg.yaml" in message and "training.train.learning_rate" in message
    assert "allowed keys here:" in message and "lr" in message


def test_misspelled_top_level_key_gets_a_suggestion(default_config):
    bad = copy.deepcopy(default_config)
    bad["evaluaton"] = bad.pop("evaluation")
    with pytest.raises(ConfigError, match="did you mean 'evaluation'"):
        resolve(bad, "cfg.yaml")


def test_wrong_type_names_key_and_type(default_config):
    bad = copy.deepcopy(default_config)
    bad["training"]["train"]["epochs"] = "five"
    with pytest.raises(ConfigError, match=r"training\.train\.epochs' must be of type integer"):
        resolve(bad, "cfg.yaml")


def test_enum_lists_allowed_values(default_config):
    bad = copy.deepcopy(default_config)
    bad["evaluation"]["decoding"] = "beam"
    with pytest.raises(ConfigError, match="allowed values: 'sample', 'greedy'"):
        resolve(bad, "cfg.yaml")


def test_unknown_method_is_named(default_config):
    cfg = resolve(copy.deepcopy(default_config), "cfg.yaml")
    cfg["methods"]["include"] = ["vanilla_kd", "pocll"]
    with pytest.raises(ConfigError, match="methods.include: unknown method 'pocll'"):
        resolve_runs(cfg, discover_methods("methods"))


def test_unknown_hyperparameter_and_bad_value(default_config):
    cfg = resolve(copy.deepcopy(default_config), "cfg.yaml")
    cfg["methods"]["settings"] = {"pocl": {"hparams": {"num_stage": 3}}}
    with pytest.raises(ConfigError, match="unknown hyperparameter.*num_stage.*allowed:.*num_stages"):
        resolve_runs(cfg, discover_methods("methods"))
    cfg["methods"]["settings"] = {"vanilla_kd": {"hparams": {"loss": "kl"}}}
    with pytest.raises(ConfigError, match="loss 'kl' is not one of fkl, rkl, jsd, tvd, sfkl, srkl"):
        resolve_runs(cfg, discover_methods("methods"))
    cfg["methods"]["settings"] = {"pocl": {"variants": ["fkl", "gkd"]}}
    with pytest.raises(ConfigError, match="unknown variant 'gkd'"):
        resolve_runs(cfg, discover_methods("methods"))


def test_ranking_by_the_sampled_rouge_needs_a_sampling_profile(default_config):
    cfg = resolve(copy.deepcopy(default_config), "cfg.yaml")
    assert "student_rouge_l_sampled" in cfg["methods"]["settings"]["l2m_kd"]["hparams"]["signal"]
    cfg["profile"]["samples"] = 0
    with pytest.raises(ConfigError, match=r"methods\.settings\.l2m_kd\.hparams\.signal: 'student_rouge_l_sampled' "
                                          r"needs sampled generations.*profile\.samples is 0"):
        resolve_runs(cfg, discover_methods("methods"))


def test_prompt_longer_than_sequence_is_rejected(default_config):
    bad = copy.deepcopy(default_config)
    bad["data"]["max_prompt_tokens"] = 512
    bad["data"]["max_length"] = 256
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        resolve(bad, "cfg.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nseed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: malformed YAML"):
        load_config(path)


def _distill_specs(config: dict) -> dict[str, dict]:
    from kdbench.config import distill_spec

    cfg = resolve(config, "cfg.yaml")
    runs = resolve_runs(cfg, discover_methods("methods"))
    return {run: distill_spec(cfg, spec.identity(), 1) for run, spec in runs.items()}


def test_a_method_train_override_changes_only_that_methods_runs(default_config):
    base = _distill_specs(default_config)
    config = copy.deepcopy(default_config)
    config["methods"]["settings"]["pocl"]["train"] = {"lr": 1e-4, "global_batch_size": 64}
    config["training"]["train"]["micro_batch_size"] = 32
    changed = _distill_specs(config)
    pocl = [r for r in base if r.startswith("pocl-")]
    assert pocl == ["pocl-fkl"]
    for run in base:
        if run in pocl:
            train = changed[run]["training"]["train"]
            assert (train["lr"], train["global_batch_size"]) == (1e-4, 64)
            assert {k: v for k, v in train.items() if k not in ("lr", "global_batch_size")} == \
                {k: v for k, v in base[run]["training"]["train"].items() if k not in ("lr", "global_batch_size")}
            assert changed[run]["run"]["train"] == {"lr": 1e-4, "global_batch_size": 64}
        else:   # same spec, so the same run id: Snakemake re-runs nothing else
            assert changed[run] == base[run], run


def test_sft_train_override_reaches_only_the_sft_spec(default_config):
    from kdbench.config import distill_spec

    config = copy.deepcopy(default_config)
    config["training"]["sft_train"] = {"global_batch_size": 64, "micro_batch_size": 32}
    cfg = resolve(config, "cfg.yaml")
    sft = distill_spec(cfg, {"method": "sft", "needs_teacher": False, "needs_profile": False,
                             "train": cfg["training"]["sft_train"]}, 1)
    assert sft["training"]["train"]["global_batch_size"] == 64 and "sft_train" not in sft["training"]
    assert _distill_specs(config) == _distill_specs(default_config)


@pytest.mark.parametrize("where", ["methods.settings.taid.train", "training.sft_train", "training.train"])
def test_a_global_batch_that_does_not_split_into_micro_batches_names_the_key(default_config, where):
    config = copy.deepcopy(default_config)
    bad = {"global_batch_size": 48, "micro_batch_size": 32}
    if where == "methods.settings.taid.train":
        config["methods"]["settings"] = {"taid": {"train": bad}}
    elif where == "training.sft_train":
        config["training"]["sft_train"] = bad
    else:
        config["training"]["train"].update(bad)
    with pytest.raises(ConfigError, match=rf"cfg.yaml: config key {where}: global_batch_size 48 is not a multiple "
                                          r"of micro_batch_size 32 x 1 process\(es\) \(training.devices\)"):
        resolve(config, "cfg.yaml")


def test_an_unknown_key_in_a_method_train_override_is_named(default_config):
    config = copy.deepcopy(default_config)
    config["methods"]["settings"] = {"cpd": {"train": {"learning_rate": 1e-4}}}
    with pytest.raises(ConfigError, match=r"methods.settings.cpd.train.learning_rate"):
        resolve(config, "cfg.yaml")
