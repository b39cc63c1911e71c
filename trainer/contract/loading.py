"""Reading job files: TOML or JSON into a validated job, with one readable line per problem."""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .jobs import JobError, TrainJob, _Strict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_job_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON job file into a dict (by extension; TOML otherwise)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError([f"cannot read job file {p}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise JobError([f"job file {p.name} is not UTF-8 text: save it as UTF-8"]) from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise JobError(
            [f"job file {p.name} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}"]
        ) from exc
    if not isinstance(data, dict):
        raise JobError(["a job file holds one table of key = value options"])
    return data


def parse_job(data: dict[str, Any], kind: type[_Strict] = TrainJob):
    """Validate a job dict; raise :class:`JobError` with one readable line per problem."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise JobError(_describe(exc, kind)) from None


def load_job(path: str | Path, kind: type[_Strict] = TrainJob):
    return parse_job(read_job_file(path), kind)


def _describe(exc: ValidationError, kind: type[_Strict]) -> list[str]:
    known = sorted({f.alias or name for name, f in kind.model_fields.items()})
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"unknown option '{loc}'{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing required option '{loc}'")
        elif not loc:
            msg = err["msg"].removeprefix("Value error, ")
            lines.extend(msg.split("; "))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return lines
