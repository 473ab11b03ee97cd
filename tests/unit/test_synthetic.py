"""Synthetic instruction suite: determinism, balance, correct answers, difficulty, splits, errors."""

from __future__ import annotations

import collections
import json
import re
import statistics

import pytest

from kdbench.data import build_prompt, record_from_json
from kdbench.data import synthetic as syn
from kdbench.errors import ConfigError

SIZES = {"train": 1200, "dev": 80, "test": 120, "ood": 160}
FIELDS = {"id", "instruction", "input", "output", "prompt", "family", "difficulty", "split"}


@pytest.fixture(scope="module")
def suite():
    return syn.generate_suite(7, SIZES)


def _all(suite):
    return [r for rows in suite.values() for r in rows]


def _dump(suite) -> str:
    return json.dumps(suite, sort_keys=False)


# ----------------------------------------------------------------- API surface

def test_constants():
    assert len(syn.FAMILIES) >= 6
    assert {"copy", "reverse", "sort", "sum", "count", "lookup"} <= set(syn.FAMILIES)
    assert syn.ID_LEVELS == (1, 2, 3, 4, 5)
    assert syn.OOD_LEVELS == (6, 7)
    assert 40 <= len(syn.VOCAB) <= 60 and len(set(syn.VOCAB)) == len(syn.VOCAB)
    assert all(re.fullmatch(r"[a-z]+", w) for w in syn.VOCAB)
    for fam in syn.FAMILIES:
        assert len(syn.PARAPHRASES[fam]) >= 3


def test_split_sizes_and_fields(suite):
    assert list(suite) == list(SIZES)
    for split, rows in suite.items():
        assert len(rows) == SIZES[split]
        for r in rows:
            assert set(r) == FIELDS
            assert r["split"] == split
            assert isinstance(r["difficulty"], int)
            assert r["prompt"] == build_prompt(r["instruction"], r["input"])


# ----------------------------------------------------------------- determinism

def test_same_seed_identical_different_seed_differs():
    a = syn.generate_suite(3, {"train": 200, "test": 40, "ood": 40})
    b = syn.generate_suite(3, {"train": 200, "test": 40, "ood": 40})
    c = syn.generate_suite(4, {"train": 200, "test": 40, "ood": 40})
    assert _dump(a) == _dump(b)
    for split in a:
        assert [r["prompt"] for r in a[split]] != [r["prompt"] for r in c[split]]
    assert syn.generate_examples("dev", 50, 11) == syn.generate_examples("dev", 50, 11)


def test_adding_a_split_changes_no_other():
    small = syn.generate_suite(5, {"train": 300, "test": 60})
    big = syn.generate_suite(5, {"dev": 30, "train": 300, "test": 60, "ood": 20, "extra": 10})
    assert small["train"] == big["train"]
    assert small["test"] == big["test"]
    # train is generated the same way alone or inside a suite
    assert syn.generate_examples("train", 300, 5) == small["train"]


def test_splits_use_independent_streams():
    s = syn.generate_suite(1, {"a": 80, "b": 80})
    assert [r["prompt"] for r in s["a"]] != [r["prompt"] for r in s["b"]]


# ----------------------------------------------------------------- balance

def test_families_and_levels_balanced(suite):
    for split, rows in suite.items():
        fams = collections.Counter(r["family"] for r in rows)
        levels = collections.Counter(r["difficulty"] for r in rows)
        assert set(fams) == set(syn.FAMILIES), split
        assert max(fams.values()) - min(fams.values()) <= 1, (split, fams)
        assert max(levels.values()) - min(levels.values()) <= 1, (split, levels)
    # a multiple of families x levels fills every cell exactly
    cells = collections.Counter((r["family"], r["difficulty"]) for r in suite["train"])
    assert len(cells) == len(syn.FAMILIES) * len(syn.ID_LEVELS)
    assert set(cells.values()) == {SIZES["train"] // len(cells)}


def test_balance_when_counts_share_factors():
    rows = syn.generate_examples("x", 48, 2, levels=(1, 2, 3, 4), families=["copy", "sum", "max", "sort", "count", "lookup"])
    cells = collections.Counter((r["family"], r["difficulty"]) for r in rows)
    assert len(cells) == 24 and set(cells.values()) == {2}


def test_rows_are_shuffled(suite):
    fams = [r["family"] for r in suite["train"][:40]]
    assert fams != [syn.FAMILIES[i % len(syn.FAMILIES)] for i in range(40)]


def test_paraphrases_vary(suite):
    by_family = collections.defaultdict(set)
    for r in suite["train"]:
        by_family[r["family"]].add(re.sub(r'"[^"]*"', '"?"', r["instruction"]))
    for fam in syn.FAMILIES:
        assert len(by_family[fam]) >= 3, fam


# ----------------------------------------------------------------- answers (independent re-computation)

def _quoted(instruction: str) -> str:
    found = re.findall(r'"([a-z]+)"', instruction)
    assert len(found) == 1, instruction
    return found[0]


def _expected(r: dict) -> str:
    fam, inp, ins = r["family"], r["input"], r["instruction"]
    if fam == "copy":
        return inp
    if fam == "reverse":
        return " ".join(inp.split()[::-1])
    if fam == "sort":
        return " ".join(sorted(inp.split()))
    if fam == "sum":
        return str(sum(int(x) for x in inp.split()))
    if fam == "max":
        return str(max(int(x) for x in inp.split()))
    if fam == "count":
        return str(inp.split().count(_quoted(ins)))
    if fam == "lookup":
        table = {}
        for pair in inp.split(", "):
            key, value = pair.split(": ")
            assert key not in table, "duplicate key makes the answer ambiguous"
            table[key] = value
        return table[_quoted(ins)]
    if fam == "filter":
        cats = [c for c in syn.CATEGORIES if re.search(rf"\b{c}\b", ins)]
        assert len(cats) == 1, ins
        members = set(syn.CATEGORIES[cats[0]])
        return " ".join(w for w in inp.split() if w in members)
    raise AssertionError(f"no checker for family {fam}")


def test_every_answer_is_correct(suite):
    seen = set()
    for r in _all(suite):
        assert r["output"] == _expected(r), r
        seen.add(r["family"])
    assert seen == set(syn.FAMILIES)


def test_answers_are_clean_word_lists(suite):
    word = re.compile(r"[a-z0-9]+( [a-z0-9]+)*")
    vocab = set(syn.VOCAB)
    for r in _all(suite):
        assert word.fullmatch(r["output"]), r["output"]
        assert r["input"] == r["input"].strip() and "  " not in r["input"]
        for tok in re.findall(r"[a-z]+", r["input"]):
            assert tok in vocab, tok
    # count never asks about a missing word; sort lists distinct words
    for r in suite["train"]:
        if r["family"] == "count":
            assert int(r["output"]) >= 1
        if r["family"] == "sort":
            assert len(set(r["input"].split())) == len(r["input"].split())


def test_lengths_stay_short(suite):
    for r in _all(suite):
        n_in, n_out = len(r["input"].split()), len(r["output"].split())
        if r["difficulty"] <= 5:
            assert n_in <= 40 and n_out <= 30, r
        else:
            assert n_in <= 60 and n_out <= 50, r


# ----------------------------------------------------------------- difficulty

def test_difficulty_increases_length_per_family(suite):
    rows = suite["train"] + suite["ood"]
    for fam in syn.FAMILIES:
        means = []
        for level in syn.ID_LEVELS + syn.OOD_LEVELS:
            sel = [r for r in rows if r["family"] == fam and r["difficulty"] == level]
            assert sel, (fam, level)
            means.append(statistics.mean(len(r["input"].split()) + len(r["output"].split()) for r in sel))
        assert all(a < b for a, b in zip(means, means[1:])), (fam, means)


def test_ood_split_uses_ood_levels(suite):
    assert {r["difficulty"] for r in suite["ood"]} == set(syn.OOD_LEVELS)
    for split in ("train", "dev", "test"):
        assert {r["difficulty"] for r in suite[split]} == set(syn.ID_LEVELS)
    custom = syn.generate_suite(0, {"train": 20, "ood": 20}, id_levels=(1, 2), ood_levels=(8,))
    assert {r["difficulty"] for r in custom["ood"]} == {8}
    assert {r["difficulty"] for r in custom["train"]} == {1, 2}


def test_family_subset():
    rows = syn.generate_examples("train", 30, 0, families=["sort", "lookup"])
    assert {r["family"] for r in rows} == {"sort", "lookup"}


# ----------------------------------------------------------------- ids, overlap, loading

def test_ids_unique_across_suite(suite):
    ids = [r["id"] for r in _all(suite)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"syn-[a-z]+-\d{6}", i) for i in ids)


def test_no_prompt_overlap_with_train(suite):
    train = {r["prompt"] for r in suite["train"]}
    train_content = {(r["family"], r["input"], r["output"]) for r in suite["train"]}
    for split in ("dev", "test", "ood"):
        prompts = [r["prompt"] for r in suite[split]]
        assert len(prompts) == len(set(prompts)), split
        assert not train & set(prompts), split
        assert not train_content & {(r["family"], r["input"], r["output"]) for r in suite[split]}


def test_collisions_with_train_are_regenerated():
    # a tiny example space (sum of two numbers 1..20: 400 inputs) forces many collisions
    s = syn.generate_suite(0, {"train": 300, "test": 60}, id_levels=(1,), families=["sum"])
    train_inputs = {r["input"] for r in s["train"]}
    assert len({r["input"] for r in s["test"]}) == 60
    assert not train_inputs & {r["input"] for r in s["test"]}
    alone = syn.generate_examples("test", 60, 0, levels=(1,), families=["sum"])
    assert alone != s["test"]  # the same stream, but colliding draws were replaced
    excl = syn.generate_examples("test", 60, 0, levels=(1,), families=["sum"],
                                 exclude_prompts={r["prompt"] for r in alone[:10]})
    assert not {r["prompt"] for r in alone[:10]} & {r["prompt"] for r in excl}


def test_exhausted_example_space_is_a_config_error():
    with pytest.raises(ConfigError, match="sum"):
        syn.generate_examples("dev", 500, 0, levels=(1,), families=["sum"])


def test_records_load(suite):
    for r in _all(suite):
        rec = record_from_json(json.loads(json.dumps(r)), f"synthetic:{r['id']}")
        assert rec.output == r["output"] and rec.prompt == r["prompt"]
        assert rec.meta == {"family": r["family"], "difficulty": r["difficulty"], "split": r["split"]}


# ----------------------------------------------------------------- errors

def test_unknown_family_error_names_it_and_allowed():
    with pytest.raises(ConfigError) as exc:
        syn.generate_examples("train", 10, 0, families=["copy", "translate"])
    msg = str(exc.value)
    assert "translate" in msg
    for fam in syn.FAMILIES:
        assert fam in msg
    with pytest.raises(ConfigError, match="translate"):
        syn.generate_suite(0, {"train": 5}, families=["translate"])


@pytest.mark.parametrize("kwargs", [
    dict(n=-1), dict(levels=()), dict(levels=(0, 1)), dict(levels=("3",)), dict(families=[]),
    dict(n=2.5), dict(split=""),
])
def test_bad_arguments(kwargs):
    args = dict(split="train", n=10, seed=0)
    args.update(kwargs)
    with pytest.raises(ConfigError):
        syn.generate_examples(**args)


def test_bad_suite_arguments():
    with pytest.raises(ConfigError, match="test"):
        syn.generate_suite(0, {"train": 10, "test": -3})
    with pytest.raises(ConfigError):
        syn.generate_suite(0, {"train": 10}, ood_levels=())
    with pytest.raises(ConfigError):
        syn.generate_suite(0, {})


def test_zero_examples():
    assert syn.generate_examples("dev", 0, 0) == []
