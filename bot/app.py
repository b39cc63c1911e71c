"""``python -m bot run``: the services, the queue, the file server and the Discord client together.

:func:`running_bot` is the same assembly without logging in, for the tests and the offline demo
(they point discord.py at the loopback stand-in and start the client themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from .client import LoraBot
from .links import LinkClaims
from .services import Services, open_services, running_queue
from .settings import Settings, SettingsError
from .web import FileServer

log = logging.getLogger(__name__)


def link_resolver(services: Services):
    """Map a verified link to the file, after checking its owner may still have it."""
    from .datasets.service import ServiceError

    async def resolve(claims: LinkClaims) -> Path | None:
        try:
            if claims.kind == "epoch":
                job_id, epoch = (int(x) for x in claims.ref.split("/"))
                return Path(await services.queue.epoch_file(claims.owner_id, job_id, epoch))
            if claims.kind == "lora":
                return Path((await services.library.find(claims.owner_id, claims.ref)).path)
        except (ServiceError, ValueError):
            return None
        return None

    return resolve


@contextlib.asynccontextmanager
async def running_bot(
    services: Services,
    *,
    queue: bool = True,
    trainer_command: list[str] | None = None,
    file_server: FileServer | None = None,
    guild_ready_timeout: float = 2.0,
) -> AsyncIterator[LoraBot]:
    """The queue (optional), the file server and a client that is not started yet."""
    async with contextlib.AsyncExitStack() as stack:
        if queue:
            await stack.enter_async_context(running_queue(services, trainer_command))
        server = file_server or FileServer.from_settings(services.settings, link_resolver(services))
        await stack.enter_async_context(server)
        bot = LoraBot(services, server, guild_ready_timeout=guild_ready_timeout)
        try:
            yield bot
        finally:
            if not bot.is_closed():
                await bot.close()


async def run_bot(settings: Settings) -> int:
    """Log in and serve until SIGTERM/SIGINT; problems a person can fix are one line (exit 1)."""
    import aiohttp
    import discord

    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        raise SettingsError(
            "LORABOT_DISCORD_TOKEN is not set: put the bot's token (Developer Portal > Bot) in .env; "
            "see .env.example"
        )
    _log_to_stderr()
    await _check_token(token)  # before the queue starts a trainer for a bot that cannot log in
    if not settings.public_url:
        log.warning(
            "LORABOT_PUBLIC_URL is not set: download links for files over Discord's upload limit point at "
            "http://%s, which members can only open if they can reach this machine there",
            settings.http_bind,
        )
    async with open_services(settings) as services, running_bot(services) as bot:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        try:
            await bot.start(token)
        except discord.LoginFailure as exc:
            raise SettingsError(
                f"Discord refused LORABOT_DISCORD_TOKEN ({exc}): copy the token again"
            ) from None
        except discord.PrivilegedIntentsRequired as exc:
            raise SettingsError(f"Discord refused the connection: {exc}") from None
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionError(f"cannot reach Discord ({exc}): check the network") from None
    return 0


async def _check_token(token: str) -> None:
    import aiohttp
    import discord

    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(token)
    except discord.LoginFailure as exc:
        raise SettingsError(f"Discord refused LORABOT_DISCORD_TOKEN ({exc}): copy the token again") from None
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionError(f"cannot reach Discord ({exc}): check the network") from None
    finally:
        await client.close()


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
