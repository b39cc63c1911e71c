"""Waiting with a deadline: the one poll the stand-in and the tests use.

Every wait names what it waits for, so a wait that runs out says which one it was
("timed out after 30 s waiting for the bot's answer to /train"), and the condition is
checked once more at the deadline: a loop that was starved of CPU until then does not fail
a condition that holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# asyncio.TimeoutError is the builtin TimeoutError from Python 3.11 on; before, it is its own class.
_BASES: tuple[type[Exception], ...] = (
    (asyncio.TimeoutError,) if asyncio.TimeoutError is TimeoutError else (asyncio.TimeoutError, TimeoutError)
)


class WaitTimeout(*_BASES):  # type: ignore[misc]
    """A wait ran past its deadline; the message says what it waited for."""

    def __init__(self, what: str, timeout: float, detail: str = "") -> None:
        super().__init__(
            f"timed out after {timeout:g} s waiting for {what}" + (f" ({detail})" if detail else "")
        )


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    what: str,
    every: float = 0.01,
    progress: Callable[[], object] | None = None,
) -> T:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that.

    :class:`WaitTimeout` once ``timeout`` seconds passed without it holding. With ``progress``
    (plain or async; a value that changes while the awaited work moves, such as a job's step), the
    ``timeout`` counts from its last change instead: a slow machine gets the time its work takes, a
    stalled one fails after ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    mark = await _value(progress) if progress is not None else None
    while True:
        value = await _value(predicate)
        if value:
            return value  # type: ignore[return-value]
        if progress is not None and (now := await _value(progress)) != mark:
            mark, deadline = now, loop.time() + timeout
        if loop.time() >= deadline:
            raise WaitTimeout(what, timeout, f"no progress from {mark!r}" if progress is not None else "")
        await asyncio.sleep(min(every, max(0.0, deadline - loop.time())))


async def _value(function: Callable[[], object]) -> object:
    value = function()
    return await value if inspect.isawaitable(value) else value


def wait_for_sync(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    every: float = 0.05,
    progress: Callable[[], object] | None = None,
) -> T:
    """:func:`wait_for` for code outside an event loop (a test watching another process)."""
    deadline = time.monotonic() + timeout
    mark = progress() if progress is not None else None
    while True:
        value = predicate()
        if value:
            return value
        if progress is not None and (now := progress()) != mark:
            mark, deadline = now, time.monotonic() + timeout
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, f"no progress from {mark!r}" if progress is not None else "")
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
