"""The real bot while ANOTHER PROCESS HOLDS SQLITE'S WRITE LOCK, against the same run without it.

Two phases in one run, each on its own temporary folder: the real bot (``bot.app.running_bot``
with the queue, the fake trainer ``tests/fake_trainer.py`` in ``stream`` mode: 2000 step events
(--quick 400) over 2/3 of the hold (at most 20 s), an epoch file, done) on the loopback Discord
stand-in. A member (the first) queues a training job of that many steps; once its trainer streams:
  (a) base: nothing else holds the database;
  (b) held: a process takes BEGIN IMMEDIATE on the bot's database for ``--held-lock-s`` seconds
      (longer than the trainer runs: its last steps, epoch and end wait in the bot's memory).
Meanwhile, every 0.5 s, each member sends one command, rotating through /queue, /stamina,
/epochs job:<the job> (reads; other members than its owner get the "no such job" answer, a read
all the same) and /dataset new with a unique name (a write). Every member ran /stamina and one
/dataset new before (not measured), so /stamina is a read.
ack = INTERACTION_CREATE dispatch -> the bot's first callback (``Interaction.ack_s``).
late: interactions acked after 3 s or never. A write under the held lock is expected to be
refused in time ("the server is busy"); answered in time counts as not late whatever it said.
Per phase on stderr: ok / refused / error (the generic message) / none (only a late callback,
refused by the stand-in) counts; a write "ok" under the held lock waited for the lock's release.
events_lost: the job's shortfall once it ends: steps emitted minus its final step, +1 without
the saved epoch, +1 unless it ends done, +1 per start past the first. Step events the recorder's
bounded buffer gave way to (later steps carry the same progress) are reported as
step_events_dropped, not lost. stuck_jobs: the job not ended done within ``STUCK_S`` after the lock
is released (base: after the commands stop).
db_growth_mb_per_job: measured ONCE, in a third run with no held lock and no commands: the growth
of the database file plus its -wal (emptied by a checkpoint before) over one job whose fake
trainer emits 20,000 step events over 40 s (--quick 2,000 over 4 s); db_growth_checkpointed_mb:
the main file's growth once the WAL is checkpointed into it (the data, not the WAL's scratch).
Per-phase lines on stderr; the last stdout line: the held phase's numbers, then base_* (phase a)
and *_ratio (held / base) keys. Exits non-zero when late, events_lost or stuck_jobs > 0 in a phase.

    python bench/db_faults.py [--held-lock-s 30] [--members 4] [--quick]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# As in bench/bot_latency.py: bench/queue.py must not shadow the standard library's queue module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bench.bot_latency import World, error_log, log, p50_p99_ms, world
from bot.app import link_resolver, running_bot
from bot.loopback import Interaction, running_client
from bot.loopback.state import Member
from bot.services import Services, open_services
from bot.ui.common import GENERIC_ERROR
from bot.web import FileServer
from db import jobs as repo
from tests.queue_helpers import FAST, make_dataset, queue_settings
from tests.test_db_faults import HeldLock

ROOT = _HERE.parent
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]
IMAGES = 4  # the phases' dataset; FAST has 2 epochs at batch 1: steps = images x repeats x 2
GROWTH_IMAGES = 10  # repeats are at most 1000: 20,000 steps need 10 images
READS = ("queue", "stamina", "epochs")
ROTATION = ("queue", "dataset new", "stamina", "epochs")
TICK_S = 0.5
ACK_DEADLINE_S = 3.0
ANSWER_WAIT_S = 10.0
STUCK_S = 60.0


@dataclass
class Result:
    """One phase: acks per kind of command, how each was answered, the job's end."""

    acks: dict[str, list[float]] = field(default_factory=lambda: {"read": [], "write": []})
    answers: Counter = field(default_factory=Counter)  # (read|write, ok|refused|error|none)
    late: int = 0
    interactions: int = 0
    events_lost: int = 0
    stuck_jobs: int = 0
    step_events_dropped: int = 0
    errors_logged: int = 0


def job_options(steps: int, images: int = IMAGES) -> dict[str, object]:
    """Options whose total steps are ``steps`` (the fake trainer emits as many step events)."""
    if steps % (images * 2):
        raise ValueError(f"steps must be a multiple of {images * 2}")
    return {**FAST, "repeats": steps // (images * 2)}


@contextlib.asynccontextmanager
async def running_world(work: Path, members: int) -> AsyncIterator[tuple[World, Services]]:
    """The bot with its queue (the fake trainer) on ``work``, talking to a stand-in with ``members``."""
    work.mkdir(parents=True, exist_ok=True)
    settings = queue_settings(work, {"tiny-sd15": work / "unused"}, command_cooldown_s=0)
    w = world(members)
    async with w.server, open_services(settings) as services:
        files = FileServer.from_settings(services.settings, link_resolver(services))
        files.port = 0
        async with (
            running_bot(services, queue=True, trainer_command=FAKE, file_server=files,
                        guild_ready_timeout=0.05) as bot,
            running_client(w.server, bot, timeout=30),
        ):  # fmt: skip
            yield w, services


async def send(w: World, member: Member, command: str, job_id: int, serial: int) -> Interaction:
    if command == "dataset new":
        options = {"name": f"d{member.name}-{serial}", "base_model": "tiny-sd15", "trigger": "tk"}
        return await w.server.send_interaction(w.guild, member, command, options)
    if command == "epochs":
        return await w.server.send_interaction(w.guild, member, command, {"job": str(job_id)})
    return await w.server.send_interaction(w.guild, member, command)


async def answered(inters: list[Interaction], timeout: float = ANSWER_WAIT_S) -> None:
    """Until every interaction got a callback (accepted, or refused as late), or ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(i.ack_s is None for i in inters) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def said(inter: Interaction) -> str:
    """ok, refused (the server is busy), error (the generic message) or none (no accepted answer)."""
    if inter.response is None:
        return "none"
    texts = [(inter.response.get("data") or {}).get("content") or ""]
    if (message := inter.answer_message()) is not None:
        texts.append(message.content or "")
    text = " ".join(texts)
    if "busy" in text.lower():
        return "refused"
    return "error" if GENERIC_ERROR in text else "ok"


async def warm_up(w: World) -> None:
    """Every member's /stamina (creates the member: later ones are reads) and one /dataset new."""
    for command in ("stamina", "dataset new"):
        inters = [await send(w, m, command, 0, -1) for m in w.members]
        await answered(inters)
        if any(i.response is None for i in inters):
            raise RuntimeError(f"the warm-up /{command} got no answer")


async def streaming(services: Services, job_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (await repo.get_job(services.conn, job_id)).step == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the trainer of job #{job_id} sent no step in {timeout:g} s")
        await asyncio.sleep(0.05)


async def load(w: World, job_id: int, until) -> list[tuple[str, Interaction]]:
    """Each member sends a command every TICK_S until ``until()`` is true; returns (kind, interaction)."""
    kinds: list[str] = []
    tasks: list[asyncio.Task[Interaction]] = []
    tick = 0
    next_at = time.monotonic()
    while not until():
        for i, member in enumerate(w.members):
            command = ROTATION[(i + tick) % len(ROTATION)]
            kinds.append("read" if command in READS else "write")
            tasks.append(asyncio.create_task(send(w, member, command, job_id, tick)))
        tick += 1
        next_at += TICK_S
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return list(zip(kinds, await asyncio.gather(*tasks), strict=True))


def tally(result: Result, sent: list[tuple[str, Interaction]]) -> None:
    for kind, inter in sent:
        result.interactions += 1
        if inter.ack_s is None or inter.ack_s > ACK_DEADLINE_S or inter.late_callbacks:
            result.late += 1
        if inter.ack_s is not None:
            result.acks[kind].append(inter.ack_s)
            result.answers[kind, said(inter)] += 1


async def ended(services: Services, job_id: int, deadline: float) -> repo.JobRow:
    """The job once it ended, or as it is at ``deadline`` (time.monotonic)."""
    while not (job := await repo.get_job(services.conn, job_id)).finished and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return job


async def judge(result: Result, services: Services, job_id: int, steps: int, deadline: float) -> None:
    """events_lost, stuck_jobs (not done by ``deadline``) and the dropped step events of the job."""
    job = await ended(services, job_id, deadline)
    result.stuck_jobs = int(job.state != "done")
    saved = [e.epoch for e in await repo.epochs(services.conn, job_id)]
    result.events_lost = (
        max(0, steps - job.step) + int(saved != [1]) + int(job.state != "done") + max(0, job.attempts - 1)
    )
    result.step_events_dropped = steps - len(await repo.events(services.conn, job_id, "step"))
    log(f"  job #{job_id}: {job.state}, step {job.step}/{steps}, attempts {job.attempts}, epochs {saved}")


async def phase(work: Path, name: str, args: argparse.Namespace) -> Result:
    """One phase: the job streams while the members' commands run, with the lock held or not."""
    result = Result()
    os.environ.update(FAKE_TRAINER_MODE="stream", FAKE_TRAINER_STEPS=str(args.steps),
                      FAKE_TRAINER_SECONDS=str(args.stream_s))  # fmt: skip
    with error_log() as errors:
        async with running_world(work, args.members) as (w, services):
            await warm_up(w)
            owner = w.members[0]
            await make_dataset(services, owner=owner.user_id, images=IMAGES)
            channel = next(iter(w.guild.channels.values()))
            job = await services.queue.submit_training(
                owner.user_id, "chara", job_options(args.steps), channel_id=channel.id
            )
            await streaming(services, job.id)
            holder = HeldLock(services.settings.database_path(), args.held_lock_s) if name == "held" else None
            try:
                if holder is not None:
                    await holder.held()
                t0 = time.monotonic()
                if holder is not None:
                    sent = await load(w, job.id, lambda: holder.proc.poll() is not None)
                else:
                    sent = await load(w, job.id, lambda: time.monotonic() - t0 >= args.held_lock_s)
                released = time.monotonic()
                log(f"{name}: {len(sent)} commands over {released - t0:.1f} s")
            finally:
                if holder is not None:
                    holder.kill()
            await answered([inter for _, inter in sent])
            tally(result, sent)
            await judge(result, services, job.id, args.steps, released + args.stuck_s)
    result.errors_logged = len(errors.messages)
    for message in sorted(set(errors.messages))[:5]:
        log(f"  logged error: {message}")
    return result


def db_size(services: Services, wal: bool = True) -> int:
    path = services.settings.database_path()
    files = (path, path.with_name(path.name + "-wal")) if wal else (path,)
    return sum(p.stat().st_size for p in files if p.exists())


async def checkpointed_size(services: Services) -> int:
    """The main file's size once the WAL is copied into it (the data itself, not the WAL's scratch)."""
    await services.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db_size(services, wal=False)


async def growth(work: Path, steps: int, stream_s: float, stuck_s: float) -> tuple[float, float, int]:
    """MiB the database and its WAL grew by over one job of ``steps`` step events; the same after a
    checkpoint (the main file alone); the step events stored."""
    os.environ.update(FAKE_TRAINER_MODE="stream", FAKE_TRAINER_STEPS=str(steps),
                      FAKE_TRAINER_SECONDS=str(stream_s))  # fmt: skip
    async with running_world(work, 1) as (w, services):
        owner = w.members[0]
        await make_dataset(services, owner=owner.user_id, images=GROWTH_IMAGES)
        before = await checkpointed_size(services)  # an empty WAL: database+WAL = the main file
        channel = next(iter(w.guild.channels.values()))
        options = job_options(steps, GROWTH_IMAGES)
        job = await services.queue.submit_training(owner.user_id, "chara", options, channel_id=channel.id)
        job = await ended(services, job.id, time.monotonic() + stream_s + stuck_s)
        stored = len(await repo.events(services.conn, job.id, "step"))
        grown = (db_size(services) - before) / 2**20
        data = (await checkpointed_size(services) - before) / 2**20
        log(f"growth: job #{job.id} {job.state}, {stored}/{steps} step events stored, database+WAL "
            f"+{grown:.2f} MiB, database alone after a checkpoint +{data:.2f} MiB")  # fmt: skip
        if not job.finished:
            raise RuntimeError(f"the growth run's job #{job.id} did not end ({job.state})")
    return grown, data, stored


def p99(acks: list[float]) -> float:
    return round(p50_p99_ms(acks)[1], 1)


def describe(name: str, r: Result) -> None:
    for kind in ("read", "write"):
        p50, p99_ms = p50_p99_ms(r.acks[kind])
        counts = ", ".join(f"{how} {r.answers[kind, how]}" for how in ("ok", "refused", "error", "none"))
        log(f"{name} {kind:>5}: n={len(r.acks[kind])} p50 {p50:.1f} ms  p99 {p99_ms:.1f} ms  ({counts})")
    log(f"{name}: late {r.late}, events_lost {r.events_lost}, stuck_jobs {r.stuck_jobs}, "
        f"step events dropped {r.step_events_dropped}, errors logged {r.errors_logged}")  # fmt: skip


def ratio(a: float, b: float) -> float | str:
    return round(a / b, 2) if b > 0 else "nan"


async def measure(args: argparse.Namespace) -> tuple[dict[str, object], list[Result]]:
    with tempfile.TemporaryDirectory(prefix="bench-dbfaults-") as tmp:
        base = await phase(Path(tmp) / "base", "base", args)
        describe("base", base)
        held = await phase(Path(tmp) / "held", "held", args)
        describe("held", held)
        grown, data, stored = await growth(Path(tmp) / "growth", args.growth_steps, args.growth_s, args.stuck_s)
    read, write = p99(held.acks["read"]), p99(held.acks["write"])
    base_read, base_write = p99(base.acks["read"]), p99(base.acks["write"])
    line = {
        "held_lock_s": f"{args.held_lock_s:g}",
        "read_ack_p99_ms": read,
        "write_ack_p99_ms": write,
        "late": held.late,
        "events_lost": held.events_lost,
        "stuck_jobs": held.stuck_jobs,
        "db_growth_mb_per_job": round(grown, 2),
        "base_read_ack_p99_ms": base_read,
        "base_write_ack_p99_ms": base_write,
        "read_ack_ratio": ratio(read, base_read),
        "write_ack_ratio": ratio(write, base_write),
        "base_late": base.late,
        "base_events_lost": base.events_lost,
        "base_stuck_jobs": base.stuck_jobs,
        "writes_refused": held.answers["write", "refused"],
        "writes_ok": held.answers["write", "ok"],
        "writes_error": held.answers["write", "error"],
        "step_events_dropped": held.step_events_dropped,
        "growth_steps": args.growth_steps,
        "db_growth_checkpointed_mb": round(data, 2),
        "growth_step_events_stored": stored,
        "members": args.members,
    }
    return line, [base, held]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-lock-s", type=float, default=None, help="how long the lock is held (default 30; --quick 4)")
    ap.add_argument("--members", type=int, default=None, help="members sending commands (default 4; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="short phases and a small growth job, for a smoke test")
    args = ap.parse_args()
    quick = args.quick
    args.held_lock_s = args.held_lock_s if args.held_lock_s is not None else 4.0 if quick else 30.0
    args.members = args.members if args.members is not None else 2 if quick else 4
    if args.held_lock_s <= 0 or args.members < 1:
        ap.error("--held-lock-s must be positive and --members at least 1")
    # the trainer ends while the lock is held: its last events and its end wait for the lock
    args.stream_s = min(20.0, args.held_lock_s * 2 / 3)
    args.steps = 400 if quick else 2000
    args.growth_steps, args.growth_s = (2000, 4.0) if quick else (20_000, 40.0)
    args.stuck_s = 30.0 if quick else STUCK_S
    line, results = asyncio.run(measure(args))
    print(" ".join(f"{k}={v}" for k, v in line.items()), flush=True)
    if any(r.late or r.events_lost or r.stuck_jobs for r in results):
        sys.exit("bench/db_faults.py: " + "; ".join(
            f"{name}: late {r.late}, events_lost {r.events_lost}, stuck_jobs {r.stuck_jobs}"
            for name, r in zip(("base", "held"), results, strict=True)
        ))  # fmt: skip


if __name__ == "__main__":
    main()
