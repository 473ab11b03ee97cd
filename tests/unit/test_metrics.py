"""kdbench.metrics against rouge_score itself: every example of the real eval sets, edge cases,
random text, and the evaluate module. Parity is ``==`` on floats, never approx."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, tokenizers

from kdbench import metrics
from kdbench.errors import ResultError
from kdbench.metrics import exact_match, lineage_metrics, rouge_l, tokenize_for_rouge

REPO_ROOT = Path(__file__).resolve().parents[2]
EVALUATE_MODULE = REPO_ROOT / "kdbench" / "evaluate_metric" / "kdbench_rouge"
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
STEM_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=True)


def reference_scores(predictions, references):
    """What the lineage computes: rouge_score's F-measure, best over references, x100."""
    out = []
    for pred, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        out.append(SCORER.score_multi(refs, pred)["rougeL"].fmeasure * 100)
    return out


def assert_identical(got, expected, labels=None):
    assert len(got) == len(expected)
    labels = labels or list(range(len(got)))
    bad = [(label, g, e) for label, g, e in zip(labels, got, expected) if g != e]
    assert not bad, f"{len(bad)} examples differ from rouge_score, first ones: {bad[:5]}"


# ---------------------------------------------------------------------------------------------
# the real eval sets


def _read_records(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def eval_files(shared_data_dir) -> dict[str, list[dict]]:
    files = sorted(shared_data_dir.glob("*.jsonl"))
    # The README documents six normalised sets; fewer means the parity test silently covers less.
    assert len(files) >= 6, [f.name for f in files]
    return {f.name: _read_records(f) for f in files}


def _pairs(records: list[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    """Two predictions per record: its instruction+input (little overlap, many distinct words)
    and the next record's answer (answer-like text; same task in S-NI, so real overlap)."""
    preds, refs, labels = [], [], []
    n = len(records)
    for i, rec in enumerate(records):
        ref = list(rec["outputs"]) if rec.get("outputs") else [rec["output"]]
        preds += [f"{rec['instruction']}\n{rec['input']}", records[(i + 1) % n]["output"]]
        refs += [ref, ref]
        labels += [f"{rec['id']}/instruction", f"{rec['id']}/next-output"]
    return preds, refs, labels


def test_rouge_l_matches_rouge_score_on_every_eval_file(eval_files):
    for name, records in eval_files.items():
        preds, refs, labels = _pairs(records)
        assert_identical(rouge_l(preds, refs), reference_scores(preds, refs), [f"{name}:{x}" for x in labels])


def test_multi_reference_files_really_exercise_the_max(eval_files):
    # Guards the parity test above: without multi-reference examples it would not cover score_multi.
    multi = [r for recs in eval_files.values() for r in recs if len(r.get("outputs") or []) > 1]
    assert len(multi) > 50
    preds = [r["outputs"][-1] for r in multi]
    refs = [r["outputs"] for r in multi]
    got = rouge_l(preds, refs)
    assert_identical(got, reference_scores(preds, refs))
    # the last reference is the prediction itself, so the max must find it
    assert all(s == 100.0 for s, p in zip(got, preds) if tokenize_for_rouge(p))


def test_exact_match_on_real_answers(eval_files):
    refs = [r["output"] for recs in eval_files.values() for r in recs]
    assert exact_match(refs, refs) == [100.0] * len(refs)
    # Case and ASCII punctuation are normalised away, so shouting with extra punctuation still matches.
    shouted = [f"  {r.upper()}!! " for r in refs]
    expected = [100.0 * (_squad_norm(s) == _squad_norm(r)) for s, r in zip(shouted, refs)]
    assert exact_match(shouted, refs) == expected
    # neighbouring answers: mostly different, but uinst has runs of "Yes"/"No" that must match
    shifted = refs[1:] + refs[:1]
    got = exact_match(shifted, refs)
    assert got == [100.0 * (_squad_norm(a) == _squad_norm(b)) for a, b in zip(shifted, refs)]
    assert 0 < got.count(100.0) < len(refs) / 2


def _squad_norm(text: str) -> str:
    """The lineage's answer normalisation, spelled out independently as an oracle."""
    kept = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(kept.split())


# ---------------------------------------------------------------------------------------------
# hand-made cases

EDGE_PAIRS = [
    ("", ""),
    ("", "the cat"),
    ("the cat", ""),
    ("!!! ... ???", "--- ,,, ;;;"),
    ("!!!", "the cat"),
    ("   \n\t ", "the cat"),
    ("The cat sat on the mat.", "the cat was on the mat"),
    ("Running dogs ran; the runner runs.", "run dog run the run run"),
    ("was has its", "wa ha it"),          # <= 3 characters: never stemmed
    ("cats", "cat"),                      # 4 characters: stemmed
    ("generously generous generation", "gener generous general"),
    ("Café naïve résumé façade", "cafe naive resume facade"),
    ("Straße İstanbul ÆON ﬁle", "strasse istanbul aeon file"),
    ("\u212aelvin", "kelvin"),            # KELVIN SIGN lowercases to ASCII 'k'
    ("你好，世界 🌍 مرحبا", "hello world"),
    ("3.14159 1,000,000 2023-01-01 COVID-19 v2.0", "3 14159 1 000 000 2023 01 01 covid 19 v2 0"),
    ("a1b2 C3PO r2d2 500ms", "a1b2 c3po r2d2 500m"),
    ("the the the the", "the"),
    ("a b c d e f", "f e d c b a"),
    ("It's John's book—isn't it?", "it s john s book isn t it"),
    ("x" * 50, "x" * 50),
]


@pytest.mark.parametrize("pred,ref", EDGE_PAIRS)
def test_edge_cases_match_rouge_score(pred, ref):
    assert rouge_l([pred], [ref]) == reference_scores([pred], [ref])
    assert list(tokenize_for_rouge(pred)) == STEM_TOKENIZER.tokenize(pred)
    assert list(tokenize_for_rouge(ref)) == STEM_TOKENIZER.tokenize(ref)


def test_known_values():
    # 5 of 6 tokens in order on both sides: P = R = F = 5/6
    p = r = 5 / 6
    assert rouge_l(["The cat sat on the mat."], ["the cat was on the mat"]) == [2 * p * r / (p + r) * 100]
    # stemming makes these identical token sequences
    assert rouge_l(["Running dogs!"], ["run dog"]) == [100.0]
    assert tokenize_for_rouge("Running dogs, 3 CATS.") == ("run", "dog", "3", "cat")
    # no tokens on either side scores 0, not an error and not 100
    assert rouge_l(["", "abc", "!!!", "你好"], ["", "", "abc", "你好"]) == [0.0, 0.0, 0.0, 0.0]
    assert rouge_l([], []) == []


def test_multi_reference_takes_the_best_in_any_order():
    refs = ["x y z", "a b c", "a"]
    for order in (refs, refs[::-1], refs[1:] + refs[:1]):
        assert rouge_l(["a b c"], [order]) == [100.0]
    assert rouge_l(["a b c"], [("x y", "a q q")]) == reference_scores(["a b c"], [["x y", "a q q"]])
    # a bare string is one reference, not a list of characters
    assert rouge_l(["ab"], ["ab"]) == [100.0]
    mixed = rouge_l(["a b", "c d"], ["a b", ["x", "c d"]])
    assert mixed == [100.0, 100.0]


def test_length_mismatch_raises_and_names_both_counts():
    with pytest.raises(ResultError, match=r"3 predictions.*2 references"):
        rouge_l(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ResultError, match=r"1 predictions.*2 references"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ResultError, match=r"2 predictions.*0 references"):
        lineage_metrics(["a", "b"], [])


@pytest.mark.parametrize("preds,refs,pattern", [
    (["a"], [[]], "example 0 has an empty list"),
    ([None], ["a"], "prediction 0 is NoneType"),
    (["a", "b"], ["a", ["b", 3]], "reference 1 of example 1 is int"),
    ("abc", ["a", "b", "c"], "not one string"),
])
def test_malformed_inputs_raise_result_error(preds, refs, pattern):
    with pytest.raises(ResultError, match=pattern):
        rouge_l(preds, refs)


def test_tokenize_is_cached():
    metrics.clear_caches()
    first = tokenize_for_rouge("Cached tokens, please.")
    assert tokenize_for_rouge("Cached tokens, please.") is first
    assert metrics.tokenize_for_rouge.cache_info().hits >= 1
    metrics.clear_caches()
    assert metrics.tokenize_for_rouge.cache_info().currsize == 0


@pytest.mark.parametrize("pred,ref,expected", [
    ("The cat.", "the cat", 100.0),
    ("  hello \n\t world ", "hello world", 100.0),
    ("a cat", "cat", 0.0),               # articles are kept, unlike SQuAD
    ("hello…", "hello", 0.0),            # only ASCII punctuation is removed
    ("“yes”", "yes", 0.0),
    ("yes", "yes.", 100.0),
    ("Yes!", "no", 0.0),
    ("", "", 100.0),
    ("!!!", "", 100.0),
    ("e.g.", "eg", 100.0),               # punctuation is deleted, not turned into a space
    ("e. g.", "eg", 0.0),
    ("Café", "cafe", 0.0),
])
def test_exact_match_normalisation(pred, ref, expected):
    assert exact_match([pred], [ref]) == [expected]


def test_exact_match_takes_the_best_reference():
    assert exact_match(["No", "maybe"], [["yes", "no"], ("yes", "no")]) == [100.0, 0.0]


def test_lineage_metrics_reproduce_minillm_arithmetic():
    preds = ["The cat sat on the mat.", "yes", "Running dogs", "", "a b c d"]
    refs = [["the cat was on the mat"], ["Yes."], ["run dog", "cat"], ["anything"], ["d c b a", "x"]]
    fs = [SCORER.score_multi(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    total = 0
    for f in fs:
        total += f
    expected_rouge = 100.0 * total / len(preds)
    # only "yes" / "Yes." match exactly
    expected = {"exact_match": 100.0 * 1 / 5, "rougeL": expected_rouge}
    assert lineage_metrics(preds, refs, ndigits=None) == expected
    assert lineage_metrics(preds, refs) == {"exact_match": 20.0, "rougeL": round(expected_rouge, 4)}
    with pytest.raises(ResultError, match="no examples"):
        lineage_metrics([], [])


def test_stem_code_exhaustion_still_gives_identical_scores(monkeypatch):
    # Force both recovery paths: a rebuild between calls, and a single call with more distinct
    # stems than codes (falls back to integer ids).
    monkeypatch.setattr(metrics, "_MAX_STEMS", 20)
    metrics.clear_caches()
    try:
        small = [("alpha beta gamma delta", "delta gamma beta alpha epsilon")] * 3
        words = [f"word{i} thing{i}" for i in range(30)]
        big = [(" ".join(words[:20]), " ".join(words[10:]))]
        for batch in (small, big, small, [(w, w) for w in words]):
            preds, refs = [p for p, _ in batch], [r for _, r in batch]
            assert rouge_l(preds, refs) == reference_scores(preds, refs)
    finally:
        metrics.clear_caches()


def test_stem_codes_beyond_the_bmp_and_the_surrogate_gap(eval_files):
    # Long runs assign code points above 0xFFFF and skip the surrogates; LCS must not care.
    metrics.clear_caches()
    try:
        with metrics._encode_lock:
            # the next stems get codes just below 0x10000, then above it
            for i in range(0x10000 - 0x800 - 10):
                metrics._stem_chars[f"filler{i}"] = chr(i + 0x800 if i >= 0xD800 else i)
        records = eval_files["dolly-minillm-test.jsonl"][:40]
        preds, refs, _ = _pairs(records)
        assert rouge_l(preds, refs) == reference_scores(preds, refs)
        codes = sorted(ord(c) for c in metrics._stem_chars.values())
        assert codes[-1] > 0xFFFF and not any(0xD800 <= c < 0xE000 for c in codes)
    finally:
        metrics.clear_caches()


# Characters that each hit a different tokenizer path: ASCII letters and digits, separators,
# uppercase, Latin letters with diacritics, characters whose lowercase is or contains ASCII.
_ALPHABET = "aeiou bcdrstnglmy 0123 ABC .,;!?-'\n\té ñ ß İ \u212a ﬁ 你 🌍"
_text = st.text(alphabet=_ALPHABET, max_size=60)


@settings(max_examples=300, deadline=None)
@given(pred=_text, refs=st.lists(_text, min_size=1, max_size=3))
def test_random_text_matches_rouge_score(pred, refs):
    assert rouge_l([pred], [refs]) == reference_scores([pred], [refs])
    assert list(tokenize_for_rouge(pred)) == STEM_TOKENIZER.tokenize(pred)


# ---------------------------------------------------------------------------------------------
# evaluate module


def test_evaluate_load_from_path_works_offline(tmp_path):
    preds = ["The cat sat on the mat.", "yes", "Running dogs", "nothing here"]
    refs = [["the cat was on the mat", "a cat"], ["Yes."], ["run dog"], ["something else"]]
    # A fresh interpreter, so the offline switches are read before evaluate is imported, and a
    # private cache, so the test neither depends on nor writes to the user's ~/.cache.
    script = (
        "import json, sys, evaluate\n"
        f"m = evaluate.load({str(EVALUATE_MODULE)!r})\n"
        f"out = m.compute(predictions={preds!r}, references={refs!r}, return_per_example=True)\n"
        f"single = m.compute(predictions={preds!r}, references={[r[0] for r in refs]!r})\n"
        "print(json.dumps([out, single]))\n"
    )
    env = dict(os.environ, HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), HF_MODULES_CACHE=str(tmp_path / "modules"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, single = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        **lineage_metrics(preds, refs),
        "rougeL_per_example": reference_scores(preds, refs),
        "exact_match_per_example": [0.0, 100.0, 0.0, 0.0],
    }
    assert out["exact_match"] == 25.0
    assert single == lineage_metrics(preds, [r[0] for r in refs])
