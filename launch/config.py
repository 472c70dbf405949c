"""Read a job file (TOML) and apply command-line overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
