"""A job's stored events are bounded: a sample of its step events, every other event, each payload
small; the progress columns still follow every step."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from bot.queue.record import MAX_STORED_EVENTS, STEP_SAMPLES, UntrustedEvent, record_event
from bot.services import open_services
from db import jobs as repo
from db.database import transaction
from tests.queue_helpers import queue_settings
from trainer.contract import make_event, parse_event_checked

MB = 2**20


async def _new_job(services, total_steps: int) -> repo.JobRow:
    folder = services.settings.jobs_dir() / f"job-{total_steps}"
    (folder / "output").mkdir(parents=True)
    new = repo.NewJob(1, "train", 0, "chara", None, "tiny-sd15", "sd15", 64, 1, total_steps, 2,
                      {"epochs": 40, "options": {}}, str(folder))  # fmt: skip
    await services.stamina.ensure_user(1)
    async with transaction(services.conn):
        return await repo.insert_job(services.conn, new)


async def _database_bytes(services) -> int:
    """The database's size with its write-ahead log folded in."""
    async with services.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
        await cur.fetchall()
    path = services.settings.database_path()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _step(step: int, total: int) -> dict:
    return make_event("step", step=step, total_steps=total, epoch=1 + step * 40 // (total + 1), loss=0.1, lr=1e-4)


def _megabyte_events(out) -> list[dict]:
    """Events of about 1 MB each, as a trainer gone wrong might write them (they pass as dicts)."""
    (out / "p.png").write_bytes(b"png")
    big = "x" * MB
    return [
        {**make_event("preview_ready", epoch=1 + i % 40, path=str(out / "p.png")), "blob": big}
        if i % 2 else {**make_event("failed", message="m"), "message": big}
        for i in range(40)
    ]  # fmt: skip


@pytest.mark.slow  # 20,000 transactions: about 30 s
def test_a_job_of_20000_steps_and_40_one_megabyte_events_grows_the_database_by_under_a_megabyte(tmp_path):
    settings = queue_settings(tmp_path)
    total = 20_000

    async def go() -> tuple[int, int, int]:
        async with open_services(settings) as s:
            job = await _new_job(s, total)
            before = await _database_bytes(s)
            for step in range(1, total + 1):
                job = await record_event(s.conn, job, _step(step, total))
                assert job.step == step  # the progress columns follow every step
            for big in _megabyte_events(settings.jobs_dir() / f"job-{total}" / "output"):
                line = json.dumps(big)
                assert len(line) > MB and parse_event_checked(line)[0] is None  # refused as a line
                await record_event(s.conn, job, big)  # as a dict: stored small
            grown = await _database_bytes(s) - before
            events = await repo.events(s.conn, job.id)
            steps = [e["step"] for e in events if e["event"] == "step"]
            assert len(steps) <= STEP_SAMPLES + 1 and steps[-1] == total
            assert steps == sorted(steps) and steps[0] <= total // STEP_SAMPLES  # spread over the job
            assert all(len(json.dumps(e)) <= repo.MAX_EVENT_BYTES for e in events)
            assert sum(e["event"] != "step" for e in events) == 40  # every other event is kept
            return grown, len(steps), len(events)

    grown, steps, stored = asyncio.run(go())
    print(f"database grew by {grown} bytes for {stored} stored events ({steps} of 20000 steps)")
    assert grown < MB, grown


def test_irregular_and_hostile_step_reports_stay_bounded(tmp_path):
    """A time-throttled trainer reports steps at uneven intervals: the sample still spans the job.
    One that jumps back and forth cannot store more than the caps."""
    settings = queue_settings(tmp_path)

    async def go() -> None:
        async with open_services(settings) as s:
            total, rng, step = 5000, random.Random(7), 0
            job = await _new_job(s, total)
            while step < total:
                step = min(total, step + rng.randint(1, 7))
                job = await record_event(s.conn, job, _step(step, total))
            kept = await repo.events(s.conn, job.id, "step")
            assert STEP_SAMPLES * 0.9 <= len(kept) <= STEP_SAMPLES + 1, len(kept)
            assert kept[-1]["step"] == total

            hostile = await _new_job(s, 4000)
            for i in range(1500):
                await record_event(s.conn, hostile, _step(0 if i % 2 else 4000, 4000))
            stored, steps = await repo.count_events(s.conn, hostile.id)
            assert steps <= 2 * STEP_SAMPLES + 50 and stored <= MAX_STORED_EVENTS

    asyncio.run(go())


def test_a_refused_event_stores_nothing_and_the_next_good_one_is_recorded(tmp_path):
    settings = queue_settings(tmp_path)

    async def go() -> None:
        async with open_services(settings) as s:
            job = await _new_job(s, 100)
            bad = {**_step(5, 100), "loss": "NaN"}
            try:
                await record_event(s.conn, job, bad)
            except UntrustedEvent as exc:
                assert "loss" in str(exc)
            else:
                raise AssertionError("a string loss was accepted")
            job = await record_event(s.conn, job, _step(6, 100))
            assert job.step == 6 and [e["step"] for e in await repo.events(s.conn, job.id)] == [6]

    asyncio.run(go())
