"""Canonical instruction records, the MiniLLM prompt template, and validated JSONL I/O.

A record on disk is one JSON object per line with at least:
  id (str, unique), instruction (str), input (str, may be empty),
  output (str: the first reference) and optionally outputs (list[str]: every reference),
  prompt (str: the template applied; filled in when absent).
Any other field (family, difficulty, category, task, ...) is kept as source-specific metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kdbench.errors import DataError

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
CORE_FIELDS = ("id", "instruction", "input", "output", "outputs", "prompt")


def build_prompt(instruction: str, input: str = "") -> str:
    """The MiniLLM/DistiLLM/POCL prompt template (non-Qwen variant)."""
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


@dataclass(frozen=True)
class Record:
    id: str
    instruction: str
    input: str
    prompt: str
    references: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def output(self) -> str:
        return self.references[0]

    def to_json(self) -> dict[str, Any]:
        row = dict(self.meta)
        row.update(id=self.id, instruction=self.instruction, input=self.input,
                   output=self.references[0], prompt=self.prompt)
        if len(self.references) > 1:
            row["outputs"] = list(self.references)
        return row


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """Parse a JSONL file into (line number, object) pairs; a bad line names file and line. A UTF-8 byte
    order mark at the start of the file is accepted (many editors and exporters write one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    rows: list[tuple[int, dict]] = []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at column "
                                f"{exc.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append((lineno, obj))
    if not rows:
        raise DataError(f"{path}: data file is empty")
    return rows


def record_from_json(obj: dict, where: str) -> Record:
    """Validate one canonical record; ``where`` is 'file:line' for error messages."""
    def need_str(key: str) -> str:
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
        value = obj[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field '{key}' is empty or whitespace-only")
        return value

    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid:
        raise DataError(f"{where}: missing or non-string field 'id'")
    instruction = need_str("instruction")
    inp = obj.get("input", "")
    if not isinstance(inp, str):
        raise DataError(f"{where}: field 'input' must be a string, got {type(inp).__name__}")
    if "outputs" in obj:
        refs = obj["outputs"]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"{where}: field 'outputs' must be a non-empty list of strings")
        blank = [i for i, r in enumerate(refs) if not r.strip()]
        if blank:
            raise DataError(f"{where}: field 'outputs' has an empty or whitespace-only reference at index "
                            f"{blank[0]}: Rouge-L would score every prediction 0 against it")
        references = tuple(refs)
    elif "output" in obj:
        references = (need_str("output"),)
    else:
        raise DataError(f"{where}: missing reference field 'output' (or 'outputs')")
    prompt = obj.get("prompt")
    if prompt is None:
        prompt = build_prompt(instruction, inp)
    elif not isinstance(prompt, str):
        raise DataError(f"{where}: field 'prompt' must be a string")
    meta = {k: v for k, v in obj.items() if k not in CORE_FIELDS}
    return Record(id=rid, instruction=instruction, input=inp, prompt=prompt, references=references, meta=meta)


def load_records(path: str | os.PathLike) -> list[Record]:
    """Read and validate a canonical JSONL file (duplicate ids are an error)."""
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        rec = record_from_json(obj, f"{path}:{lineno}")
        if rec.id in first_line:
            raise DataError(f"{path}:{lineno}: duplicate id '{rec.id}' (first seen on line {first_line[rec.id]})")
        first_line[rec.id] = lineno
        records.append(rec)
    return records


def records_to_rows(records: Iterable[Record]) -> list[dict]:
    return [r.to_json() for r in records]
