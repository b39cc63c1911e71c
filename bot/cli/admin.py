"""``python -m bot init|models|check``: set up the data folder, keep the model registry, check it all.

``init`` and ``check`` read the settings themselves (``check`` reports a bad setting as a failed
check instead of stopping on it); the ``models`` commands are in :mod:`bot.cli.models`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.contract.families import FAMILIES

if TYPE_CHECKING:
    from ..settings import Settings

EXIT_ERROR = 1
OWN_SETTINGS = frozenset({"init", "check"})  # groups that load (or check) the settings themselves
ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
DATA_FOLDERS = ("datasets", "jobs", "library", "models", "logs")

REGISTRY_TEMPLATE = """\
# Base models of loratrain-bot (LORABOT_MODEL_REGISTRY names this file). Until it lists one, members
# get the built-in tiny models (random weights, offline).
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
    remove.add_argument("key", help="the model's key, as 'python -m bot models list' shows it")


def run_own(args: argparse.Namespace) -> int:
    """``init`` or ``check``: they load the settings themselves."""
    if args.group == "init":
        return _init(args)
    from .checks import check

    return check(args.env_file, args.timeout)


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
            print(f"wrote the model registry template {registry}: it lists no model yet, so members get the "
                  "built-in tiny models (random weights) until you add one with 'python -m bot models add "
                  "KEY SOURCE' or uncomment an example")  # fmt: skip
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
