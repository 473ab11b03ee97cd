"""Eval-set registry: contract over every evals/<name>/, the real files, hub fallback, footnotes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from kdbench import evals as evals_mod
from kdbench.data import build_prompt, read_jsonl
from kdbench.errors import ConfigError, DataError
from kdbench.evals import EvalSpec, discover_evals, load_eval_dir, load_eval_set

REPO_ROOT = Path(__file__).resolve().parents[2]
EVALS = REPO_ROOT / "evals"
EVAL_DIRS = sorted(p.name for p in EVALS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
PAPER_SETS = {"dolly": "DollyEval", "selfinst": "SelfInst", "vicuna": "Vicuna", "sinst": "S-NI", "unni": "UnNI"}
# documented counts (shared/data/README.md) of the sets whose file is at hand
COUNTS = {"dolly": 500, "selfinst": 242, "vicuna": 80, "sinst": 1694, "unni_standin": 1050}
MINILLM_DERIVED = ("dolly", "sinst", "vicuna", "unni_standin", "selfinst")
# MiniLLM's own files (its valid.jsonl layout: no id, output may be a list) kept under shared/data/raw
RAW_MINILLM = {"dolly": "minillm_dolly_valid.jsonl", "selfinst": "minillm_self-inst_valid.jsonl",
               "vicuna": "minillm_vicuna_valid.jsonl", "sinst": "minillm_sinst_11__valid.jsonl",
               "unni": "minillm_uinst_valid_short.jsonl"}


@pytest.fixture
def hub_offline(monkeypatch):
    """Make every hub access fail at once (the constants are read at import time, so patch them too)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):
        if module in sys.modules and hasattr(sys.modules[module], attr):
            monkeypatch.setattr(sys.modules[module], attr, True)


@pytest.fixture(scope="module")
def specs() -> dict[str, EvalSpec]:
    return discover_evals(EVALS)


def _workflow_split(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "split.jsonl"
    rows = [{"id": f"syn-test-{i}", "instruction": "Repeat the following words exactly.", "input": f"cat dog {i}",
             "output": f"cat dog {i}", "prompt": build_prompt("Repeat the following words exactly.", f"cat dog {i}")}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _shared_data_or_none() -> Path | None:
    """Same lookup as the shared_data_dir fixture, without skipping (the contract test then uses the hub)."""
    candidate = Path(os.environ.get("KDBENCH_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    return candidate if (candidate / "dolly-minillm-test.jsonl").is_file() else None


def _sha256sums(data_dir: Path) -> dict[str, str]:
    out = {}
    for line in (data_dir / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*").strip()] = digest
    return out


# --------------------------------------------------------------------------- contract, every folder
def test_discovery_is_sorted_and_has_the_paper_sets(specs):
    assert list(specs) == sorted(specs) == EVAL_DIRS
    for name, display in PAPER_SETS.items():
        assert specs[name].display_name == display
    assert {"synthetic_test", "synthetic_ood", "unni_standin"} <= set(specs)


@pytest.mark.parametrize("name", EVAL_DIRS)
def test_eval_folder_contract(name, tmp_path, hub_offline, request):
    directory = EVALS / name
    spec = load_eval_dir(directory)                 # schema-valid, name == folder
    assert spec.name == name
    assert spec.display_name.strip() and spec.description.strip()
    assert (directory / "README.md").is_file(), f"{directory}: add a short README.md"
    assert spec.references_description.strip()
    if spec.source_kind == "workflow":
        records, info = load_eval_set(spec, data_dir=None, workflow_split=_workflow_split(tmp_path))
        assert info["source_kind"] == "workflow" and info["count"] == 3
        return
    data_dir = _shared_data_or_none()
    try:
        records, info = load_eval_set(spec, data_dir=data_dir)
    except DataError as exc:   # data not at hand: the message must say so and name the file
        assert spec.file in str(exc), str(exc)
        assert ("unreachable" in str(exc)) if spec.hub else ("no hub fallback" in str(exc)), str(exc)
        pytest.skip(f"{name}: no local data and the hub is offline")
    assert records and info["count"] == len(records)
    assert {"name", "count", "expected_count", "source", "sha256", "footnotes"} <= set(info)
    assert len({r.id for r in records}) == len(records)


def test_paper_sets_declare_lineage(specs):
    for name in ("sinst", "unni"):
        token_filters = [f for f in specs[name].filters if f.kind == "min_reference_tokens"]
        assert token_filters and token_filters[0].applied_by == "source"
        assert token_filters[0].params["min_tokens"] == 11
    assert any(f.kind == "first_n" and f.params["n"] == 10000 and f.applied_by == "loader"
               for f in specs["unni"].filters)
    assert specs["sinst"].multiple_references and specs["sinst"].reference_field == "outputs"
    assert specs["unni"].hub.id == "MiniLLM/uinst" and specs["unni"].hub.data_files == "11_/valid.jsonl"
    assert specs["sinst"].hub.data_files == "11_/valid.jsonl"
    assert {specs[n].hub.id for n in ("dolly", "selfinst", "vicuna")} == {"MiniLLM/dolly", "MiniLLM/self-inst",
                                                                         "MiniLLM/Vicuna"}
    standin = specs["unni_standin"]
    assert standin.display_name != "UnNI" and "not MiniLLM" in standin.table_footnote
    assert standin.hub is None
    assert {n: specs[n].expected_count for n in COUNTS} == COUNTS
    assert specs["unni"].expected_count == 10000
    assert specs["selfinst"].options["full"].expected_count == 252


# --------------------------------------------------------------------------- the real files
@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_file_counts_fields_ids_prompts(name, specs, shared_data_dir):
    records, info = load_eval_set(specs[name], data_dir=shared_data_dir)
    assert info["count"] == len(records) == COUNTS[name]
    assert info["source_kind"] == "file" and info["sha256_of"] == "file"
    assert info["sha256"] == _sha256sums(shared_data_dir)[Path(info["source"]).name]
    expected_notes = 1 if specs[name].table_footnote else 0
    assert len(info["footnotes"]) == expected_notes          # count as documented: no count footnote
    assert len({r.id for r in records}) == len(records)
    for rec in records:
        assert rec.id and rec.instruction.strip() and rec.prompt.strip()
        assert rec.references and all(isinstance(x, str) and x.strip() for x in rec.references), rec.id
        if name in MINILLM_DERIVED:
            assert rec.prompt == build_prompt(rec.instruction, rec.input), rec.id


@pytest.mark.shared_data
def test_sinst_keeps_every_reference(specs, shared_data_dir):
    records, _ = load_eval_set(specs["sinst"], data_dir=shared_data_dir)
    rows = {obj["id"]: obj for _, obj in read_jsonl(shared_data_dir / "sinst-minillm-11plus.jsonl")}
    assert all(list(r.references) == rows[r.id]["outputs"] for r in records)
    assert all(r.output == rows[r.id]["output"] for r in records)
    assert max(len(r.references) for r in records) > 1          # multi-reference records exist


@pytest.mark.shared_data
def test_selfinst_default_and_full(specs, shared_data_dir):
    default, info = load_eval_set(specs["selfinst"], data_dir=shared_data_dir)
    full, info_full = load_eval_set(specs["selfinst"], data_dir=shared_data_dir, options={"full": True})
    assert (len(default), len(full)) == (242, 252)
    assert all(r.meta["in_minillm_eval"] for r in default)
    assert {r.id for r in default} < {r.id for r in full}
    assert info_full["expected_count"] == 252 and info_full["footnotes"] == []
    assert info_full["display_name"] != info["display_name"]
    removed = {f["name"]: f["removed"] for f in info["filters"]}
    assert removed == {"minillm_subset": 10}
    with pytest.raises(ConfigError, match="unknown option 'ful'.*allowed options: full"):
        load_eval_set(specs["selfinst"], data_dir=shared_data_dir, options={"ful": True})


@pytest.mark.shared_data
def test_dolly_dev_file_is_canonical(shared_data_dir):
    from kdbench.data import load_records
    records = load_records(shared_data_dir / "dolly-minillm-dev.jsonl")
    assert len(records) == 1000 and len({r.id for r in records}) == 1000
    assert all(r.prompt == build_prompt(r.instruction, r.input) for r in records)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(RAW_MINILLM))
def test_hub_path_reads_minillm_layout(name, specs, shared_data_dir, monkeypatch):
    """The hub fallback, fed MiniLLM's own released files (raw/), gives the same records as the local files."""
    raw_rows = [obj for _, obj in read_jsonl(shared_data_dir / "raw" / RAW_MINILLM[name])]
    calls = []

    def fake_hub(hf_id, **kwargs):
        calls.append((hf_id, kwargs))
        return raw_rows

    monkeypatch.setattr(evals_mod, "hub_load_rows", fake_hub)
    records, info = load_eval_set(specs[name], data_dir=None)
    assert calls and calls[0][0] == specs[name].hub.id
    assert calls[0][1]["data_files"] == specs[name].hub.data_files
    assert info["source_kind"] == "hf" and info["source"].startswith("hf:")
    assert all(r.id.startswith(specs[name].id_prefix) for r in records)
    if name == "unni":   # the short stand-in stands in for MiniLLM's 11_ file: the count footnote appears
        assert info["count"] == 1050 and info["footnotes"] and "10000" in info["footnotes"][0]
        return
    local, _ = load_eval_set(specs[name], data_dir=shared_data_dir)
    key = lambda r: (r.instruction, r.input, r.references)  # noqa: E731
    assert sorted(map(key, records)) == sorted(map(key, local))
    assert info["count"] == COUNTS[name] and info["footnotes"] == []


# --------------------------------------------------------------------------- hub offline
@pytest.mark.timeout(120)
def test_unni_offline_is_a_clear_data_error(specs, tmp_path, hub_offline):
    with pytest.raises(DataError) as err:
        load_eval_set(specs["unni"], data_dir=tmp_path)
    msg = str(err.value)
    assert "unreachable" in msg and "MiniLLM/uinst" in msg
    assert str(tmp_path / "uinst-minillm-11plus.jsonl") in msg      # where it looked / where to put it
    assert "11_/valid.jsonl" in msg


@pytest.mark.timeout(120)
def test_unni_offline_without_data_dir(specs, hub_offline):
    with pytest.raises(DataError, match="unreachable.*no local file"):
        load_eval_set(specs["unni"], data_dir=None)


def test_full_selfinst_refuses_the_prefiltered_hub_copy(specs, monkeypatch):
    monkeypatch.setattr(evals_mod, "hub_load_rows", lambda *a, **k: pytest.fail("hub must not be called"))
    with pytest.raises(DataError, match="minillm_subset.*already has applied"):
        load_eval_set(specs["selfinst"], data_dir=None, options={"full": True})


def test_workflow_set_needs_its_split(specs):
    with pytest.raises(DataError, match="workflow_split"):
        load_eval_set(specs["synthetic_test"], data_dir=None)


# --------------------------------------------------------------------------- footnotes and broken folders
def _copy_set(tmp_path: Path, name: str, edit) -> Path:
    root = tmp_path / "evals"
    shutil.copytree(EVALS / name, root / name)
    path = root / name / "eval.yaml"
    manifest = yaml.safe_load(path.read_text())
    edit(manifest)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def test_count_mismatch_is_a_footnote(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"v{i}", "instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(7)]
    (data / "vicuna-80.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = discover_evals(EVALS)["vicuna"]
    records, info = load_eval_set(spec, data_dir=data)
    assert info["count"] == 7 and info["expected_count"] == 80
    assert len(info["footnotes"]) == 1
    note = info["footnotes"][0]
    assert "Vicuna" in note and "7" in note and "80" in note


def test_unknown_key_names_directory_and_key(tmp_path):
    root = _copy_set(tmp_path, "dolly", lambda m: m.update(split_name="test"))
    with pytest.raises(ConfigError) as err:
        discover_evals(root)
    msg = str(err.value)
    assert str(root / "dolly") in msg and "split_name" in msg and "allowed keys" in msg and "display_name" in msg


def test_nested_unknown_key_and_name_mismatch(tmp_path):
    root = _copy_set(tmp_path, "sinst", lambda m: m["source"]["hf"].update(config="11_"))
    with pytest.raises(ConfigError, match=r"unknown key 'source\.hf\.config'.*subset"):
        discover_evals(root)
    root2 = _copy_set(tmp_path / "b", "vicuna", lambda m: m.update(name="vicuna2"))
    with pytest.raises(ConfigError, match="must equal the folder name"):
        discover_evals(root2)


def test_loader_applied_token_filter_is_refused(tmp_path):
    def edit(m):
        m["filters"][0]["applied_by"] = "loader"
    root = _copy_set(tmp_path, "sinst", edit)
    with pytest.raises(ConfigError, match="cannot be applied by the loader"):
        discover_evals(root)


def test_folder_without_manifest_and_skipped_folders(tmp_path):
    root = tmp_path / "evals"
    (root / "_template").mkdir(parents=True)
    (root / ".hidden").mkdir()
    assert discover_evals(root) == {}
    (root / "broken").mkdir()
    with pytest.raises(ConfigError, match=r"broken: eval set folder lacks eval\.yaml"):
        discover_evals(root)
    with pytest.raises(ConfigError, match="not found"):
        discover_evals(tmp_path / "nowhere")


def test_malformed_rows_name_file_and_line(tmp_path, specs):
    data = tmp_path / "data"
    data.mkdir()
    good = {"id": "a", "instruction": "Do it.", "input": "", "output": "Done."}
    bad_prompt = dict(good, id="b", prompt="X")
    (data / "dolly-minillm-test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad_prompt) + "\n")
    with pytest.raises(DataError, match=r"dolly-minillm-test\.jsonl:2: prompt differs"):
        load_eval_set(specs["dolly"], data_dir=data)
    (data / "sinst-minillm-11plus.jsonl").write_text(json.dumps(dict(good, input="x")) + "\n")
    with pytest.raises(DataError, match=r":1: .*references\.field 'outputs'"):
        load_eval_set(specs["sinst"], data_dir=data)


def test_spec_is_frozen(specs):
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs["dolly"].display_name = "x"
