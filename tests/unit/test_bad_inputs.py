"""The bad-input matrix: each bad input fails with a message naming what and where, leaving nothing
partial behind (outputs are written atomically)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from kdbench import RESULT_SCHEMA_VERSION
from kdbench.config import resolve
from kdbench.data import load_records
from kdbench.errors import ConfigError, DataError, KDBenchError, MethodError, ResultError
from kdbench.io import atomic_directory, write_json_atomic
from kdbench.methods import discover_methods, resolve_runs
from kdbench.metrics import rouge_l
from kdbench.results import read_result, write_result

GOOD_ROW = {"id": "a", "instruction": "Copy the words.", "input": "cat dog", "output": "cat dog"}


def _config():
    with open("config/config.yaml") as handle:
        return resolve(yaml.safe_load(handle), "config/config.yaml")


def _raw_config():
    with open("config/config.yaml") as handle:
        return yaml.safe_load(handle)


def _jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def case_unknown_key(tmp_path):
    cfg = _raw_config()
    cfg["teacher"]["train"]["epoch"] = 3
    resolve(cfg, "config/config.yaml")


def case_wrong_type(tmp_path):
    cfg = _raw_config()
    cfg["evaluation"]["seeds"] = "10,20"
    resolve(cfg, "config/config.yaml")


def case_unknown_method(tmp_path):
    cfg = _config()
    cfg["methods"]["include"] = ["taid", "tiad"]
    resolve_runs(cfg, discover_methods("methods"))


def case_unknown_loss(tmp_path):
    cfg = _config()
    cfg["methods"]["settings"] = {"vanilla_kd": {"hparams": {"loss": "kld"}}}
    resolve_runs(cfg, discover_methods("methods"))


def case_empty_data_file(tmp_path):
    load_records(_jsonl(tmp_path, []))


def case_malformed_jsonl_line(tmp_path):
    load_records(_jsonl(tmp_path, [json.dumps(GOOD_ROW), '{"id": "b", "instruction": ']))


def case_missing_reference(tmp_path):
    row = {k: v for k, v in GOOD_ROW.items() if k != "output"}
    load_records(_jsonl(tmp_path, [json.dumps(row)]))


def case_duplicate_ids(tmp_path):
    load_records(_jsonl(tmp_path, [json.dumps(GOOD_ROW), json.dumps(GOOD_ROW)]))


def case_non_string_field(tmp_path):
    load_records(_jsonl(tmp_path, [json.dumps({**GOOD_ROW, "instruction": 5})]))


def _broken_methods(tmp_path, edit):
    import shutil

    root = tmp_path / "methods"
    shutil.copytree("methods", root, ignore=shutil.ignore_patterns("__pycache__"))
    edit(root / "pocl")
    discover_methods(root)


def case_broken_method_py(tmp_path):
    _broken_methods(tmp_path, lambda d: (d / "method.py").write_text("def broken(:\n"))


def case_method_yaml_bad_type(tmp_path):
    _broken_methods(tmp_path, lambda d: (d / "method.yaml").write_text(
        (d / "method.yaml").read_text().replace("version: 1", "version: one")))


def case_result_other_schema_version(tmp_path):
    path = tmp_path / "scores.json"
    write_json_atomic(path, {"schema_version": RESULT_SCHEMA_VERSION + 1, "kind": "scores"})
    read_result(path, "scores")


def case_result_wrong_kind(tmp_path):
    path = tmp_path / "scores.json"
    write_result(path, "train", {"x": 1}, {})
    read_result(path, "scores")


def case_prediction_count_mismatch(tmp_path):
    rouge_l(["a", "b", "c"], ["a", "b"])


def case_prompt_longer_than_sequence(tmp_path):
    cfg = _raw_config()
    cfg["data"]["max_prompt_tokens"] = cfg["data"]["max_length"]
    resolve(cfg, "config/config.yaml")


def case_unknown_eval_option(tmp_path):
    from kdbench.evals import discover_evals, resolve_options

    resolve_options(discover_evals("evals")["selfinst"], {"fulll": True})


def case_missing_result_file(tmp_path):
    read_result(tmp_path / "eval" / "taid" / "scores.json", "scores")


CASES = [
    (case_unknown_key, ConfigError, ["teacher.train.epoch", "did you mean 'epochs'", "config/config.yaml"]),
    (case_wrong_type, ConfigError, ["evaluation.seeds", "array"]),
    (case_unknown_method, ConfigError, ["methods.include", "'tiad'", "available:"]),
    (case_unknown_loss, ConfigError, ["'kld'", "fkl, rkl, jsd, tvd, sfkl, srkl", "methods.settings.vanilla_kd"]),
    (case_empty_data_file, DataError, ["data.jsonl", "empty"]),
    (case_malformed_jsonl_line, DataError, ["data.jsonl:2", "malformed JSON"]),
    (case_missing_reference, DataError, ["data.jsonl:1", "'output'"]),
    (case_duplicate_ids, DataError, ["data.jsonl:2", "duplicate id 'a'", "line 1"]),
    (case_non_string_field, DataError, ["data.jsonl:1", "'instruction' must be a string"]),
    (case_broken_method_py, MethodError, ["pocl", "method.py failed to import", "SyntaxError"]),
    (case_method_yaml_bad_type, MethodError, ["pocl/method.yaml", "'version' must be of type integer"]),
    (case_result_other_schema_version, ResultError, ["scores.json", f"schema_version {RESULT_SCHEMA_VERSION + 1}"]),
    (case_result_wrong_kind, ResultError, ["scores.json", "expected a 'scores' result, found 'train'"]),
    (case_prediction_count_mismatch, ResultError, ["3 predictions", "2 references"]),
    (case_prompt_longer_than_sequence, ConfigError, ["data.max_prompt_tokens", "data.max_length"]),
    (case_unknown_eval_option, ConfigError, ["fulll", "full"]),
    (case_missing_result_file, ResultError, ["eval/taid/scores.json", "missing"]),
]


@pytest.mark.parametrize("case, error, fragments", CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_bad_input_is_named(tmp_path, case, error, fragments):
    before = set(os.listdir(tmp_path))
    with pytest.raises(error) as err:
        case(tmp_path)
    assert isinstance(err.value, KDBenchError)
    for fragment in fragments:
        assert fragment in str(err.value), f"{fragment!r} not in: {err.value}"
    leftovers = {p for p in set(os.listdir(tmp_path)) - before if p.startswith(".") and p.endswith(".tmp")}
    assert not leftovers


def test_matrix_has_at_least_15_cases():
    assert len(CASES) >= 15


def test_failed_directory_write_leaves_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and os.listdir(tmp_path) == []
