"""``python -m bot``: the operator CLI over the same services the Discord cogs call.

Settings come from the environment (``LORABOT_DATA_DIR``, default ``./data``; the
database inside it unless ``LORABOT_DATABASE`` says otherwise). A bad argument is one
line on stderr and exit 2; a request the services refuse (an unknown dataset, too little
stamina, a queue already run by another process) is one line and exit 1, never a traceback.

``python -m bot`` alone starts the Discord bot (:mod:`bot.app`) when ``LORABOT_DISCORD_TOKEN``
is set, and otherwise runs the offline demo (:mod:`bot.demo`); ``run`` and ``demo`` name them.

Groups: ``init``, ``models`` and ``check`` (:mod:`bot.cli.admin`), ``dataset`` (:mod:`bot.cli.datasets`), ``stamina``, ``queue``, ``job``, ``estimate``
and ``worker`` (:mod:`bot.cli.queue`, :mod:`bot.cli.worker`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

from trainer.contract.families import DEFAULT_FAMILY, FAMILIES

from . import admin, datasets, models, queue
from .common import for_operator
from .datasets import EXIT_ERROR

CLI_WRITE_PATIENCE_S = 30.0

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["EXIT_ERROR", "main"]


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (and exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m bot",
        description="LoRA training bot: operator commands ('python -m bot GROUP --help' for each)",
        epilog="First time: 'python -m bot init', then 'python -m bot check'. Every command is in README.md, "
        "section 'The operator CLI'.",
    )
    groups = p.add_subparsers(dest="group", required=True, parser_class=_OneLineParser)
    groups.add_parser("run", help="start the Discord bot (needs LORABOT_DISCORD_TOKEN)")
    demo = groups.add_parser(
        "demo", help="the whole flow offline through the real bot and a loopback Discord (no token needed)"
    )
    demo.add_argument(
        "--out", default="lorabot-demo", help="folder for the demo's files (default ./lorabot-demo)"
    )
    demo.add_argument(
        "--family", choices=list(FAMILIES), default=DEFAULT_FAMILY,
        help=f"the tiny base model's family (default {DEFAULT_FAMILY})",
    )  # fmt: skip
    demo.add_argument(
        "--locale", default="en-US",
        help="the member's Discord language: ja writes the whole conversation in Japanese (default en-US)",
    )  # fmt: skip
    admin.add_parsers(groups)
    datasets.add_parser(groups)
    queue.add_parsers(groups)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv) if argv else None  # --help works whatever the settings hold
    from ..settings import SettingsError, load_settings

    try:
        if args is not None and args.group in admin.OWN_SETTINGS:  # they load (or check) the settings
            return admin.run_own(args)
        settings = load_settings()
        args = args or _parser().parse_args(_default_command(settings))
        return asyncio.run(_dispatch(args, settings))
    except SettingsError as exc:
        _fail(f"settings: {exc} (fix it in .env or the environment; 'python -m bot check' checks them all)")
    except _known_errors() as exc:  # the services' words for members, said to the operator
        _fail(for_operator(str(exc), getattr(args, "user", None)))
    except BrokenPipeError:  # the output went to a pager or `head` that stopped reading: no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    return EXIT_ERROR


def _default_command(settings: Settings) -> list[str]:
    """``python -m bot`` alone: the bot when a token is configured, else the offline demo."""
    return (
        ["run"] if settings.discord_token and settings.discord_token.get_secret_value().strip() else ["demo"]
    )


def _fail(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from db.database import write_patience

    if args.group == "run":
        from ..app import run_bot

        return await run_bot(settings)
    if args.group == "demo":
        from ..demo import run_demo

        return await run_demo(args.out, args.family, args.locale)
    if args.group == "models":  # the registry file only: no database, and it may be the thing to fix
        return models.run_models(args, settings)
    # an operator at a terminal can wait for a lock the bot holds a moment; a member cannot
    with write_patience(CLI_WRITE_PATIENCE_S):
        return await _run_group(args, settings)


async def _run_group(args: argparse.Namespace, settings: Settings) -> int:
    from ..services import open_services

    async with open_services(settings) as services:
        if args.group == "dataset":
            return await datasets.run(services, args)
        return await queue.run(services, args)


def _known_errors() -> tuple[type[BaseException], ...]:
    # member errors (services, stamina, registry, a busy database); discord.HTTPException: Discord
    # refused or failed at start-up (5xx, 429)
    from discord import HTTPException

    from db.database import MigrationError

    from ..errors import MEMBER_ERRORS
    from ..queue.recovery import DispatcherBusy

    return (*MEMBER_ERRORS, MigrationError, DispatcherBusy, HTTPException)
