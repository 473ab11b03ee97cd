"""Training-data sources for the ``prepare_data`` step: one entry point, four kinds of source.

``load_training_source(cfg, data_dir=..., seed=...)`` returns ``{split: [Record, ...]}`` with at
least ``train`` and ``dev``; ``load_training_source_with_info`` also returns a provenance dict for
the data manifest (source, file sha256, format, counts, options).  ``cfg`` is the ``data``
section of the run config.  Keys (unknown keys are an error naming the key and the allowed ones):

Every source
  ``source``        required: ``synthetic`` | ``jsonl`` | ``dolly`` | ``hf``.
  ``limit``         optional ``{split: n}``: keep only the first ``n`` records of that split
                    (after the split is built; for smoke runs).
  ``long_prompts``  ``truncate`` (default, POCL) | ``drop`` (MiniLLM): what tokenisation does with a
                    prompt longer than the max prompt length (256 in the lineage).  Nothing is
                    dropped here; the choice is only recorded in the info dict / data manifest
                    and applied at tokenisation time.

``source: synthetic``  (kdbench.data.synthetic.generate_suite; the run seed is the data seed)
  ``sizes``         required ``{split: n}``, must name ``train`` and ``dev`` (usually also
                    ``test`` and ``ood``).
  ``id_levels``     optional list of in-distribution difficulty levels (default 1..5).
  ``ood_levels``    optional list of OOD levels, used by the ``ood`` split (default 6, 7).
  ``families``      optional list of task families (default: all).
  ``noise``         optional ``{rate, kind: swap|perturb, splits: [train]}``: a share ``rate`` of the
                    references in ``splits`` replaced by a plausible wrong answer (default: none).
  ``template``      ``minillm`` (default, the lineage's prompt template) or ``compact`` (its
                    ``### Instruction/Input/Response`` skeleton without the preamble sentence).
  Splits named ``*_pool`` are clean pretraining pools (``teacher.data``, ``student.warmup_data``).

``source: jsonl``  (canonical JSONL, see kdbench.data)
  ``files``         required ``{split: path}``, must name ``train`` and ``dev``; a relative path
                    is taken relative to ``data_dir``.

``source: dolly``  (databricks-dolly-15k, MiniLLM lineage)
  ``path``          local file; either Databricks' raw layout (instruction, context, response,
                    category; ``context`` becomes ``input``) or MiniLLM's processed layout
                    (instruction, input, output[, prompt, topic]).  Detected per file; a file
                    mixing both is an error.  Relative to ``data_dir``.  When absent (null), the
                    hub copy ``hf_id`` is loaded with ``datasets.load_dataset``.
  ``hf_id``         default ``databricks/databricks-dolly-15k``.  MiniLLM's processed copy is
                    ``hf_id: MiniLLM/dolly`` with ``hf_file: raw.jsonl``.
  ``hf_file``       optional file inside the hub repo (passed as ``data_files``).
  ``revision``      optional hub revision (commit) to pin.
  ``dev_num``       default 1000: the first ``dev_num`` records (in file order) are the dev
                    (validation) hold-out, the rest is train -- MiniLLM's
                    ``tools/process_data_dolly.py`` (``valid = raw[:1000]``, ``train = raw[1000:]``).
  ``exclude``       default ``[]``: eval JSONL files (relative to ``data_dir``); a record whose
                    (instruction, input) pair occurs in any of them is removed *before* the split.
                    Use it with the raw Databricks file: MiniLLM's 500-record Dolly test set was
                    drawn from the start of the original file order (see shared/data/README.md
                    §1b), so without it the first 1000 raw records overlap the test set.
  Record ids are ``dolly_<position>`` (0-based position in the source file, before exclusion),
  so they do not depend on ``exclude`` or ``dev_num``.

``source: hf``  (any hub dataset, via ``datasets.load_dataset(hf_id, subset, split=...)``)
  ``hf_id``         required hub id.   ``subset``: optional config name.   ``revision``: optional.
  ``splits``        required ``{split: hub split}``, must name ``train`` and ``dev``; hub split
                    expressions such as ``"train[:1000]"`` / ``"train[1000:]"`` are allowed.
  ``fields``        optional ``{canonical field: source column}`` for ``id``, ``instruction``,
                    ``input``, ``output``, ``prompt``; defaults to the same names.  ``output``
                    may hold a list of references.  Without an ``id`` column ids are
                    ``<split>_<position>``; without ``prompt`` the MiniLLM template is applied.

Without network access every hub path raises DataError saying the hub is unreachable and how to
point at a local copy instead; nothing falls back silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from kdbench.data import Record, build_prompt, load_records, read_jsonl, record_from_json
from kdbench.errors import ConfigError, DataError
from kdbench.io import sha256_file, sha256_json

SOURCES = ("synthetic", "jsonl", "dolly", "hf")
LONG_PROMPT_POLICIES = ("truncate", "drop")
REQUIRED_SPLITS = ("train", "dev")
COMMON_KEYS = ("source", "limit", "long_prompts")
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "synthetic": ("sizes", "id_levels", "ood_levels", "families", "noise", "template"),
    "jsonl": ("files",),
    "dolly": ("path", "hf_id", "hf_file", "revision", "dev_num", "exclude"),
    "hf": ("hf_id", "subset", "revision", "splits", "fields"),
}
DOLLY_DEFAULTS: dict[str, Any] = {"path": None, "hf_id": "databricks/databricks-dolly-15k", "hf_file": None,
                                  "revision": None, "dev_num": 1000, "exclude": []}
HF_FIELDS = ("id", "instruction", "input", "output", "prompt")

__all__ = ["SOURCES", "load_training_source", "load_training_source_with_info", "normalize_source_cfg",
           "hub_load_rows", "hub_offline", "minillm_row_to_canonical"]


# --------------------------------------------------------------------------- hub access
def hub_offline() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_load_rows(hf_id: str, *, split: str, subset: str | None = None, data_files: str | None = None,
                  revision: str | None = None, what: str, local_hint: str) -> list[dict]:
    """Rows of a hub dataset through ``datasets.load_dataset``; any failure is a DataError.

    ``what`` names the caller (e.g. "eval set 'unni'"); ``local_hint`` says how to use a local copy.
    ``data_files`` (a path inside the repo) is loaded as the split ``split``.
    """
    target = hf_id + (f" (subset {subset})" if subset else "") + (f" file {data_files}" if data_files else "") \
        + (f" @ {revision}" if revision else "")
    try:
        import datasets  # lazy: heavy import, and only needed on the hub path
    except ImportError as exc:  # pragma: no cover - datasets is a hard dependency
        raise DataError(f"{what}: needs the 'datasets' package to load {target} from the Hugging Face hub "
                        f"({exc}); {local_hint}") from None
    kwargs: dict[str, Any] = {"split": split}
    if data_files:
        kwargs["data_files"] = {split: data_files}
    if revision:
        kwargs["revision"] = revision
    try:
        ds = datasets.load_dataset(hf_id, subset, **kwargs) if subset else datasets.load_dataset(hf_id, **kwargs)
    except Exception as exc:  # network, missing repo, bad split: all reported the same way
        offline = " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)" if hub_offline() else ""
        raise DataError(f"{what}: could not load {target} from the Hugging Face hub -- the hub is unreachable "
                        f"or the dataset is unavailable{offline}: {type(exc).__name__}: {exc}. "
                        f"{local_hint}") from None
    return [dict(row) for row in ds]


def minillm_row_to_canonical(row: dict, index: int, id_prefix: str) -> dict:
    """MiniLLM's processed layout (instruction, input, output str|list, prompt, topic) -> canonical dict."""
    out = {k: v for k, v in row.items() if k not in ("output", "outputs")}
    refs = row.get("outputs", row.get("output"))
    if isinstance(refs, list):
        out["outputs"] = refs
        out["output"] = refs[0] if refs else ""
    elif refs is not None:
        out["output"] = refs
    out.setdefault("input", "")
    out.setdefault("id", f"{id_prefix}{index:04d}")
    return out


# --------------------------------------------------------------------------- config handling
def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _check_split_map(value: Any, key: str, where: str, *, value_type: type = str) -> dict:
    if not isinstance(value, dict) or not value:
        raise _fail(where, f"'{key}' must be a non-empty mapping of split name -> "
                           f"{'path' if value_type is str else 'number'}")
    missing = [s for s in REQUIRED_SPLITS if s not in value]
    if missing:
        raise _fail(where, f"'{key}' must name the splits {', '.join(REQUIRED_SPLITS)}; missing {', '.join(missing)}")
    for split, v in value.items():
        if not isinstance(split, str) or not split:
            raise _fail(where, f"'{key}': split names must be non-empty strings, got {split!r}")
        ok = isinstance(v, value_type) and not isinstance(v, bool)
        # Every split named is written and read back; an empty split fails every job that reads it.
        if not ok or (value_type is int and v < 1) or (value_type is str and not v):
            kind = "non-empty string" if value_type is str else "positive integer"
            raise _fail(where, f"'{key}.{split}' must be a {kind}, got {v!r}")
    return dict(value)


def normalize_source_cfg(cfg: dict, where: str = "data") -> dict:
    """Check the keys of a data-source config and fill in defaults; errors name ``where.key``."""
    if not isinstance(cfg, dict):
        raise _fail(where, f"expected a mapping, got {type(cfg).__name__}")
    source = cfg.get("source")
    if source not in SOURCES:
        raise _fail(where, f"'source' = {source!r} is not allowed; allowed values: {', '.join(SOURCES)}")
    allowed = COMMON_KEYS + SOURCE_KEYS[source]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(repr(k) for k in unknown)} for source '{source}'; "
                           f"allowed keys: {', '.join(allowed)}")
    out = dict(cfg)
    out.setdefault("long_prompts", "truncate")
    if out["long_prompts"] not in LONG_PROMPT_POLICIES:
        raise _fail(where, f"'long_prompts' = {out['long_prompts']!r} is not allowed; allowed values: "
                           f"{', '.join(LONG_PROMPT_POLICIES)}")
    if out.get("limit") is not None:
        lim = out["limit"]
        if not isinstance(lim, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                for v in lim.values()):
            raise _fail(where, "'limit' must be a mapping of split name -> positive integer")
    if source == "synthetic":
        if "sizes" not in out:
            raise _fail(where, "source 'synthetic' needs 'sizes' (e.g. {train: 2000, dev: 200, test: 200, ood: 200})")
        out["sizes"] = _check_split_map(out["sizes"], "sizes", where, value_type=int)
    elif source == "jsonl":
        if "files" not in out:
            raise _fail(where, "source 'jsonl' needs 'files' ({train: path, dev: path, ...})")
        out["files"] = _check_split_map(out["files"], "files", where)
    elif source == "dolly":
        for key, default in DOLLY_DEFAULTS.items():
            out.setdefault(key, default)
        for key in ("path", "hf_file", "revision"):
            if out[key] is not None and (not isinstance(out[key], str) or not out[key]):
                raise _fail(where, f"'{key}' must be a non-empty string or null, got {out[key]!r}")
        if not isinstance(out["hf_id"], str) or not out["hf_id"]:
            raise _fail(where, f"'hf_id' must be a non-empty string, got {out['hf_id']!r}")
        dev_num = out["dev_num"]
        if not isinstance(dev_num, int) or isinstance(dev_num, bool) or dev_num < 1:
            raise _fail(where, f"'dev_num' must be a positive integer, got {dev_num!r}")
        exclude = out["exclude"]
        if not isinstance(exclude, list) or not all(isinstance(p, str) and p for p in exclude):
            raise _fail(where, f"'exclude' must be a list of file paths, got {exclude!r}")
    elif source == "hf":
        if not isinstance(out.get("hf_id"), str) or not out["hf_id"]:
            raise _fail(where, "source 'hf' needs 'hf_id' (a hub dataset id)")
        for key in ("subset", "revision"):
            if out.get(key) is not None and not isinstance(out[key], str):
                raise _fail(where, f"'{key}' must be a string or null, got {out[key]!r}")
        if "splits" not in out:
            raise _fail(where, "source 'hf' needs 'splits' ({train: <hub split>, dev: <hub split>})")
        out["splits"] = _check_split_map(out["splits"], "splits", where)
        fields = out.get("fields") or {}
        if not isinstance(fields, dict):
            raise _fail(where, "'fields' must be a mapping of canonical field -> source column")
        bad = sorted(set(fields) - set(HF_FIELDS))
        if bad:
            raise _fail(where, f"unknown key(s) {', '.join(repr(f'fields.{k}') for k in bad)}; allowed keys "
                               f"under 'fields': {', '.join(HF_FIELDS)}")
        out["fields"] = dict(fields)
    return out


def _resolve(path: str, data_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None:
        p = Path(data_dir) / p
    return p


# --------------------------------------------------------------------------- loaders
def _records(rows: list[tuple[str, dict]]) -> list[Record]:
    """Validate canonical dicts (with their 'where' labels); duplicate ids are an error."""
    seen: dict[str, str] = {}
    out = []
    for where, obj in rows:
        rec = record_from_json(obj, where)
        if rec.id in seen:
            raise DataError(f"{where}: duplicate id '{rec.id}' (first seen at {seen[rec.id]})")
        seen[rec.id] = where
        out.append(rec)
    return out


def _load_synthetic(cfg: dict, data_dir: Path | None, seed: int, where: str):
    try:
        from kdbench.data.synthetic import generate_suite
    except ImportError as exc:
        raise ConfigError(f"{where}: source 'synthetic' needs kdbench.data.synthetic ({exc})") from None
    kwargs: dict[str, Any] = {}
    for key in ("id_levels", "ood_levels", "families", "noise", "template"):
        if cfg.get(key) is not None:
            kwargs[key] = cfg[key]
    try:
        suite = generate_suite(seed, cfg["sizes"], **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    splits = {split: _records([(f"synthetic[{split}]#{i}", row) for i, row in enumerate(rows)])
              for split, rows in suite.items()}
    info = {"generator": "kdbench.data.synthetic.generate_suite", "seed": seed,
            "sizes": dict(cfg["sizes"]), **kwargs, "sha256": sha256_json({k: [r.to_json() for r in v]
                                                                          for k, v in splits.items()}),
            "sha256_of": "rows"}
    return splits, info


def _load_jsonl(cfg: dict, data_dir: Path | None, seed: int, where: str):
    splits, files = {}, {}
    for split, rel in cfg["files"].items():
        path = _resolve(rel, data_dir)
        if not path.is_file():
            raise DataError(f"{where}.files.{split}: {path}: data file not found"
                            + ("" if data_dir or Path(rel).is_absolute() else " (relative path, no data_dir given)"))
        splits[split] = load_records(path)
        files[split] = {"path": str(path), "sha256": sha256_file(path)}
    return splits, {"files": files}


def _dolly_row(obj: dict, where: str, position: int) -> tuple[str, dict]:
    if "response" in obj or "context" in obj:
        layout = "databricks"
        missing = [k for k in ("instruction", "response") if k not in obj]
        if missing:
            raise DataError(f"{where}: Databricks Dolly record lacks {', '.join(missing)}")
        row = {"instruction": obj["instruction"], "input": obj.get("context") or "", "output": obj["response"]}
        if "category" in obj:
            row["category"] = obj["category"]
    elif "output" in obj:
        layout = "minillm"
        row = {k: v for k, v in obj.items() if k not in ("topic", "prompt")}
        row.setdefault("input", "")
        if "topic" in obj:
            row["category"] = obj["topic"]
    else:
        raise DataError(f"{where}: neither Databricks Dolly (instruction, context, response, category) nor "
                        f"MiniLLM layout (instruction, input, output)")
    if "id" not in row:
        row["id"] = f"dolly_{position:05d}"
    row["source_index"] = position
    for key in ("instruction", "input"):
        if not isinstance(row.get(key), str):
            raise DataError(f"{where}: field '{key}' must be a string")
    row["prompt"] = build_prompt(row["instruction"], row["input"])
    return layout, row


def _exclusion_keys(paths: list[str], data_dir: Path | None, where: str) -> tuple[set, dict]:
    keys, files = set(), {}
    for rel in paths:
        path = _resolve(rel, data_dir)
        if not path.is_file():
            raise DataError(f"{where}.exclude: {path}: file not found")
        for rec in load_records(path):
            keys.add((rec.instruction.strip(), rec.input.strip()))
        files[str(path)] = sha256_file(path)
    return keys, files


def _load_dolly(cfg: dict, data_dir: Path | None, seed: int, where: str):
    info: dict[str, Any] = {"dev_num": cfg["dev_num"]}
    if cfg["path"] is not None:
        path = _resolve(cfg["path"], data_dir)
        if not path.is_file():
            raise DataError(f"{where}.path: {path}: Dolly file not found; set '{where}.path' to a local copy "
                            f"(Databricks or MiniLLM layout) or null to load '{cfg['hf_id']}' from the hub")
        raw = [(f"{path}:{lineno}", obj) for lineno, obj in read_jsonl(path)]
        info.update(path=str(path), sha256=sha256_file(path), sha256_of="file")
    else:
        hint = (f"Download databricks-dolly-15k.jsonl elsewhere and set '{where}.path' to it "
                f"(relative to the data dir), or run with network access.")
        rows = hub_load_rows(cfg["hf_id"], split="train", data_files=cfg["hf_file"], revision=cfg["revision"],
                             what=f"{where} (source 'dolly')", local_hint=hint)
        raw = [(f"{cfg['hf_id']}#{i}", obj) for i, obj in enumerate(rows)]
        info.update(hf_id=cfg["hf_id"], hf_file=cfg["hf_file"], revision=cfg["revision"],
                    sha256=sha256_json(rows), sha256_of="rows")
    layouts, rows = set(), []
    for position, (loc, obj) in enumerate(raw):
        layout, row = _dolly_row(obj, loc, position)
        layouts.add(layout)
        if len(layouts) > 1:
            raise DataError(f"{loc}: record in {layout} layout, but earlier records use the other layout")
        rows.append((loc, row))
    info["format"] = layouts.pop() if layouts else None
    if cfg["exclude"]:
        keys, files = _exclusion_keys(cfg["exclude"], data_dir, where)
        kept = [(loc, r) for loc, r in rows if (r["instruction"].strip(), r["input"].strip()) not in keys]
        info["excluded"] = {"files": files, "removed": len(rows) - len(kept)}
        rows = kept
    if len(rows) <= cfg["dev_num"]:
        raise DataError(f"{where}: only {len(rows)} Dolly records (after exclusion), but dev_num = {cfg['dev_num']} "
                        f"leaves none for train")
    records = _records(rows)
    return {"dev": records[:cfg["dev_num"]], "train": records[cfg["dev_num"]:]}, info


def _load_hf(cfg: dict, data_dir: Path | None, seed: int, where: str):
    fields = {f: cfg["fields"].get(f, f) for f in HF_FIELDS}
    splits = {}
    digests = {}
    for split, hub_split in cfg["splits"].items():
        hint = (f"Export the split to canonical JSONL (id, instruction, input, output) and use "
                f"source 'jsonl' with '{where}.files.{split}'.")
        rows = hub_load_rows(cfg["hf_id"], subset=cfg.get("subset"), split=hub_split, revision=cfg.get("revision"),
                             what=f"{where} (source 'hf', split '{split}')", local_hint=hint)
        converted = []
        for i, row in enumerate(rows):
            loc = f"{cfg['hf_id']}[{hub_split}]#{i}"
            obj = {}
            for canon, column in fields.items():
                if column in row:
                    obj[canon] = row[column]
                elif canon in ("instruction", "output") or canon in cfg["fields"]:
                    raise DataError(f"{loc}: column '{column}' (for '{canon}', see '{where}.fields') not found; "
                                    f"columns: {', '.join(sorted(row))}")
            obj.setdefault("id", f"{split}_{i:05d}")
            obj.setdefault("input", "")
            if obj["input"] is None:
                obj["input"] = ""
            if isinstance(obj.get("output"), list):
                obj["outputs"] = obj.pop("output")
            converted.append((loc, obj))
        splits[split] = _records(converted)
        digests[split] = sha256_json(rows)
    return splits, {"hf_id": cfg["hf_id"], "subset": cfg.get("subset"), "revision": cfg.get("revision"),
                    "splits": dict(cfg["splits"]), "sha256": digests, "sha256_of": "rows"}


_LOADERS: dict[str, Callable] = {"synthetic": _load_synthetic, "jsonl": _load_jsonl, "dolly": _load_dolly,
                                 "hf": _load_hf}


def load_training_source_with_info(cfg: dict, *, data_dir: Path | None, seed: int,
                                   where: str = "data") -> tuple[dict[str, list[Record]], dict]:
    """The splits and a provenance dict (source, sha256, counts, options) for the data manifest."""
    cfg = normalize_source_cfg(cfg, where)
    data_dir = Path(data_dir) if data_dir is not None else None
    splits, info = _LOADERS[cfg["source"]](cfg, data_dir, seed, where)
    missing = [s for s in REQUIRED_SPLITS if s not in splits]
    if missing:
        raise DataError(f"{where}: source '{cfg['source']}' produced no {', '.join(missing)} split")
    for split, n in (cfg.get("limit") or {}).items():
        if split not in splits:
            raise ConfigError(f"{where}.limit: no split '{split}'; splits: {', '.join(splits)}")
        splits[split] = splits[split][:n]
    empty = [s for s in REQUIRED_SPLITS if not splits[s]]
    if empty:
        raise DataError(f"{where}: split(s) {', '.join(empty)} are empty")
    seen: dict[str, str] = {}
    for split, records in splits.items():
        for rec in records:
            if rec.id in seen and seen[rec.id] != split:
                raise DataError(f"{where}: id '{rec.id}' occurs in both split '{seen[rec.id]}' and '{split}'")
            seen[rec.id] = split
    info = {"source": cfg["source"], **info, "long_prompts": cfg["long_prompts"],
            "limit": cfg.get("limit"), "counts": {s: len(r) for s, r in splits.items()},
            "config": json.loads(json.dumps(cfg, default=str))}
    return splits, info


def load_training_source(cfg: dict, *, data_dir: Path | None, seed: int,
                         where: str = "data") -> dict[str, list[Record]]:
    """``{split: records}`` with at least ``train`` and ``dev`` (see the module docstring for ``cfg``)."""
    return load_training_source_with_info(cfg, data_dir=data_dir, seed=seed, where=where)[0]
