"""``python -m bot init|models|check``: set up the data folder, keep the model registry, check it all.

``init`` and ``check`` read the settings themselves (``check`` reports a bad setting as a failed
check instead of stopping on it); ``models`` edits the TOML registry by hand and proves every edit
by loading the file again, putting the old one back when the new one does not load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.contract.families import FAMILIES

if TYPE_CHECKING:
    from ..registry import BaseModelEntry
    from ..settings import Settings

EXIT_ERROR = 1
OWN_SETTINGS = frozenset({"init", "check"})  # groups that load (or check) the settings themselves
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a bare TOML key: no dots, no quotes needed
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HEADER = re.compile(r"^\s*\[")
ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
DATA_FOLDERS = ("datasets", "jobs", "library", "models", "logs")

REGISTRY_TEMPLATE = """\
# Base models of loratrain-bot (LORABOT_MODEL_REGISTRY names this file); the bot needs at least one.
# One [models.KEY] table per model: KEY is what members pick (letters, digits, '-' and '_').
#   source  a single-file checkpoint, a diffusers folder, or a Hugging Face hub id
#   family  a model family (python -m bot models add --help lists them): read from local files
#           when left out, required for hub ids
#   config  (single files) a diffusers config folder, so the checkpoint loads offline
#   label   what members see
# Add one with `python -m bot models add KEY SOURCE`, or uncomment and edit an example below.

# A single-file checkpoint:
# [models.pony-v6]
# source = "/models/ponyDiffusionV6XL.safetensors"
# family = "sdxl"
# config = "/models/configs/sdxl-base"
# label = "Pony Diffusion V6 XL"

# A diffusers folder (the one with model_index.json):
# [models.anything-v5]
# source = "/models/anything-v5"
# label = "Anything V5"

# A hub id, downloaded into the Hugging Face cache on first use:
# [models.sdxl-base]
# source = "stabilityai/stable-diffusion-xl-base-1.0"
# family = "sdxl"
# label = "SDXL 1.0 base"
"""


class AdminError(Exception):
    """A refused request; the message is one line for the operator."""


# Parsers ---------------------------------------------------------------------------------------


def _sub(group: argparse._SubParsersAction, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    return group.add_parser(
        name, help=help_, description=help_, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def add_parsers(groups: argparse._SubParsersAction) -> None:
    """The ``init``, ``models`` and ``check`` groups."""
    init = _sub(groups, "init", "create the data folder, the database and .env (idempotent)",
                "python -m bot init --data-dir /srv/lorabot --registry models.toml")  # fmt: skip
    init.add_argument("--data-dir", type=Path, help="the data folder (default LORABOT_DATA_DIR, else ./data)")
    init.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file to write (default .env)")  # fmt: skip
    init.add_argument("--registry", type=Path, help="also write a model registry template (beside the .env)")
    check = _sub(groups, "check", "check the settings, folders, database, models, tagger, devices and trainer",
                 "python -m bot check")  # fmt: skip
    check.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default .env)")
    check.add_argument("--timeout", type=float, default=60, help="seconds for '<trainer> --help' (default 60)")  # fmt: skip
    models = groups.add_parser("models", help="the base-model registry: list, add, remove")
    sub = models.add_subparsers(dest="command", required=True, parser_class=type(models))
    _sub(sub, "list", "every base model with its family, source and whether it is there", "python -m bot models list")  # fmt: skip
    add = _sub(sub, "add", "add a base model to the registry file (LORABOT_MODEL_REGISTRY)",
               "python -m bot models add pony-v6 /models/ponyV6XL.safetensors --family sdxl --label 'Pony V6'")  # fmt: skip
    add.add_argument("key", help="what members pick: letters, digits, '-' and '_' (at most 64)")
    add.add_argument("source", help="a .safetensors file, a diffusers folder, or a hub id (owner/name)")
    add.add_argument("--family", choices=list(FAMILIES), help="required for hub ids; read from local files")
    add.add_argument("--config", type=Path, help="diffusers config folder for a single-file checkpoint")
    add.add_argument("--label", default="", help="what members see (default: the key)")
    remove = _sub(sub, "remove", "remove a base model from the registry file", "python -m bot models remove pony-v6")  # fmt: skip
    remove.add_argument("key")


def run_own(args: argparse.Namespace) -> int:
    """``init`` or ``check``: they load the settings themselves."""
    if args.group == "init":
        return _init(args)
    from .checks import check

    return check(args.env_file, args.timeout)


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


# init ------------------------------------------------------------------------------------------


def _init(a: argparse.Namespace) -> int:
    from ..settings import load_settings

    env_file = a.env_file.expanduser().absolute()
    registry = a.registry.expanduser() if a.registry else None
    if registry is not None and not registry.is_absolute():
        registry = env_file.parent / registry  # "next to" the .env
    new_registry = registry is not None and not registry.exists()
    data_dir = a.data_dir.expanduser().absolute() if a.data_dir else None
    if env_file.exists():
        print(f"kept {env_file}: it exists already and is never overwritten")
    else:
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(env_text(data_dir, registry), encoding="utf-8")
        print(f"wrote {env_file} (every setting with its default; edit it)")
    settings = load_settings(_env_file=env_file, **({"data_dir": data_dir} if data_dir else {}))
    _make_data_dir(settings.data_dir)
    print(_init_database(settings.database_path()))
    if registry is not None:
        if new_registry:
            registry.parent.mkdir(parents=True, exist_ok=True)
            registry.write_text(REGISTRY_TEMPLATE, encoding="utf-8")
            print(f"wrote the model registry template {registry}: it lists no model yet, add one with "
                  "'python -m bot models add KEY SOURCE' or uncomment an example")  # fmt: skip
        else:
            print(f"kept {registry}: it exists already")
    _init_notes(env_file, settings, registry)
    return 0


def _make_data_dir(data_dir: Path) -> None:
    existed = data_dir.is_dir()
    for name in DATA_FOLDERS:
        (data_dir / name).mkdir(parents=True, exist_ok=True)
    print(f"{'data folder is there' if existed else 'created the data folder'}: {data_dir} "
          f"({', '.join(DATA_FOLDERS)})")  # fmt: skip


def _init_database(path: Path) -> str:
    from db.database import connect, migrate, schema_version

    existed = path.is_file()

    async def go() -> tuple[int, int]:
        conn = await connect(path)
        try:
            return await schema_version(conn), await migrate(conn)
        finally:
            await conn.close()

    before, after = asyncio.run(go())
    if not existed:
        return f"created the database {path} (schema version {after})"
    if before != after:
        return f"migrated the database {path} from schema version {before} to {after}"
    return f"the database {path} is current (schema version {after})"


def _init_notes(env_file: Path, settings: Settings, registry: Path | None) -> None:
    if registry is not None and settings.model_registry != registry.absolute():
        print(f"note: set LORABOT_MODEL_REGISTRY={registry} in {env_file.name} to use that registry")
    where = "" if env_file.parent == Path.cwd() else " (the bot reads the .env of the folder it starts in)"
    print(f"next: put the bot's token in {env_file} (LORABOT_DISCORD_TOKEN){where}, "
          "then run 'python -m bot check' and 'python -m bot run'")  # fmt: skip


def env_text(data_dir: Path | None, registry: Path | None) -> str:
    """``.env.example`` (or a minimal file), with the data folder and registry filled in when given."""
    try:
        text = ENV_EXAMPLE.read_text(encoding="utf-8")
    except OSError:
        text = "# loratrain-bot settings (README.md lists them all)\nLORABOT_DATA_DIR=data\n"
    for name, value in (("LORABOT_DATA_DIR", data_dir), ("LORABOT_MODEL_REGISTRY", registry)):
        if value is None:
            continue
        line = f"{name}={_env_value(str(value))}"
        pattern = re.compile(rf"^#?\s*{name}=.*$", re.MULTILINE)
        text, count = pattern.subn(lambda _, line=line: line, text, count=1)
        if not count:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


def _env_value(value: str) -> str:
    """A .env value: bare when plain, else single-quoted (taken literally)."""
    if re.fullmatch(r"[\w./:@+-]+", value):
        return value
    if "'" in value or "\\" in value or not value.isascii():
        return json.dumps(value, ensure_ascii=False)
    return f"'{value}'"


# models ----------------------------------------------------------------------------------------


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


def _models_list(settings: Settings) -> int:
    from ..registry import ModelRegistry
    from .queue import _table

    registry = ModelRegistry.load(settings.model_registry, settings.data_dir)
    rows = []
    for key in registry.keys():
        e = registry.get(key)
        ok, how = availability(e)
        rows.append([key, e.family or "auto", e.source, e.label or "-", ("yes: " if ok else "NO: ") + how])
    where = settings.model_registry or "built in (LORABOT_MODEL_REGISTRY is not set)"
    print(f"registry: {where}")
    _table(["key", "family", "source", "label", "available"], rows)
    return 0


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
