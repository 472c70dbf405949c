"""Read a job file (TOML), apply command-line overrides, and write the resolved spec back."""

from __future__ import annotations

import json
from pathlib import Path

import tomllib

from disttrain.train.spec import JobSpec, SpecError, spec_from_dict


def load_job(path, overrides: dict | None = None) -> JobSpec:
    """The validated JobSpec of a TOML file; errors name the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job file; see examples/digits.toml for one") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a job file") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; a job file is TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        raw.setdefault(section, {})[key] = value
    return spec_from_dict(raw, source=str(path))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_job(spec: JobSpec) -> str:
    """The spec as TOML, every key written out, so RUN/job.toml reruns the same job."""
    lines = []
    for section, table in spec.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)
