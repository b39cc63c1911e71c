"""Interaction ack latency of the real bot under 100 concurrent members, against a bare discord.py bot.

The bot (``bot.app.running_bot``, real services on a temporary folder, no queue) talks to the
loopback Discord stand-in (``bot.loopback``). Each round, every member sends one command at
once (asyncio.gather): /stamina, /dataset list, /queue, /dataset new (a write, a unique name per
member and round) or the autocomplete of ``/dataset info name``; the command a member sends
rotates with the round. ack = INTERACTION_CREATE dispatch -> the bot's first callback, as the
stand-in records it (``Interaction.ack_s``). A warm-up (everyone runs /dataset new, then one mixed
round) is not measured. Before the bot, in the same run, the same rounds with the same
concurrency go to a bare ``commands.Bot`` whose one slash command answers at once (on its own
stand-in): ack_ratio_vs_bare = bot p50 / bare p50.
bot_rss_mb: VmRSS of this process (bot, stand-in and driver) right after the bot's rounds;
base_rss_mb: the same just before the bot started (after the bare bot's rounds). The bench drops
the stand-in's records of each answered round, which it would otherwise keep all run.
Per-command lines on stderr; one line of key=value pairs on stdout. Exits non-zero when an
interaction got no answer, a callback came after the deadline (3 s), a command failed or the
bot logged an error.

    python bench/bot_latency.py [--members 100] [--rounds 100] [--quick]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/queue.py would shadow the standard
# library's queue module (aiosqlite imports it): take the folder off, put the root on.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse
import asyncio
import contextlib
import functools
import logging
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import discord
from discord.ext import commands

from bot.app import link_resolver, running_bot
from bot.loopback import Interaction, LoopbackDiscord, running_client
from bot.loopback.state import Guild, Member
from bot.services import open_services
from bot.settings import load_settings
from bot.web import FileServer

MIX = ("stamina", "dataset list", "queue", "dataset new", "autocomplete")
WAIT_S = 5.0  # per round, for the answers (the stand-in's ack deadline is 3 s)
log = functools.partial(print, file=sys.stderr, flush=True)
Send = Callable[[Member, int, int], Awaitable[tuple[str, Interaction]]]


class ErrorLog(logging.Handler):
    """ERROR records of the bot and discord.py (a bug, or a failed command)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    for name in ("discord", "bot"):
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in ("discord", "bot"):
            logging.getLogger(name).removeHandler(handler)


@dataclass
class Phase:
    """What one client's rounds gave: ack seconds per command, and what went wrong."""

    acks: dict[str, list[float]] = field(default_factory=dict)
    missing: int = 0  # interactions the bot never called back
    late: int = 0  # interactions whose first callback came after the stand-in's ack deadline
    failed: int = 0
    interactions: int = 0


@dataclass
class World:
    """A stand-in with one guild of ``members`` members."""

    server: LoopbackDiscord
    guild: Guild
    members: list[Member]


def world(members: int) -> World:
    server = LoopbackDiscord()
    guild = server.add_guild("Bench guild")
    return World(server, guild, [server.add_member(guild, f"m{i}") for i in range(members)])


def answered_ok(command: str, inter: Interaction) -> bool:
    """The answer is what the command gives on success (not an error message)."""
    if command == "autocomplete":
        return inter.response_type == 8 and bool(inter.choices)
    if inter.response_type != 4:
        return False
    data = (inter.response or {}).get("data") or {}
    if command == "dataset new":
        return "Created" in (data.get("content") or "")
    return bool(data.get("embeds"))


async def run_round(w: World, send: Send, rnd: int, phase: Phase | None) -> None:
    """Every member sends one interaction at once; wait for the answers; note them in ``phase``."""
    sent = await asyncio.gather(*(send(m, i, rnd) for i, m in enumerate(w.members)))
    waits = [asyncio.wait_for(inter.responded.wait(), WAIT_S) for _, inter in sent]
    await asyncio.gather(*waits, return_exceptions=True)
    forget(w.server, [inter for _, inter in sent])
    if phase is None:
        return
    for command, inter in sent:
        phase.interactions += 1
        if inter.ack_s is None:  # no callback at all
            phase.missing += 1
            continue
        phase.acks.setdefault(command, []).append(inter.ack_s)  # a late one counts with its time
        if inter.late_callbacks or inter.response is None:
            phase.late += 1
        else:
            phase.failed += not answered_ok(command, inter)


async def measured_rounds(name: str, w: World, send: Send, rounds: int, phase: Phase) -> None:
    """``rounds`` measured rounds; stops after one with an answer missing or late."""
    t0 = time.perf_counter()
    for rnd in range(rounds):
        await run_round(w, send, rnd, phase)
        if phase.missing or phase.late:
            log(f"{name}: stopped after round {rnd + 1}: answers missing or late")
            break
    log(f"{name}: {phase.interactions} interactions in {time.perf_counter() - t0:.1f} s")


def forget(server: LoopbackDiscord, done: list[Interaction]) -> None:
    """Drop the stand-in's records of answered interactions (it keeps every one, with the messages
    and the gateway's replay log: the heap would grow all run and its GC pauses land in the acks)."""
    for inter in done:
        server.interactions.pop(inter.id, None)
        server._tokens.pop(inter.token, None)  # private, but the stand-in has no public way
    for messages in server.messages.values():
        messages.clear()
    for session in server.gateway.sessions.values():
        session.events.clear()  # kept for a RESUME, which the bench does not do


def bot_sender(w: World, command_of: Callable[[int, int], str]) -> Send:
    """Member ``i`` sends ``command_of(i, round)``."""

    async def send(member: Member, i: int, rnd: int) -> tuple[str, Interaction]:
        command = command_of(i, rnd)
        if command == "autocomplete":
            inter = await w.server.send_autocomplete(
                w.guild, member, "dataset info", {"name": "d"}, focused="name"
            )
        elif command == "dataset new":
            options = {"name": f"d{i}-r{rnd}", "base_model": "tiny-sd15", "trigger": f"tk{i}"}
            inter = await w.server.send_interaction(w.guild, member, command, options)
        else:
            inter = await w.server.send_interaction(w.guild, member, command)
        return command, inter

    return send


def vm_rss_mb() -> float:
    """This process's resident memory now (VmRSS of /proc/self/status), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the peak


async def measure_bot(work: Path, members: int, rounds: int) -> tuple[Phase, float]:
    """The real bot's rounds; (phase, VmRSS in MiB right after them)."""
    settings = load_settings(data_dir=work / "data", command_cooldown_s=0)
    w, phase = world(members), Phase()
    async with w.server, open_services(settings) as services:
        files = FileServer.from_settings(services.settings, link_resolver(services))
        files.port = 0
        async with (
            running_bot(services, queue=False, file_server=files, guild_ready_timeout=0.05) as bot,
            running_client(w.server, bot, timeout=30),
        ):
            mixed = bot_sender(w, lambda i, r: MIX[(i + r) % len(MIX)])
            await run_round(w, bot_sender(w, lambda i, r: "dataset new"), -1, None)
            await run_round(w, mixed, -2, None)
            await measured_rounds("bot", w, mixed, rounds, phase)
            rss = vm_rss_mb()
    return phase, rss


def bare_bot() -> commands.Bot:
    """A bare discord.py bot: one global slash command that answers at once."""

    class Bare(commands.Bot):
        async def setup_hook(self) -> None:
            await self.tree.sync()

    bot = Bare(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

    @bot.tree.command(name="ping", description="Answers at once")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=discord.Embed(title="pong"), ephemeral=True)

    return bot


async def measure_bare(members: int, rounds: int) -> Phase:
    w, phase = world(members), Phase()

    async def send(member: Member, i: int, rnd: int) -> tuple[str, Interaction]:
        return "ping", await w.server.send_interaction(w.guild, member, "ping")

    async with w.server, running_client(w.server, bare_bot(), timeout=30):
        await run_round(w, send, -1, None)
        await measured_rounds("bare", w, send, rounds, phase)
    return phase


def p50_p99_ms(acks: list[float]) -> tuple[float, float]:
    ms = sorted(a * 1000 for a in acks)
    if len(ms) < 2:
        return (ms[0], ms[0]) if ms else (float("nan"), float("nan"))
    return statistics.median(ms), statistics.quantiles(ms, n=100, method="inclusive")[98]


def report(ours: Phase, bare: Phase, rss_mb: float, base_rss_mb: float, errors: int) -> dict[str, object]:
    for name, phase in (("bot", ours), ("bare", bare)):
        for command, acks in sorted(phase.acks.items()):
            p50, p99 = p50_p99_ms(acks)
            log(f"{name} {command:>13}: n={len(acks)} p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
                f"max {max(acks) * 1000:.1f} ms")  # fmt: skip
        log(f"{name}: missing {phase.missing}, late {phase.late}, failed {phase.failed}")
    p50, p99 = p50_p99_ms([a for acks in ours.acks.values() for a in acks])
    bare_p50, bare_p99 = p50_p99_ms([a for acks in bare.acks.values() for a in acks])
    return {
        "interactions": ours.interactions,
        "ack_p50_ms": round(p50, 1),
        "ack_p99_ms": round(p99, 1),
        "bare_ack_p50_ms": round(bare_p50, 1),
        "bare_ack_p99_ms": round(bare_p99, 1),
        "ack_ratio_vs_bare": round(p50 / bare_p50, 2),
        "bot_rss_mb": round(rss_mb),
        "base_rss_mb": round(base_rss_mb),
        "rss": "VmRSS",
        "missing": ours.missing + bare.missing,
        "late": ours.late + bare.late,
        "failed": ours.failed + bare.failed,
        "errors_logged": errors,
    }


async def measure(members: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp, error_log() as errors:
        # The bare bot first: the real bot leaves its views (and their timeout tasks) behind.
        bare = await measure_bare(members, rounds)
        base_rss = vm_rss_mb()
        ours, rss = await measure_bot(Path(tmp), members, rounds)
    for message in errors.messages[:5]:
        log(f"logged error: {message}")
    return report(ours, bare, rss, base_rss, len(errors.messages))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100, help="members sending at once")
    ap.add_argument("--rounds", type=int, default=None, help="measured rounds (default 100; --quick 5)")
    ap.add_argument("--quick", action="store_true", help="few rounds, for a CI smoke run")
    args = ap.parse_args()
    rounds = args.rounds if args.rounds is not None else 5 if args.quick else 100
    if args.members < 1 or rounds < 1:
        ap.error("--members and --rounds must be at least 1")
    result = asyncio.run(measure(args.members, rounds))
    print(f"members={args.members} " + " ".join(f"{k}={v}" for k, v in result.items()))
    if result["missing"] or result["late"] or result["failed"] or result["errors_logged"]:
        sys.exit(f"bench/bot_latency.py: {result['missing']} interaction(s) without an answer, "
                 f"{result['late']} late callback(s), {result['failed']} failed command(s), "
                 f"{result['errors_logged']} logged error(s)")  # fmt: skip


if __name__ == "__main__":
    main()
