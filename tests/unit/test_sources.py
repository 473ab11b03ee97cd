"""Training-data sources: synthetic, jsonl, dolly (raw + MiniLLM layouts, dev hold-out), hf."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdbench.data import Record, build_prompt
from kdbench.data import sources
from kdbench.data.sources import load_training_source, load_training_source_with_info, normalize_source_cfg
from kdbench.errors import ConfigError, DataError


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _canonical(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(n)]


def _dolly_raw(n: int) -> list[dict]:
    cats = ["open_qa", "closed_qa", "summarization", "brainstorming"]
    return [{"instruction": f"Question number {i}?", "context": (f"Context {i}." if i % 3 == 0 else ""),
             "response": f"Answer {i}.", "category": cats[i % 4]} for i in range(n)]


@pytest.fixture
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):
        if module in sys.modules and hasattr(sys.modules[module], attr):
            monkeypatch.setattr(sys.modules[module], attr, True)


# --------------------------------------------------------------------------- config checking
def test_unknown_and_bad_keys_are_named():
    with pytest.raises(ConfigError, match=r"data: unknown key\(s\) 'files' for source 'dolly'; allowed keys: .*dev_n"):
        normalize_source_cfg({"source": "dolly", "files": {}})
    with pytest.raises(ConfigError, match="'source' = 'dolly15k' is not allowed; allowed values: synthetic, jsonl"):
        normalize_source_cfg({"source": "dolly15k"})
    with pytest.raises(ConfigError, match="'long_prompts' = 'cut'.*truncate, drop"):
        normalize_source_cfg({"source": "dolly", "long_prompts": "cut"})
    with pytest.raises(ConfigError, match="'sizes' must name the splits train, dev; missing dev"):
        normalize_source_cfg({"source": "synthetic", "sizes": {"train": 3}})
    with pytest.raises(ConfigError, match=r"teacher\.data: 'dev_num' must be a positive integer"):
        normalize_source_cfg({"source": "dolly", "dev_num": 0}, where="teacher.data")
    with pytest.raises(ConfigError, match="'fields.answer'"):
        normalize_source_cfg({"source": "hf", "hf_id": "x/y", "splits": {"train": "train", "dev": "validation"},
                              "fields": {"answer": "response"}})


def test_dolly_defaults():
    cfg = normalize_source_cfg({"source": "dolly"})
    assert cfg["dev_num"] == 1000 and cfg["long_prompts"] == "truncate"
    assert cfg["hf_id"] == "databricks/databricks-dolly-15k" and cfg["path"] is None and cfg["exclude"] == []


# --------------------------------------------------------------------------- synthetic
def test_synthetic_source_real_generator():
    pytest.importorskip("kdbench.data.synthetic")
    cfg = {"source": "synthetic", "sizes": {"train": 24, "dev": 8, "test": 8, "ood": 8}}
    splits, info = load_training_source_with_info(cfg, data_dir=None, seed=3)
    assert list(splits) == ["train", "dev", "test", "ood"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 24, "dev": 8, "test": 8, "ood": 8}
    assert all(isinstance(r, Record) for v in splits.values() for r in v)
    again = load_training_source(cfg, data_dir=None, seed=3)
    assert [r.to_json() for r in again["train"]] == [r.to_json() for r in splits["train"]]
    other = load_training_source(cfg, data_dir=None, seed=4)
    assert [r.prompt for r in other["train"]] != [r.prompt for r in splits["train"]]
    assert info["source"] == "synthetic" and info["seed"] == 3 and info["counts"]["ood"] == 8
    train_prompts = {r.prompt for r in splits["train"]}
    assert not any(r.prompt in train_prompts for s in ("dev", "test", "ood") for r in splits[s])


def test_synthetic_source_passes_options_to_generate_suite(monkeypatch):
    import types

    seen = {}

    def fake_generate_suite(seed, sizes, **kwargs):
        seen.update(seed=seed, sizes=dict(sizes), **kwargs)
        return {split: [{"id": f"syn-{split}-{i}", "instruction": "Copy.", "input": "a b", "output": "a b",
                         "family": "copy", "level": 1} for i in range(n)] for split, n in sizes.items()}

    monkeypatch.setitem(sys.modules, "kdbench.data.synthetic",
                        types.SimpleNamespace(generate_suite=fake_generate_suite))
    cfg = {"source": "synthetic", "sizes": {"train": 4, "dev": 2}, "id_levels": [1, 2], "families": ["copy"]}
    splits = load_training_source(cfg, data_dir=None, seed=7)
    assert seen == {"seed": 7, "sizes": {"train": 4, "dev": 2}, "id_levels": [1, 2], "families": ["copy"]}
    assert splits["train"][0].meta == {"family": "copy", "level": 1}
    assert splits["dev"][0].prompt == build_prompt("Copy.", "a b")


# --------------------------------------------------------------------------- jsonl
def test_jsonl_source_relative_to_data_dir(tmp_path):
    _write_jsonl(tmp_path / "d" / "train.jsonl", _canonical("t", 5))
    _write_jsonl(tmp_path / "d" / "dev.jsonl", _canonical("v", 2))
    cfg = {"source": "jsonl", "files": {"train": "train.jsonl", "dev": "dev.jsonl"}, "limit": {"train": 3}}
    splits, info = load_training_source_with_info(cfg, data_dir=tmp_path / "d", seed=0)
    assert [r.id for r in splits["train"]] == ["t0", "t1", "t2"] and len(splits["dev"]) == 2
    assert len(info["files"]["train"]["sha256"]) == 64 and info["counts"] == {"train": 3, "dev": 2}


def test_jsonl_errors_name_key_and_line(tmp_path):
    cfg = {"source": "jsonl", "files": {"train": "train.jsonl", "dev": "dev.jsonl"}}
    with pytest.raises(DataError, match=r"data\.files\.train: .*train\.jsonl: data file not found"):
        load_training_source(cfg, data_dir=tmp_path, seed=0)
    _write_jsonl(tmp_path / "train.jsonl", _canonical("t", 2))
    (tmp_path / "dev.jsonl").write_text(json.dumps(_canonical("v", 1)[0]) + "\n{broken\n")
    with pytest.raises(DataError, match=r"dev\.jsonl:2: malformed JSON"):
        load_training_source(cfg, data_dir=tmp_path, seed=0)
    _write_jsonl(tmp_path / "dev.jsonl", _canonical("t", 1))
    with pytest.raises(DataError, match="id 't0' occurs in both split 'train' and 'dev'"):
        load_training_source(cfg, data_dir=tmp_path, seed=0)


# --------------------------------------------------------------------------- dolly
def test_dolly_raw_format_and_dev_holdout(tmp_path):
    _write_jsonl(tmp_path / "databricks-dolly-15k.jsonl", _dolly_raw(1010))
    cfg = {"source": "dolly", "path": "databricks-dolly-15k.jsonl"}
    splits, info = load_training_source_with_info(cfg, data_dir=tmp_path, seed=0)
    assert set(splits) == {"train", "dev"}
    dev, train = splits["dev"], splits["train"]
    assert len(dev) == 1000 and len(train) == 10
    assert dev[0].id == "dolly_00000" and train[0].id == "dolly_01000" and train[-1].id == "dolly_01009"
    first = dev[0]
    assert (first.instruction, first.input, first.output) == ("Question number 0?", "Context 0.", "Answer 0.")
    assert first.prompt == build_prompt("Question number 0?", "Context 0.")
    assert dev[1].input == "" and dev[1].prompt == build_prompt("Question number 1?")
    assert first.meta["category"] == "open_qa" and first.meta["source_index"] == 0
    assert info["format"] == "databricks" and info["dev_num"] == 1000 and info["long_prompts"] == "truncate"
    assert info["sha256_of"] == "file" and len(info["sha256"]) == 64


def test_dolly_options_recorded_and_dev_num(tmp_path):
    _write_jsonl(tmp_path / "raw.jsonl", _dolly_raw(30))
    cfg = {"source": "dolly", "path": str(tmp_path / "raw.jsonl"), "dev_num": 10, "long_prompts": "drop"}
    splits, info = load_training_source_with_info(cfg, data_dir=None, seed=0)
    assert (len(splits["dev"]), len(splits["train"])) == (10, 20)
    assert info["long_prompts"] == "drop" and info["config"]["long_prompts"] == "drop"
    with pytest.raises(DataError, match="only 30 Dolly records.*dev_num = 30"):
        load_training_source(dict(cfg, dev_num=30), data_dir=None, seed=0)


def test_dolly_minillm_layout_and_mixed_layout(tmp_path):
    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}", "topic": "open_qa",
             "prompt": build_prompt(f"Q{i}")} for i in range(5)]
    _write_jsonl(tmp_path / "raw.jsonl", rows)
    splits, info = load_training_source_with_info({"source": "dolly", "path": "raw.jsonl", "dev_num": 2},
                                                  data_dir=tmp_path, seed=0)
    assert info["format"] == "minillm" and splits["dev"][0].meta["category"] == "open_qa"
    assert [r.id for r in splits["train"]] == ["dolly_00002", "dolly_00003", "dolly_00004"]
    _write_jsonl(tmp_path / "mixed.jsonl", rows[:2] + _dolly_raw(2))
    with pytest.raises(DataError, match=r"mixed\.jsonl:3: record in databricks layout"):
        load_training_source({"source": "dolly", "path": "mixed.jsonl", "dev_num": 1}, data_dir=tmp_path, seed=0)
    _write_jsonl(tmp_path / "other.jsonl", [{"question": "x", "answer": "y"}])
    with pytest.raises(DataError, match=r"other\.jsonl:1: neither Databricks Dolly"):
        load_training_source({"source": "dolly", "path": "other.jsonl", "dev_num": 1}, data_dir=tmp_path, seed=0)


def test_dolly_exclude_before_split(tmp_path):
    raw = _dolly_raw(1010)
    _write_jsonl(tmp_path / "raw.jsonl", raw)
    test_rows = [{"id": f"t{i}", "instruction": raw[i]["instruction"], "input": raw[i]["context"],
                  "output": raw[i]["response"]} for i in range(5)]
    _write_jsonl(tmp_path / "test.jsonl", test_rows)
    cfg = {"source": "dolly", "path": "raw.jsonl", "exclude": ["test.jsonl"]}
    splits, info = load_training_source_with_info(cfg, data_dir=tmp_path, seed=0)
    assert info["excluded"]["removed"] == 5
    assert splits["dev"][0].id == "dolly_00005" and len(splits["dev"]) == 1000 and len(splits["train"]) == 5
    with pytest.raises(DataError, match=r"data\.exclude: .*missing\.jsonl: file not found"):
        load_training_source(dict(cfg, exclude=["missing.jsonl"]), data_dir=tmp_path, seed=0)


def test_dolly_missing_path_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"data\.path: .*nope\.jsonl: Dolly file not found"):
        load_training_source({"source": "dolly", "path": "nope.jsonl"}, data_dir=tmp_path, seed=0)


@pytest.mark.timeout(120)
def test_dolly_hub_offline_is_a_clear_error(hub_offline):
    with pytest.raises(DataError, match=r"databricks/databricks-dolly-15k.*unreachable.*data\.path"):
        load_training_source({"source": "dolly"}, data_dir=None, seed=0)


@pytest.mark.shared_data
def test_dolly_on_real_minillm_file(shared_data_dir):
    """MiniLLM's dev file through the dolly source: MiniLLM layout, ids kept, one pair shared with the test set."""
    cfg = {"source": "dolly", "path": "dolly-minillm-dev.jsonl", "dev_num": 500,
           "exclude": ["dolly-minillm-test.jsonl"]}
    splits, info = load_training_source_with_info(cfg, data_dir=shared_data_dir, seed=0)
    assert info["format"] == "minillm"
    assert info["excluded"]["removed"] == 1                       # shared/data README §1c
    assert len(splits["dev"]) == 500 and len(splits["train"]) == 499
    assert splits["dev"][0].id == "dolly_dev_0000"
    assert all(r.prompt == build_prompt(r.instruction, r.input) for s in splits.values() for r in s)


# --------------------------------------------------------------------------- hf
def test_hf_source_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        n = 4 if kwargs["split"] == "train[2:]" else 2
        return [{"question": f"{kwargs['split']} q{i}", "ctx": None, "answers": [f"a{i}", f"b{i}"]} for i in range(n)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = {"source": "hf", "hf_id": "org/set", "subset": "en", "revision": "abc",
           "splits": {"train": "train[2:]", "dev": "train[:2]"},
           "fields": {"instruction": "question", "input": "ctx", "output": "answers"}}
    splits, info = load_training_source_with_info(cfg, data_dir=None, seed=0)
    assert calls[0] == ("org/set", ("en",), {"split": "train[2:]", "revision": "abc"})
    assert [r.id for r in splits["dev"]] == ["dev_00000", "dev_00001"]
    assert splits["train"][1].references == ("a1", "b1") and splits["train"][1].input == ""
    assert splits["train"][0].prompt == build_prompt("train[2:] q0")
    assert info["hf_id"] == "org/set" and set(info["sha256"]) == {"train", "dev"}


def test_hf_source_missing_column(monkeypatch):
    monkeypatch.setattr(sources, "hub_load_rows", lambda *a, **k: [{"text": "x"}])
    cfg = {"source": "hf", "hf_id": "org/set", "splits": {"train": "train", "dev": "validation"}}
    with pytest.raises(DataError, match=r"column 'instruction'.*data\.fields.*columns: text"):
        load_training_source(cfg, data_dir=None, seed=0)


def test_limit_must_name_a_split(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", _canonical("t", 2))
    _write_jsonl(tmp_path / "dev.jsonl", _canonical("v", 2))
    cfg = {"source": "jsonl", "files": {"train": "train.jsonl", "dev": "dev.jsonl"}, "limit": {"test": 1}}
    with pytest.raises(ConfigError, match=r"data\.limit: no split 'test'"):
        load_training_source(cfg, data_dir=tmp_path, seed=0)
