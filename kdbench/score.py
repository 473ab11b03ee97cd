"""Score another codebase's predictions against an eval set with kdbench's metric and protocol checks.

The MiniLLM -> DistiLLM -> POCL lineage's evaluator (MiniLLM ``evaluate_main.py``) writes two files per
run: ``answers.jsonl``, one ``{"text": answer}`` per line in eval-set order (the decoded response, cut at
``<|endoftext|>``, stripped), and ``preds.txt``, one line per example: the decoded prompt and the raw
response, each with newlines written as ``<n>``, joined by two tabs. It then prints
``compute_metrics(answers, references)``: Rouge-L and exact match ×100, rounded to 4 decimals.
:func:`score_predictions` reads either file (or a JSONL keyed by record id), checks it against the eval
set (one prediction per record, nothing missing, nothing extra) and returns kdbench's scores next to the
lineage's rounded ones, so that a published run and a fresh one meet under one scorer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.data import Record, load_records, read_jsonl
from kdbench.errors import DataError
from kdbench.io import sha256_file

FORMATS = ("answers", "preds", "jsonl")
NEWLINE_MARK = "<n>"          # how the lineage writes a newline inside one line of preds.txt
FIELD_SEPARATOR = "\t\t"      # between the decoded prompt and the response in preds.txt
PREDICTION_KEYS = ("prediction", "text", "output", "response")


def detect_format(path: Path, rows: list[tuple[int, dict]] | None) -> str:
    """'preds' for a .txt file; for JSONL (``rows``, read once), 'jsonl' when the first object carries an id,
    else 'answers'."""
    if path.suffix == ".txt" or rows is None:
        return "preds"
    return "jsonl" if "id" in rows[0][1] else "answers"


def _answers(path: Path, rows: list[tuple[int, dict]]) -> list[str]:
    out = []
    for lineno, obj in rows:
        if not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{lineno}: an answers.jsonl line needs a string field 'text' "
                            f"(got keys {sorted(obj)})")
        out.append(obj["text"])
    return out


def _preds(path: Path, records: list[Record]) -> list[str]:
    """The answers the lineage derives from preds.txt's responses: ``<n>`` back to newlines, stripped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {exc.start}); save the file as UTF-8") from None
    # Only "\n" ends a line there: a response may hold "\r" or other characters that splitlines() breaks on.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for lineno, line in enumerate(lines, start=1):
        record = records[lineno - 1] if lineno <= len(records) else None
        # The decoded prompt is normally the record's prompt; when it is, split right after it, so that a
        # prompt holding two tabs cannot move the split. Otherwise the first separator ends the prompt.
        prefix = record.prompt.replace("\n", NEWLINE_MARK) + FIELD_SEPARATOR if record is not None else None
        if prefix is not None and line.startswith(prefix):
            response = line[len(prefix):]
        elif FIELD_SEPARATOR in line:
            response = line.split(FIELD_SEPARATOR, 1)[1]
        else:
            raise DataError(f"{path}:{lineno}: a preds.txt line is '<prompt>\\t\\t<response>'; no two-tab separator")
        out.append(response.replace(NEWLINE_MARK, "\n").strip())
    return out


def _keyed(path: Path, rows: list[tuple[int, dict]], records: list[Record]) -> list[str]:
    by_id: dict[str, str] = {}
    for lineno, obj in rows:
        key = next((k for k in PREDICTION_KEYS if isinstance(obj.get(k), str)), None)
        if "id" not in obj or key is None:
            raise DataError(f"{path}:{lineno}: a keyed prediction needs 'id' and one of {', '.join(PREDICTION_KEYS)} "
                            f"(got keys {sorted(obj)})")
        ident = str(obj["id"])
        if ident in by_id:
            raise DataError(f"{path}:{lineno}: id '{ident}' appears twice")
        by_id[ident] = obj[key]
    wanted = [r.id for r in records]
    missing = [i for i in wanted if i not in by_id]
    extra = sorted(set(by_id) - set(wanted))
    if missing or extra:
        raise DataError(f"{path}: ids do not match the eval set's {len(wanted)} records: {len(missing)} missing "
                        f"(e.g. {', '.join(missing[:3]) or '-'}), {len(extra)} not in the eval set "
                        f"(e.g. {', '.join(extra[:3]) or '-'})")
    return [by_id[i] for i in wanted]


def read_predictions(path: Path, fmt: str, records: list[Record],
                     rows: list[tuple[int, dict]] | None = None) -> list[str]:
    """One prediction per record, in the records' order; a count or id mismatch is an error. ``rows``: the
    file's JSONL rows when already read."""
    if fmt != "preds" and rows is None:
        rows = read_jsonl(path)
    if fmt == "jsonl":
        return _keyed(path, rows, records)
    predictions = _answers(path, rows) if fmt == "answers" else _preds(path, records)
    if len(predictions) != len(records):
        raise DataError(f"{path}: {len(predictions)} predictions for the eval set's {len(records)} records; the "
                        f"{fmt} format is positional (one line per record, in eval-set order): score the same "
                        "records (--max-examples for the first N)")
    return predictions


def load_eval_records(eval_set: str, data_dir: Path | None, evals_root: Path = Path("evals")) -> tuple[list[Record], str]:
    """An eval set by its registry name (evals/<name>/), or a records file the workflow prepared
    (results/<profile>/evalsets/<name>.jsonl). Returns the records and a display name."""
    from kdbench.evals import discover_evals, load_eval_set

    path = Path(eval_set)
    if path.suffix == ".jsonl":
        return load_records(path), path.stem
    specs = discover_evals(evals_root)
    if eval_set not in specs:
        raise DataError(f"unknown eval set '{eval_set}': the registry ({evals_root}/) has {', '.join(specs)}; "
                        "or give a prepared records file (results/<profile>/evalsets/<name>.jsonl)")
    records, info = load_eval_set(specs[eval_set], data_dir=data_dir)
    return records, specs[eval_set].display_name


def score_predictions(predictions: Path, eval_set: str, *, data_dir: Path | None, fmt: str = "auto",
                      max_examples: int | None = None, evals_root: Path = Path("evals")) -> dict[str, Any]:
    from kdbench.metrics import exact_match, lineage_metrics, rouge_l

    predictions = Path(predictions)
    if not predictions.is_file():
        raise DataError(f"{predictions}: predictions file not found")
    records, display = load_eval_records(eval_set, data_dir, evals_root)
    if max_examples is not None:
        if max_examples < 1:
            raise DataError(f"--max-examples must be a positive integer, got {max_examples}")
        records = records[:max_examples]
    if fmt not in (*FORMATS, "auto"):
        raise DataError(f"unknown predictions format '{fmt}'; one of {', '.join(FORMATS)} (or auto)")
    is_jsonl = fmt in ("answers", "jsonl") or (fmt == "auto" and predictions.suffix != ".txt")
    rows = read_jsonl(predictions) if is_jsonl else None       # read once: format detection and scoring
    fmt = detect_format(predictions, rows) if fmt == "auto" else fmt
    texts = read_predictions(predictions, fmt, records, rows)
    references = [list(r.references) for r in records]
    rouge, em = rouge_l(texts, references), exact_match(texts, references)
    n = len(records)
    return {"predictions": str(predictions), "sha256": sha256_file(predictions), "format": fmt,
            "eval_set": eval_set, "display_name": display, "n": n,
            "rouge_l": sum(rouge) / n, "exact_match": sum(em) / n,
            "lineage": lineage_metrics(texts, references),
            "empty_predictions": sum(1 for t in texts if not t.strip())}

