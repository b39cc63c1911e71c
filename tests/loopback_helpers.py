"""Helpers the loopback tests share: callbacks posted by hand, as a misbehaving bot would."""

from __future__ import annotations

import aiohttp

from bot.loopback import Interaction, LoopbackDiscord


async def raw_callback(server: LoopbackDiscord, handle: Interaction, body: dict) -> tuple[int, int]:
    """POST an interaction callback by hand; (HTTP status, Discord error code or 0)."""
    url = f"{server.api_base}/interactions/{handle.id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        data = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, int(data.get("code", 0))
