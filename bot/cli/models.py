"""``python -m bot models list|add|remove``: the operator's TOML registry of base models.

Every edit is proven by loading the file again; the old file is put back when the new one does
not load. ``models list`` shows each model's family, read from its files when the registry leaves
it out, and whether it is there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..registry import BaseModelEntry, ModelRegistry
    from ..settings import Settings

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a bare TOML key: no dots, no quotes needed
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HEADER = re.compile(r"^\s*\[")


EXIT_ERROR = 1


class AdminError(Exception):
    """A refused request; the message is one line for the operator."""


def run_models(args: argparse.Namespace, settings: Settings) -> int:
    """One ``models`` command; a refusal is one line on stderr and exit 1."""
    try:
        if args.command == "list":
            return _models_list(settings)
        if args.command == "add":
            return _models_add(settings, args)
        return _models_remove(settings, args.key)
    except AdminError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR


def availability(entry: BaseModelEntry) -> tuple[bool, str]:
    """(usable, how): tiny built or not, a local file or folder there or not, a hub id."""
    path = Path(entry.source).expanduser()
    if entry.tiny:
        built = (path / "model_index.json").is_file()
        return True, "built" if built else "not built yet (built on first use)"
    if entry.config and not Path(entry.config).expanduser().is_dir():
        return False, f"missing config folder {entry.config}"
    if path.is_dir():
        ok = (path / "model_index.json").is_file()
        return ok, "diffusers folder" if ok else "folder without model_index.json: not a diffusers model"
    if path.is_file():
        return True, "file"
    if entry.family and _HUB_ID.match(entry.source) and not entry.source.startswith((".", "/", "~")):
        return True, "hub (downloaded on first use)"
    return False, f"missing: {entry.source} does not exist"


def describe(registry: ModelRegistry, key: str) -> tuple[bool, str, str]:
    """(usable, family, how) of one model: the family as set, or as read from its files ("(detected)")."""
    from ..registry import RegistryError

    entry = registry.get(key)
    ok, how = availability(entry)
    if entry.family or not ok:
        return ok, entry.family or "?", how
    try:
        return ok, f"{registry.family(key)} (detected)", how
    except RegistryError:
        return False, "?", f"its family cannot be read from {entry.source}: give its family in the registry"


def _models_list(settings: Settings) -> int:
    from ..registry import ModelRegistry
    from .queue import _table

    registry = ModelRegistry.load(settings.model_registry, settings.data_dir)
    rows = []
    for key in registry.keys():
        ok, family, how = describe(registry, key)
        rows.append([key, family, registry.get(key).source, registry.get(key).label or "-",
                     ("yes: " if ok else "NO: ") + how])  # fmt: skip
    print(f"registry: {_registry_where(settings, registry)}")
    _table(["key", "family", "source", "label", "available"], rows)
    return 0


def _registry_where(settings: Settings, registry: ModelRegistry) -> str:
    if settings.model_registry is None:
        return "built in (LORABOT_MODEL_REGISTRY is not set): the tiny models, random weights"
    if registry.built_in:
        return (f"{settings.model_registry} lists no model yet, so the built-in tiny models (random weights) "
                "are offered until you add one ('python -m bot models add KEY SOURCE')")  # fmt: skip
    return str(settings.model_registry)


def _registry_file(settings: Settings) -> Path:
    if settings.model_registry is None:
        raise AdminError("LORABOT_MODEL_REGISTRY is not set (the built-in tiny models are in use): "
                         "set it to a file such as models.toml first (it is created when missing)")  # fmt: skip
    return settings.model_registry


def _read_registry(path: Path) -> tuple[str | None, dict]:
    """The file's text (None when missing) and its parsed ``[models]`` table."""
    from ..registry import tomllib

    if not path.exists():
        return None, {}
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text).get("models", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AdminError(f"cannot read the model registry {path}: {exc}; fix it by hand first") from None


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's; DEL must be escaped too."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AdminError(f"{value!r} is not valid text (UTF-8)") from None
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _models_add(settings: Settings, a: argparse.Namespace) -> int:
    path = _registry_file(settings)
    if not KEY.match(a.key):
        raise AdminError(f"'{a.key}' is not a model key: 1-64 letters, digits, '-' or '_', starting with a letter or digit")  # fmt: skip
    old, models = _read_registry(path)
    if a.key in models:
        raise AdminError(f"the registry already has a model '{a.key}': remove it first or pick another key")
    source, family = _model_source(a.source, a.family)
    if a.config is not None and not a.config.expanduser().is_dir():
        raise AdminError(f"the config folder {a.config} does not exist")
    fields = {"source": source, "family": family, "label": a.label or None,
              "config": str(a.config.expanduser().absolute()) if a.config else None}  # fmt: skip
    block = f"\n[models.{a.key}]\n" + "".join(f"{k} = {toml_string(v)}\n" for k, v in fields.items() if v)
    text = (old or "# Base models of loratrain-bot (python -m bot models --help)\n").rstrip("\n") + "\n" + block  # fmt: skip
    registry = _write_checked(path, old, text, settings)
    if family is None:  # a local file or folder: read its family now, and refuse what is no model
        try:
            registry.family(a.key)
        except ValueError as exc:
            _put(path, old)
            detail = str(exc).replace(": ask the operator", "")
            raise AdminError(f"{detail}; nothing was added (give --family if it is a model)") from None
    entry = registry.get(a.key)
    ok, how = availability(entry)
    if not ok:  # e.g. a folder that is no diffusers model, or a file that is no checkpoint
        _put(path, old)
        raise AdminError(f"{entry.source} is not usable as a model ({how}); nothing was added")
    print(f"added '{a.key}' to {path}: {entry.family or 'auto'} {entry.source} ({availability(entry)[1]})")
    if not models:  # the first real model: the built-in tiny ones were offered until now
        print("the built-in tiny models are no longer offered (datasets on them need another base model)")
    print("restart the bot to offer it to members")
    return 0


def _model_source(source: str, family: str | None) -> tuple[str, str | None]:
    path = Path(source).expanduser()
    if path.exists():
        return str(path.absolute()), family
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        if family is None:
            raise AdminError(f"'{source}' is not a local file, so it is taken as a hub id: give its --family")  # fmt: skip
        return source, family
    raise AdminError(f"{source} does not exist (a local file or folder, or a hub id like owner/name with --family)")  # fmt: skip


def _write_checked(path: Path, old: str | None, text: str, settings: Settings):
    """Write the registry, load it again; put the old file back when the new one does not load."""
    from ..registry import ModelRegistry, RegistryError

    _put(path, text)
    try:
        return ModelRegistry.load(path, settings.data_dir)
    except RegistryError as exc:
        _put(path, old)
        raise AdminError(f"{exc}; the registry was left as it was") from None


def _put(path: Path, text: str | None) -> None:
    """Replace the file in one step (None: remove it)."""
    if text is None:
        return path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _models_remove(settings: Settings, key: str) -> int:
    path = _registry_file(settings)
    old, models = _read_registry(path)
    if old is None or key not in models:
        known = ", ".join(sorted(models)) or "none"
        raise AdminError(f"the registry {path} has no model '{key}' (it has: {known})")
    if len(models) == 1:
        raise AdminError(
            f"'{key}' is the only model in {path}: the registry must list one, add another first"
        )
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _is_header(line, key)), None)
    if start is None:
        raise AdminError(f"'{key}' is not written as a [models.{key}] table in {path}: remove it by hand")
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1  # comments just above the next table belong to it
    text = "".join(lines[:start] + lines[end:])
    _write_checked(path, old, text, settings)
    if _read_registry(path)[1] != {k: v for k, v in models.items() if k != key}:
        _put(path, old)
        raise AdminError(f"removing '{key}' would change other models in {path}: remove it by hand")
    print(f"removed '{key}' from {path}; datasets on it cannot train until they pick another model")
    print("restart the bot to stop offering it")
    return 0


def _is_header(line: str, key: str) -> bool:
    quoted = re.escape(json.dumps(key))
    return re.match(rf"^\s*\[\s*models\s*\.\s*({re.escape(key)}|{quoted})\s*\]", line) is not None
