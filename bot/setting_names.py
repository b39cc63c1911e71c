"""Setting names the bot does not know, refused at start-up instead of silently ignored.

pydantic-settings reads every ``LORABOT_*`` name it knows, in any case, from the environment and
the env file, and skips the rest: a typo (``LORABOT_GUILD_ID``) or an old name
(``LORABOT_STEP_COST_SDXL``) would leave the default in force without a word. :func:`unknown_settings`
finds them as pydantic-settings would read them and says, one line each, what was meant.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

PREFIX = "LORABOT_"
_RENAMED = re.compile(r"^LORABOT_(STEP_COST|IMAGE_COST|STEPS_PER_S)_([A-Z0-9]+)$", re.IGNORECASE)
#: what ``_env_file`` means when not given: the class's ``env_file`` (None: no file)
DEFAULT_ENV_FILE = object()


def unknown_settings(env_file: object = DEFAULT_ENV_FILE) -> list[str]:
    """One line per ``LORABOT_*`` name that is no setting: an old per-family name with its new
    form, any other with the closest setting's name ("did you mean"), in name order.

    Found as pydantic-settings would read them: in the environment and in ``env_file`` (a path or
    several, as ``Settings(_env_file=...)`` takes; default the class's ``.env``), parsed by
    python-dotenv (``export`` lines, quotes, comments), names in any case."""
    from .settings import Settings

    known = {PREFIX + name.upper() for name in Settings.model_fields}
    problems = []
    for name in _names(env_file):
        if not name.upper().startswith(PREFIX) or name.upper() in known:
            continue
        problems.append(_renamed(name) or _misspelt(name, known))
    return problems


def renamed_settings(env_file: object = DEFAULT_ENV_FILE) -> list[str]:
    """Per-family rates set the old way (``LORABOT_STEP_COST_SDXL``): one line each with the new
    form, so they are refused rather than silently ignored (a server would charge the default rate)."""
    return [line for name in _names(env_file) if (line := _renamed(name))]


def _renamed(name: str) -> str | None:
    if not (m := _RENAMED.match(name)):
        return None
    kind = m.group(1).upper()
    plural = {"STEP_COST": "STEP_COSTS", "IMAGE_COST": "IMAGE_COSTS"}.get(kind, kind)
    return f"{name} is now LORABOT_{plural}='{{\"{m.group(2).lower()}\": ...}}' (JSON, one entry per family)"


def _misspelt(name: str, known: set[str]) -> str:
    """Compared without the prefix, which every name shares."""
    bare = {k.removeprefix(PREFIX): k for k in known}
    close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), sorted(bare), n=1, cutoff=0.6)
    hint = f"did you mean {bare[close[0]]}?" if close else "no setting has that name"
    return f"{name} is not a setting ({hint}): .env.example lists every setting"


def _names(env_file: object) -> list[str]:
    """The names set in the environment and in the env file(s), sorted, each once."""
    from .settings import Settings

    if env_file is DEFAULT_ENV_FILE:
        env_file = Settings.model_config.get("env_file")
    names = list(os.environ)
    for path in [env_file] if isinstance(env_file, (str, os.PathLike)) else env_file or []:
        names += env_file_names(Path(path).expanduser())
    return sorted(set(names))


def env_file_names(path: Path) -> list[str]:
    """The names an env file sets, as pydantic-settings reads it (python-dotenv, UTF-8)."""
    from .settings import Settings

    if not path.is_file():
        return []
    from dotenv import dotenv_values

    return list(dotenv_values(path, encoding=Settings.model_config.get("env_file_encoding") or "utf-8"))
