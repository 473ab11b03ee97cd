"""Evaluation-set registry: one folder ``evals/<name>/`` per set, discovered like methods.

``evals/<name>/eval.yaml`` (schema ``kdbench/schemas/eval.schema.yaml``) declares the set's
display name, where its records come from, which filters define it, its references and the
number of records the reference protocol evaluates.  Folders starting with ``_`` or ``.`` are
skipped; any other folder without a valid ``eval.yaml`` is a ConfigError naming the folder.

Sources
  ``kind: workflow``  the ``test`` or ``ood`` split written by the workflow's prepare_data step
                      (the caller passes its path as ``workflow_split``).
  ``kind: file``      a local JSONL file (``file``, relative to the data dir) in kdbench's canonical
                      layout or MiniLLM's ``valid.jsonl`` layout; when no data dir is given or the
                      file is absent, the hub copy ``hf`` is loaded with ``datasets.load_dataset``
                      (``data_files = <subset>/<file>``).  Offline that is a DataError saying the hub
                      is unreachable and where to put a local copy.

Filters (applied in the order listed)
  ``applied_by: loader``  kdbench applies it (``field_equals``, ``first_n``) and records how many
                          records it removed.
  ``applied_by: source``  the data already has it applied upstream; it is recorded for lineage and
                          never re-applied or re-checked.  The token-count filters
                          ``min_reference_tokens`` (MiniLLM's S-NI/UnNI "reference of >= 11 tokens"
                          buckets) and ``max_prompt_tokens`` (MiniLLM's 256-token prompt filter) may
                          only be declared this way: they depend on the upstream tokenizer (and the
                          bucket counting rule is not published), so re-applying them here would be
                          an approximation, and kdbench refuses it.
  A filter named in ``hf.prefiltered`` is already satisfied by the hub copy and is skipped there.

Options (per set, boolean; e.g. selfinst ``full``) switch filters off and may change the expected
count and the display name.  An unknown option is a ConfigError naming the allowed ones.

A loaded count different from the expected one is not an error: it comes back as a footnote
string in the info dict, which the tables print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbench.data import Record, build_prompt, read_jsonl, record_from_json
from kdbench.data.sources import hub_load_rows, minillm_row_to_canonical
from kdbench.errors import ConfigError, DataError
from kdbench.io import sha256_file, sha256_json
from kdbench.schema import load_yaml, validate

MANIFEST = "eval.yaml"
HUB_DEFAULT_FILE = "valid.jsonl"
TOKEN_FILTERS = ("min_reference_tokens", "max_prompt_tokens")  # only ever applied upstream (applied_by: source)

__all__ = ["EvalSpec", "FilterSpec", "OptionSpec", "HubSpec", "discover_evals", "load_eval_dir", "load_eval_set",
           "resolve_options"]


@dataclass(frozen=True)
class FilterSpec:
    name: str
    kind: str                 # field_equals | first_n | min_reference_tokens | max_prompt_tokens
    applied_by: str           # loader | source
    description: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)   # field/value, n, min/max_tokens, tokenizer


@dataclass(frozen=True)
class OptionSpec:
    name: str
    description: str
    default: bool = False
    disables: tuple[str, ...] = ()
    expected_count: int | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class HubSpec:
    id: str
    subset: str | None = None
    file: str = HUB_DEFAULT_FILE
    revision: str | None = None
    prefiltered: tuple[str, ...] = ()

    @property
    def data_files(self) -> str:
        return f"{self.subset}/{self.file}" if self.subset else self.file

    def describe(self) -> str:
        return f"hf:{self.id}/{self.data_files}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class EvalSpec:
    name: str
    display_name: str
    description: str
    directory: Path
    source_kind: str                      # workflow | file
    split: str | None                     # workflow: test | ood
    file: str | None                      # file: path relative to the data dir
    format: str                           # auto | canonical | minillm
    id_prefix: str
    verify_prompt: bool
    hub: HubSpec | None
    filters: tuple[FilterSpec, ...]
    reference_field: str                  # output | outputs
    multiple_references: bool
    references_description: str
    expected_count: int | None
    options: dict[str, OptionSpec] = field(default_factory=dict, compare=False)
    table_footnote: str | None = None
    notes: tuple[str, ...] = ()
    order: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------- discovery
def load_eval_dir(directory: str | Path) -> EvalSpec:
    """Parse and check one ``evals/<name>/`` folder; every problem is a ConfigError naming it."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{directory}: eval set folder lacks {MANIFEST}")
    m = load_yaml(path)
    if not isinstance(m, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(m).__name__}")
    validate(m, "eval", str(path))
    bad = lambda msg: ConfigError(f"{path}: {msg}")  # noqa: E731
    if m["name"] != directory.name:
        raise bad(f"name '{m['name']}' must equal the folder name '{directory.name}'")
    src = m["source"]
    kind = src["kind"]
    hub = None
    if kind == "workflow":
        if "split" not in src:
            raise bad("source.kind 'workflow' needs source.split (test or ood)")
        extra = sorted(set(src) - {"kind", "split", "verify_prompt", "id_prefix", "format"})
        if extra:
            raise bad(f"source.kind 'workflow' takes no {', '.join('source.' + k for k in extra)}")
    else:
        if "split" in src:
            raise bad("source.split is only for source.kind 'workflow'")
        if not src.get("file") and "hf" not in src:
            raise bad("source.kind 'file' needs source.file and/or source.hf")
        if "hf" in src:
            h = src["hf"]
            hub = HubSpec(id=h["id"], subset=h.get("subset"), file=h.get("file", HUB_DEFAULT_FILE),
                          revision=h.get("revision"), prefiltered=tuple(h.get("prefiltered") or ()))
    filters = []
    for i, f in enumerate(m.get("filters") or []):
        where = f"filters.{i} ('{f['name']}')"
        params = {k: v for k, v in f.items() if k not in ("name", "kind", "applied_by", "description")}
        need = {"field_equals": {"field", "value"}, "first_n": {"n"}, "min_reference_tokens": {"min_tokens"},
                "max_prompt_tokens": {"max_tokens"}}[f["kind"]]
        allowed = need | ({"tokenizer"} if f["kind"] in TOKEN_FILTERS else set())
        if need - set(params):
            raise bad(f"{where}: kind '{f['kind']}' needs {', '.join(sorted(need - set(params)))}")
        if set(params) - allowed:
            raise bad(f"{where}: kind '{f['kind']}' takes no {', '.join(sorted(set(params) - allowed))}; "
                      f"allowed keys: name, kind, applied_by, description, {', '.join(sorted(allowed))}")
        if f["kind"] in TOKEN_FILTERS and f["applied_by"] == "loader":
            raise bad(f"{where}: a {f['kind']} filter cannot be applied by the loader: it depends on the upstream "
                      f"tokenizer (and, for MiniLLM's length buckets, on a counting rule that is not published), so "
                      f"kdbench would only approximate it. Point source.file at data that already has it applied "
                      f"and declare applied_by: source")
        if any(x.name == f["name"] for x in filters):
            raise bad(f"{where}: duplicate filter name '{f['name']}'")
        filters.append(FilterSpec(f["name"], f["kind"], f["applied_by"], f["description"], params))
    names = {f.name for f in filters}
    loader_names = {f.name for f in filters if f.applied_by == "loader"}
    if hub is not None:
        unknown = sorted(set(hub.prefiltered) - loader_names)
        if unknown:
            raise bad(f"source.hf.prefiltered names {', '.join(unknown)}, which are not loader filters; "
                      f"loader filters: {', '.join(sorted(loader_names)) or '(none)'}")
    options = {}
    for oname, o in (m.get("options") or {}).items():
        unknown = sorted(set(o.get("disables") or ()) - names)
        if unknown:
            raise bad(f"options.{oname}.disables names unknown filter(s) {', '.join(unknown)}; "
                      f"filters: {', '.join(sorted(names)) or '(none)'}")
        options[oname] = OptionSpec(oname, o["description"], bool(o.get("default", False)),
                                    tuple(o.get("disables") or ()), o.get("expected_count"), o.get("display_name"))
    refs = m["references"]
    if refs["multiple"] != (refs["field"] == "outputs"):
        raise bad("references: field 'outputs' goes with multiple: true, field 'output' with multiple: false")
    return EvalSpec(
        name=m["name"], display_name=m["display_name"], description=m["description"], directory=directory,
        source_kind=kind, split=src.get("split"), file=src.get("file"), format=src.get("format", "auto"),
        id_prefix=src.get("id_prefix", f"{m['name']}_"), verify_prompt=bool(src.get("verify_prompt", False)),
        hub=hub, filters=tuple(filters), reference_field=refs["field"], multiple_references=refs["multiple"],
        references_description=refs["description"], expected_count=m["expected_count"], options=options,
        table_footnote=m.get("table_footnote"), notes=tuple(m.get("notes") or ()), order=m.get("order"),
        manifest=m)


def discover_evals(root: str | Path = "evals") -> dict[str, EvalSpec]:
    """Every eval set under ``root``, sorted by name ('_'- and '.'-prefixed folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: eval sets folder not found")
    found: dict[str, EvalSpec] = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if directory.name == "__pycache__":
            continue
        spec = load_eval_dir(directory)
        found[spec.name] = spec
    return found


# --------------------------------------------------------------------------- loading
def resolve_options(spec: EvalSpec, options: dict | None) -> dict[str, bool]:
    """Defaults overlaid with ``options``; unknown names or non-boolean values are ConfigErrors."""
    resolved = {name: o.default for name, o in spec.options.items()}
    for key, value in (options or {}).items():
        if key not in spec.options:
            allowed = ", ".join(sorted(spec.options)) or "(none)"
            raise ConfigError(f"eval set '{spec.name}' ({spec.directory / MANIFEST}): unknown option '{key}'; "
                              f"allowed options: {allowed}")
        if not isinstance(value, bool):
            raise ConfigError(f"eval set '{spec.name}': option '{key}' must be true or false, got {value!r}")
        resolved[key] = value
    return resolved


def _rows_to_records(rows: list[tuple[str, dict]], spec: EvalSpec, fmt: str) -> list[Record]:
    records: list[Record] = []
    first: dict[str, str] = {}
    layouts = set()
    for position, (where, obj) in enumerate(rows):
        layout = fmt if fmt != "auto" else ("canonical" if "id" in obj else "minillm")
        layouts.add(layout)
        if len(layouts) > 1:
            raise DataError(f"{where}: row without 'id' (MiniLLM layout) mixed with canonical rows; "
                            f"set source.format in {spec.directory / MANIFEST}")
        if layout == "minillm":
            obj = minillm_row_to_canonical(obj, position, spec.id_prefix)
        rec = record_from_json(obj, where)
        if rec.id in first:
            raise DataError(f"{where}: duplicate id '{rec.id}' (first seen at {first[rec.id]})")
        first[rec.id] = where
        if spec.reference_field == "outputs" and "outputs" not in obj:
            raise DataError(f"{where}: eval set '{spec.name}' declares references.field 'outputs' (a list of "
                            f"references) but the record has none")
        if spec.verify_prompt and rec.prompt != build_prompt(rec.instruction, rec.input):
            raise DataError(f"{where}: prompt differs from the MiniLLM template applied to instruction/input "
                            f"(eval set '{spec.name}' has source.verify_prompt: true)")
        records.append(rec)
    return records


def _apply_filter(f: FilterSpec, records: list[Record]) -> list[Record]:
    if f.kind == "first_n":
        return records[:f.params["n"]]
    if f.kind == "field_equals":
        key, value = f.params["field"], f.params["value"]
        kept = []
        for rec in records:
            row = rec.to_json()
            if key not in row:
                raise DataError(f"record '{rec.id}': filter '{f.name}' needs field '{key}', which it lacks")
            if row[key] == value:
                kept.append(rec)
        return kept
    raise ConfigError(f"filter '{f.name}': kind '{f.kind}' cannot be applied by the loader")  # pragma: no cover


def load_eval_set(spec: EvalSpec, *, data_dir: Path | None, workflow_split: Path | None = None,
                  options: dict | None = None) -> tuple[list[Record], dict]:
    """The records of one eval set and an info dict.

    info = {name, display_name, count, expected_count, source (path or hf:<id>/<file>), source_kind
    (file | hf | workflow), sha256, sha256_of (file | rows), filters (what was applied, by whom, how
    many removed), options, footnotes (strings for the tables)}.
    """
    opts = resolve_options(spec, options)
    disabled = {name for oname, on in opts.items() if on for name in spec.options[oname].disables}
    info: dict[str, Any] = {"name": spec.name}
    prefiltered: set[str] = set()
    if spec.source_kind == "workflow":
        if workflow_split is None:
            raise DataError(f"eval set '{spec.name}' reads the workflow's '{spec.split}' split "
                            f"(results of prepare_data); pass workflow_split=<path to {spec.split}.jsonl>")
        path = Path(workflow_split)
        rows = [(f"{path}:{n}", obj) for n, obj in read_jsonl(path)]
        info.update(source=str(path), source_kind="workflow", sha256=sha256_file(path), sha256_of="file")
        fmt = "canonical"
    else:
        local = None
        if spec.file:
            p = Path(spec.file).expanduser()
            if p.is_absolute():
                local = p
            elif data_dir is not None:
                local = Path(data_dir) / p
        if local is not None and local.is_file():
            rows = [(f"{local}:{n}", obj) for n, obj in read_jsonl(local)]
            info.update(source=str(local), source_kind="file", sha256=sha256_file(local), sha256_of="file")
            fmt = spec.format
        elif spec.hub is not None:
            looked = (f"no local file (looked for {local})" if local is not None
                      else "no local file" + (" (no data dir given)" if spec.file else " configured in eval.yaml"))
            target = local if local is not None else f"<data dir>/{spec.file or spec.hub.file}"
            blocked = sorted(disabled & set(spec.hub.prefiltered))
            if blocked:
                raise DataError(f"eval set '{spec.name}': {looked}, and the option(s) "
                                f"{', '.join(k for k, v in opts.items() if v)} switch off filter(s) "
                                f"{', '.join(blocked)}, which the hub copy {spec.hub.describe()} already has "
                                f"applied; put {spec.file or 'the local file'} in the data dir and pass it as data_dir "
                                f"(see {spec.directory}/README.md)")
            hint = (f"Eval set '{spec.name}': {looked}. To use a local copy, download it where the hub is "
                    f"reachable (huggingface-cli download {spec.hub.id} --repo-type dataset), put its "
                    f"{spec.hub.data_files} (MiniLLM's layout is read as is) at {target} and pass that folder "
                    f"as the data dir (see {spec.directory}/README.md).")
            hub_rows = hub_load_rows(spec.hub.id, split="eval", data_files=spec.hub.data_files,
                                     revision=spec.hub.revision, what=f"eval set '{spec.name}'", local_hint=hint)
            rows = [(f"{spec.hub.describe()}#{i}", obj) for i, obj in enumerate(hub_rows)]
            info.update(source=spec.hub.describe(), source_kind="hf", sha256=sha256_json(hub_rows), sha256_of="rows")
            fmt = "minillm"
            prefiltered = set(spec.hub.prefiltered)
        else:
            where = f"{local}: file not found" if local is not None else "no data dir given"
            raise DataError(f"eval set '{spec.name}': {where}, and {spec.directory / MANIFEST} declares no hub "
                            f"fallback (source.hf); point the data dir at a folder holding {spec.file}")
    records = _rows_to_records(rows, spec, fmt)
    applied = []
    for f in spec.filters:
        entry = {"name": f.name, "kind": f.kind, "description": f.description, **f.params}
        if f.name in disabled:
            entry.update(applied_by="disabled by option", removed=0)
        elif f.applied_by == "source" or f.name in prefiltered:
            entry.update(applied_by="source", removed=None)
        else:
            before = len(records)
            records = _apply_filter(f, records)
            entry.update(applied_by="loader", removed=before - len(records))
        applied.append(entry)
    if not records:
        raise DataError(f"eval set '{spec.name}': no records left after the filters (source {info['source']})")
    expected = spec.expected_count
    display = spec.display_name
    for oname, on in opts.items():
        if on:
            expected = spec.options[oname].expected_count or expected
            display = spec.options[oname].display_name or display
    footnotes = []
    if expected is not None and len(records) != expected:
        footnotes.append(f"{display}: {len(records)} examples evaluated; the reference protocol uses {expected}"
                         f" (source {info['source']}).")
    if spec.table_footnote:
        footnotes.append(f"{display}: {spec.table_footnote}")
    info.update(display_name=display, count=len(records), expected_count=expected, filters=applied,
                options=opts, footnotes=footnotes)
    return records, info
