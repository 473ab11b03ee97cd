"""`kdbench score`: predictions written as the MiniLLM/DistiLLM/POCL lineage writes them (answers.jsonl,
preds.txt) or keyed by id, scored against real eval sets, must give exactly the numbers the lineage's own
evaluator prints (S-NI/MiniLLM compute_metrics, written out here with rouge_score), and every mismatch
between predictions and eval set is an error."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from kdbench.cli import main
from kdbench.data import Record
from kdbench.errors import DataError
from kdbench.evals import discover_evals, load_eval_set
from kdbench.score import score_predictions

REPO = Path(__file__).resolve().parents[2]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


# ------------------------------------------------------------------ the lineage's evaluator, independently
def _lineage_normalize(text: str) -> str:
    """S-NI's normalize_answer, which MiniLLM's rouge_metric uses: lower, drop punctuation, fix whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(text.split())


def lineage_compute_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    em = rouge = 0
    for pred, golds in zip(predictions, references):
        em += max(float(_lineage_normalize(pred) == _lineage_normalize(g)) for g in golds)
        rouge += max(SCORER.score(g, pred)["rougeL"].fmeasure for g in golds)
    return {"exact_match": round(100.0 * em / len(references), 4), "rougeL": round(100.0 * rouge / len(references), 4)}


# ------------------------------------------------------------------ predictions, written the lineage's way
def _responses(records: list[Record], seed: int) -> list[str]:
    """Raw decoded responses of mixed quality: exact answers, case/punctuation variants, partial answers,
    another record's answer, multi-line text, empty output, and surrounding whitespace."""
    rng = random.Random(seed)
    out = []
    for i, rec in enumerate(records):
        ref = rng.choice(rec.references)
        words = ref.split()
        kind = i % 7
        out.append([f" {ref}", f" {ref.upper()}!", " " + " ".join(words[: max(1, len(words) // 2)]),
                    " " + records[(i + 1) % len(records)].output, f"\n{ref}\nand more\n", "", f"  {ref}  \n"][kind])
    return out


def write_lineage_files(records: list[Record], responses: list[str], folder: Path) -> tuple[Path, Path, list[str]]:
    """What MiniLLM's evaluate_main writes: preds.txt (decoded prompt and raw response, newlines as <n>,
    joined by two tabs) and answers.jsonl ({"text": response with <n> back to newlines, stripped})."""
    folder.mkdir(parents=True, exist_ok=True)
    preds, answers = folder / "preds.txt", folder / "answers.jsonl"
    texts = []
    with preds.open("w", encoding="utf-8") as p, answers.open("w", encoding="utf-8") as a:
        for rec, response in zip(records, responses):
            p.write(rec.prompt.replace("\n", "<n>") + "\t\t" + response.replace("\n", "<n>") + "\n")
            text = response.replace("<n>", "\n").strip()
            a.write(json.dumps({"text": text}) + "\n")
            texts.append(text)
    return preds, answers, texts


@pytest.fixture(scope="module")
def real_sets(shared_data_dir):
    specs = discover_evals(REPO / "evals")
    return {name: load_eval_set(specs[name], data_dir=shared_data_dir)[0] for name in ("dolly", "sinst", "vicuna")}


@pytest.mark.parametrize("eval_set", ["dolly", "sinst", "vicuna"])
def test_lineage_files_score_exactly_as_the_lineage_prints(eval_set, real_sets, shared_data_dir, tmp_path):
    records = real_sets[eval_set]
    preds, answers, texts = write_lineage_files(records, _responses(records, seed=len(records)), tmp_path)
    expected = lineage_compute_metrics(texts, [list(r.references) for r in records])
    assert 0 < expected["exact_match"] < 100 and 0 < expected["rougeL"] < 100   # a real mix, not a trivial case
    for path, fmt in ((answers, "answers"), (preds, "preds")):
        result = score_predictions(path, eval_set, data_dir=shared_data_dir, evals_root=REPO / "evals")
        assert result["format"] == fmt and result["n"] == len(records)
        assert result["lineage"] == expected, (fmt, result["lineage"], expected)
        assert f"{result['lineage']['rougeL']}" == f"{expected['rougeL']}"        # the printed decimals
        assert result["rouge_l"] == pytest.approx(expected["rougeL"], abs=1e-4)
        assert result["exact_match"] == pytest.approx(expected["exact_match"], abs=1e-4)


def test_the_cli_prints_one_json_object(real_sets, shared_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    records = real_sets["vicuna"]
    _, answers, _ = write_lineage_files(records, _responses(records, seed=1), tmp_path)
    assert main(["score", str(answers), "--eval-set", "vicuna", "--data-dir", str(shared_data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"rouge_l", "exact_match", "n", "lineage"} <= set(out) and out["n"] == 80


# ------------------------------------------------------------------ protocol checks (no shared data needed)
def _records_file(tmp_path: Path, n: int = 6) -> tuple[Path, list[Record]]:
    rows = [{"id": f"r{i}", "instruction": f"Repeat word {i}", "input": "a\t\tb" if i == 2 else "",
             "output": f"word {i} is here"} for i in range(n)]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from kdbench.data import load_records
    return path, load_records(path)


def test_a_count_mismatch_is_an_error(tmp_path):
    path, records = _records_file(tmp_path)
    _, answers, _ = write_lineage_files(records[:-1], [" x"] * 5, tmp_path / "short")
    with pytest.raises(DataError, match=r"answers.jsonl: 5 predictions for the eval set's 6 records"):
        score_predictions(answers, str(path), data_dir=None)
    assert score_predictions(answers, str(path), data_dir=None, max_examples=5)["n"] == 5


def test_a_prompt_holding_two_tabs_does_not_move_the_split(tmp_path):
    path, records = _records_file(tmp_path)
    assert "\t\t" in records[2].prompt
    preds, answers, _ = write_lineage_files(records, [f" {r.output}" for r in records], tmp_path / "tabs")
    by_preds = score_predictions(preds, str(path), data_dir=None)
    assert by_preds["exact_match"] == 100.0 == score_predictions(answers, str(path), data_dir=None)["exact_match"]


def test_keyed_predictions_are_matched_by_id_in_any_order(tmp_path):
    path, records = _records_file(tmp_path)
    rows = [{"id": r.id, "prediction": r.output if i % 2 else "nothing"} for i, r in enumerate(records)]
    keyed = tmp_path / "keyed.jsonl"
    keyed.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    result = score_predictions(keyed, str(path), data_dir=None)
    assert result["format"] == "jsonl" and result["exact_match"] == 50.0
    keyed.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1] + [rows[0]]))
    with pytest.raises(DataError, match="id 'r0' appears twice"):
        score_predictions(keyed, str(path), data_dir=None)
    keyed.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1] + [{"id": "zz", "prediction": "x"}]))
    with pytest.raises(DataError, match="1 missing .*r5.*1 not in the eval set .*zz"):
        score_predictions(keyed, str(path), data_dir=None)


def test_malformed_lines_name_file_and_line(tmp_path):
    path, records = _records_file(tmp_path)
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=r"answers.jsonl:2: .*'text'"):
        score_predictions(bad, str(path), data_dir=None, fmt="answers")
    txt = tmp_path / "preds.txt"
    txt.write_text("no separator here\n")
    with pytest.raises(DataError, match=r"preds.txt:1: .*two-tab"):
        score_predictions(txt, str(path), data_dir=None)
    with pytest.raises(DataError, match="unknown eval set 'nope'"):
        score_predictions(bad, "nope", data_dir=None, evals_root=REPO / "evals")
