"""Helpers the loopback tests share: callbacks posted by hand, as a misbehaving bot would, a
check that nothing logged an error, and a clock moved by hand."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import aiohttp

from bot.loopback import Interaction, LoopbackDiscord


async def raw_callback(server: LoopbackDiscord, handle: Interaction, body: dict) -> tuple[int, int]:
    """POST an interaction callback by hand; (HTTP status, Discord error code or 0)."""
    url = f"{server.api_base}/interactions/{handle.id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        data = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, int(data.get("code", 0))


class ManualClock:
    """A clock a test moves by hand (``LoopbackDiscord(clock=...)``): the answer window and the
    token lifetime are checked on it, whatever the machine's load does to wall time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def fail_on_logged_errors(*loggers: str) -> Iterator[None]:
    """Fail when these loggers logged an ERROR inside (a failing discord.py event parser or a bot
    bug only logs); an exception from the body propagates as it is."""
    errors = _ErrorRecords()
    for name in loggers:
        logging.getLogger(name).addHandler(errors)
    try:
        yield
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
