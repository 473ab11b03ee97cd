"""The bad-input matrix: each bad input fails with a message naming what and where, leaving nothing
partial behind (outputs are written atomically)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from kdbench import RESULT_SCHEMA_VERSION, stages
from kdbench.config import eval_spec, load_config, resolve
from kdbench.data import load_records
from kdbench.errors import ConfigError, DataError, KDBenchError, MethodError, ResultError
from kdbench.integrity import seal, verify
from kdbench.io import atomic_directory, write_json_atomic, write_jsonl_atomic
from kdbench.methods import ScheduleContext, discover_methods, instantiate, resolve_runs
from kdbench.metrics import rouge_l
from kdbench.models import build_model, load_model, save_model
from kdbench.results import read_result, write_result
from kdbench.tables import build_tables
from kdbench.teacher_cache import CachedTeacher
from kdbench.train import LiveTeacher, TrainConfig, train
from tests.unit.test_train import ARCH, tiny as tiny_corpus  # noqa: F401 (a fixture)

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
        re.sub(r"(?m)^version: \d+$", "version: one", (d / "method.yaml").read_text(), count=1)))


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


# --------------------------------------------------------------------------- data files
def case_non_utf8_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(GOOD_ROW).encode() + b'\n{"id": "b", "instruction": "caf\xe9", "output": "x"}\n')
    load_records(path)


def case_whitespace_only_output(tmp_path):
    load_records(_jsonl(tmp_path, [json.dumps(GOOD_ROW), json.dumps({**GOOD_ROW, "id": "b", "output": " \n\t"})]))


def case_empty_reference_in_outputs(tmp_path):
    load_records(_jsonl(tmp_path, [json.dumps({**GOOD_ROW, "outputs": ["cat dog", ""]})]))


# --------------------------------------------------------------------------- config files (what validate-config reads)
def _override(tmp_path, text: str) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(text)
    return path


def case_heads_do_not_divide_hidden_size(tmp_path):
    load_config("config/config.yaml", [_override(tmp_path, "student:\n  model:\n    init: scratch\n    architecture: "
                                                "{model_type: llama, hidden_size: 15, num_attention_heads: 2, "
                                                "num_key_value_heads: 2}\n")])


def case_positions_shorter_than_sequences(tmp_path):
    load_config("config/config.yaml", [_override(tmp_path, "teacher:\n  model:\n    architecture: "
                                                "{max_position_embeddings: 100}\n")])


def case_zero_training_examples(tmp_path):
    load_config("config/config.yaml", [_override(tmp_path, "data:\n  source: {source: synthetic, sizes: {train: 0, dev: 20}}"
                                                "\n  max_prompt_tokens: 96\n  max_length: 128\n")])


def case_missing_configfile(tmp_path):
    load_config("config/config.yaml", [tmp_path / "nope.yaml"])


def case_yaml_syntax_error(tmp_path):
    load_config("config/config.yaml", [_override(tmp_path, "name: x\nseed: 3\ntraining: {seeds: [1, 2}\n")])


# --------------------------------------------------------------------------- artifacts
ORIGINAL, CORRUPTED = b"a" * 4096, b"a" * 1024 + b"b" * 2048 + b"a" * 1024
ORIGINAL_SHA, CORRUPTED_SHA = hashlib.sha256(ORIGINAL).hexdigest(), hashlib.sha256(CORRUPTED).hexdigest()


def case_artifact_changed_after_it_was_written(tmp_path):
    path = tmp_path / "cache.safetensors"
    path.write_bytes(ORIGINAL)
    seal(path)
    stat = path.stat()
    with open(path, "r+b") as handle:          # overwritten in place, the mtime kept
        handle.seek(1024)
        handle.write(b"b" * 2048)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify(path)


def case_artifact_without_integrity_record(tmp_path):
    path = tmp_path / "difficulty.csv"
    path.write_text("id,student_ce\na,1.0\n")
    verify(path)


def case_file_added_to_a_model_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    seal(model)
    (model / "pytorch_model.bin").write_bytes(b"x")
    verify(model)


def case_truncated_cache_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "cache.safetensors"
    save_file({"a": torch.zeros(64, 32)}, str(path), metadata={"key": "k"})
    os.truncate(path, path.stat().st_size // 2)
    CachedTeacher(path, {"key": "k"}, "k")


def case_tables_without_the_profile(tmp_path):
    import shutil

    from tests.unit.test_tables import make_results

    results, config = make_results(tmp_path)
    train_json = results / "runs/pocl-fkl/seed1/train.json"
    doc = read_result(train_json, "train")
    write_json_atomic(train_json, {**doc, "spec": {**doc["spec"], "profile": {"profile": {}}}})
    shutil.rmtree(results / "profile")
    try:
        build_tables(results, tmp_path / "tables", config_json=config, plots=False)
    finally:
        assert not (tmp_path / "tables").exists()      # not a single (smaller) table written


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
    (case_non_utf8_jsonl, DataError, ["data.jsonl:2", "not valid UTF-8", "\\xe9"]),
    (case_whitespace_only_output, DataError, ["data.jsonl:2", "'output'", "whitespace-only"]),
    (case_empty_reference_in_outputs, DataError, ["data.jsonl:1", "'outputs'", "index 1"]),
    (case_heads_do_not_divide_hidden_size, ConfigError, ["override.yaml", "student.model.architecture.hidden_size = 15",
                                                         "student.model.architecture.num_attention_heads = 2"]),
    (case_positions_shorter_than_sequences, ConfigError, ["teacher.model.architecture.max_position_embeddings = 100",
                                                          "(128: data.max_length"]),
    (case_zero_training_examples, ConfigError, ["override.yaml", "data.source", "'sizes.train'", "positive integer"]),
    (case_missing_configfile, ConfigError, ["nope.yaml", "not found"]),
    (case_yaml_syntax_error, ConfigError, ["override.yaml:3", "malformed YAML"]),
    (case_artifact_changed_after_it_was_written, ResultError, ["cache.safetensors", f"sha256 {CORRUPTED_SHA}",
                                                               f"does not match {ORIGINAL_SHA}", "cache.safetensors.sha256"]),
    (case_artifact_without_integrity_record, ResultError, ["difficulty.csv", "no integrity record"]),
    (case_file_added_to_a_model_directory, ResultError, ["model/pytorch_model.bin", "not recorded in",
                                                         "model/SHA256SUMS"]),
    (case_truncated_cache_safetensors, ResultError, ["cache.safetensors", "cannot load the teacher cache", "truncated"]),
    (case_tables_without_the_profile, ResultError, ["profile/summary.json", "missing",
                                                    "runs/pocl-fkl/seed1/train.json"]),
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


# --------------------------------------------------------------------------- recoveries and job-level faults
def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_ROW).encode() + b"\n")
    assert [r.id for r in load_records(path)] == ["a"]


@pytest.mark.parametrize("override, fragment", [
    ("student:\n  model:\n    init: scratch\n    architecture: {model_type: llama, hidden_size: 15, "
     "num_attention_heads: 2, num_key_value_heads: 2}\n", "student.model.architecture.hidden_size = 15"),
    ("data:\n  source: {source: synthetic, sizes: {train: 0, dev: 20}}\n  max_prompt_tokens: 96\n  max_length: 128\n",
     "'sizes.train' must be a positive integer"),
], ids=["heads", "zero_train"])
def test_validate_config_rejects_what_would_fail_jobs_later(tmp_path, capsys, override, fragment):
    from kdbench.cli import main

    assert main(["validate-config", "config/config.yaml", "--overrides", str(_override(tmp_path, override))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdbench: error: ") and fragment in err and "override.yaml" in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_corpus):
    """test_train's tiny corpus, plus a sealed model directory and eval set as the workflow's jobs write them."""
    rows, tokenizer, encoded = tiny_corpus
    root = tmp_path_factory.mktemp("tiny")
    with atomic_directory(root / "model") as tmp:
        save_model(build_model(ARCH, tokenizer, 0), tokenizer, tmp)
        seal(tmp)
    write_jsonl_atomic(root / "eval.jsonl", [r.to_json() for r in rows[:4]])
    seal(root / "eval.jsonl")
    return root, rows, tokenizer, encoded


def test_a_truncated_model_is_named_by_the_job_that_reads_it(tiny, tmp_path):
    import shutil

    root = tiny[0]
    model = tmp_path / "model"
    shutil.copytree(root / "model", model)
    recorded = (model / "SHA256SUMS").read_text()
    os.truncate(model / "model.safetensors", 1000)
    actual = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(ResultError) as err:
        stages.evaluate(eval_spec(_config(), "synthetic_test"), model, root / "eval.jsonl", [10], "m", tmp_path / "out")
    message = str(err.value)
    assert f"{model / 'model.safetensors'}: sha256 {actual}" in message
    expected = next(line.split()[0] for line in recorded.splitlines() if line.endswith("model.safetensors"))
    assert f"does not match {expected}" in message
    assert not (tmp_path / "out").exists()          # no predictions, no scores
    # Read without its record (e.g. by hand), the truncated file is still named, not a bare SafetensorError.
    (model / "SHA256SUMS").unlink()
    with pytest.raises(ResultError, match=r"model/model\.safetensors: cannot load the model \(SafetensorError"):
        load_model(model)


def _train(tiny, checkpoint_dir, identity, log, fail_after=None):
    """TAID on the tiny model with a checkpoint every 2 of 15 steps; ``fail_after`` kills it after that step."""
    root, rows, tokenizer, encoded = tiny
    methods = discover_methods("methods")
    method = instantiate(resolve_runs({"methods": {"include": ["taid"]}}, methods)["taid"], methods)
    if fail_after is not None:
        original = method.after_step

        def crashing(loss, step, logged):
            original(loss, step, logged)
            if step.step + 1 == fail_after:
                raise KeyboardInterrupt("simulated kill")
        method.after_step = crashing
    cfg = TrainConfig(epochs=3, lr=3e-3, global_batch_size=8, micro_batch_size=8, log_every=1, checkpoint_every=2)
    student = load_model(root / "model")
    teacher = LiveTeacher(build_model(ARCH, tokenizer, 7), torch.device("cpu"), torch.float32)
    metrics = train(student, method, encoded, ScheduleContext(tuple(r.id for r in rows), 3, 5, None), cfg,
                    pad_id=tokenizer.pad_token_id, seed=5, device=torch.device("cpu"), teacher=teacher,
                    checkpoint_dir=checkpoint_dir, log=log, checkpoint_identity=identity)
    return student.state_dict(), metrics


IDENTITY = {"run_id": "0123456789abcdef", "inputs": {"student": "s1", "teacher": "t1"}}


@pytest.mark.parametrize("truncate, resumes_at", [(["checkpoint.pt"], 2), (["checkpoint.pt", "checkpoint.prev.pt"], None)],
                         ids=["newest", "both"])
def test_a_truncated_checkpoint_is_set_aside_and_training_goes_on(tiny, tmp_path, truncate, resumes_at):
    reference, ref_metrics = _train(tiny, None, IDENTITY, lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny, tmp_path, IDENTITY, lambda _: None, fail_after=5)      # checkpoints at steps 2 and 4
    for name in truncate:
        os.truncate(tmp_path / name, (tmp_path / name).stat().st_size // 3)
    lines = []
    weights, metrics = _train(tiny, tmp_path, IDENTITY, lines.append)
    text = "\n".join(lines)
    for name in truncate:
        assert f"checkpoint {tmp_path / name} unreadable" in text and f"set aside as {name}.corrupt" in text
        assert (tmp_path / f"{name}.corrupt").is_file()
    if resumes_at:
        assert f"resuming from {tmp_path / 'checkpoint.prev.pt'} at step {resumes_at}" in text
    else:
        assert "training starts fresh" in text and "resuming" not in text
    for name in reference:                             # the same weights as a run never interrupted
        assert torch.equal(reference[name], weights[name]), name
    assert [h["loss"] for h in metrics["history"]] == [h["loss"] for h in ref_metrics["history"]]
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "checkpoint.prev.pt").exists()


@pytest.mark.parametrize("changed, reason", [
    ({**IDENTITY, "run_id": "fedcba9876543210"}, "written for run id 0123456789ab, this job's spec is run id fedcba987654"),
    ({**IDENTITY, "inputs": {"student": "s1", "teacher": "t2"}}, "written from other inputs (teacher changed since)"),
], ids=["spec", "inputs"])
def test_a_checkpoint_of_another_spec_or_other_inputs_is_never_resumed(tiny, tmp_path, changed, reason):
    with pytest.raises(KeyboardInterrupt):
        _train(tiny, tmp_path, IDENTITY, lambda _: None, fail_after=5)
    lines = []
    _, metrics = _train(tiny, tmp_path, changed, lines.append)
    text = "\n".join(lines)
    assert f"checkpoint {tmp_path / 'checkpoint.pt'} {reason}: set aside as checkpoint.pt.stale-0123456789ab" in text
    assert "training starts fresh" in text and "resuming" not in text
    assert (tmp_path / "checkpoint.pt.stale-0123456789ab").is_file()
    assert [h["step"] for h in metrics["history"]] == list(range(1, 16))   # every step trained under the new spec
