"""Pointing discord.py at a :class:`LoopbackDiscord` and running a client against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import discord
import discord.gateway
import discord.http
import yarl

from .server import LoopbackDiscord

TOKEN = "loopback.bot.token"


@contextlib.contextmanager
def point_discord_at(server: LoopbackDiscord) -> Iterator[None]:
    """Patch discord.py's REST base and gateway URL to the stand-in; restore them after."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = server.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.ws_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_client(
    server: LoopbackDiscord, client: discord.Client, *, timeout: float = 10.0
) -> AsyncIterator[discord.Client]:
    """Start ``client`` against ``server``, wait for READY, and close it on exit.

    Pass ``guild_ready_timeout=0.05`` (or similar) to the client so that READY is
    not held back discord.py's default 2 s waiting for more GUILD_CREATEs.

    discord.py's client dies (without logging) on a gateway payload it cannot
    parse; when that happened during the block, leaving it raises RuntimeError.
    """
    with point_discord_at(server):
        task = asyncio.create_task(client.start(TOKEN))
        try:
            ready = asyncio.create_task(client.wait_until_ready())
            done, _ = await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                ready.cancel()
                if task in done:
                    task.result()  # re-raise the client's failure
                raise TimeoutError("the client did not become ready")
            yield client
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError("the discord.py client died during the test") from task.exception()
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout)
