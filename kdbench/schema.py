"""Schema validation with messages that name the bad key, where it is, and what is allowed."""

from __future__ import annotations

import difflib
import functools
from importlib import resources
from typing import Any

import jsonschema
import yaml

from kdbench.errors import ConfigError


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """Load ``kdbench/schemas/<name>.schema.yaml``."""
    text = resources.files("kdbench.schemas").joinpath(f"{name}.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _key_path(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed))
        parts = []
        for key in extra:
            full = f"{where}.{key}" if error.absolute_path else key
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            parts.append(f"unknown key '{full}'{suggestion}; allowed keys here: {', '.join(allowed)}")
        return "; ".join(parts)
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        return f"'{where}' = {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        expected = error.validator_value
        return f"'{where}' must be of type {expected}, got {type(error.instance).__name__} ({error.instance!r})"
    return f"'{where}': {error.message}"


def validate(obj: Any, schema_name: str, source: str) -> None:
    """Raise ConfigError listing every violation; ``source`` names the file being checked."""
    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"{source}: invalid {schema_name}:\n{lines}")


def load_yaml(path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                          f"{exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
