"""The queue when its database is slow or full: another process holding SQLite's write lock, a full
disk while events or the ledger are written, many processes submitting at once, restarts right
after jobs end, jobs whose handler died. No job stranded, none charged or announced twice."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.queue import recorder as recorder_module
from bot.queue import settle as settle_module
from bot.queue.bus import JobUpdate
from bot.queue.generation import GenerateRequest
from bot.services import open_services, running_queue
from db import jobs as repo
from db import stamina as stamina_repo
from db.database import DatabaseBusy, transaction, write_patience
from tests.queue_helpers import FAST, make_dataset, queue_settings, wait_until
from tests.test_dispatcher import run as run_with_queue

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]
OPTIONS = {**FAST, "repeats": 25, "resolution": 512}  # 4 images x 25 x 2 epochs = 200 steps


def _settings(tmp_path, **overrides):
    return queue_settings(tmp_path, {"tiny-sd15": tmp_path / "unused"}, **overrides)


class HeldLock:
    """Another process that holds the database's write lock for ``seconds``."""

    def __init__(self, path: Path, seconds: float):
        code = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('COMMIT')\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
        )

    async def held(self) -> None:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line.strip() == "held", "the lock holder did not take the lock"

    async def released(self, timeout: float = 120) -> None:
        await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _finished(conn, job_id: int, timeout: float = 120) -> repo.JobRow:
    async def done() -> bool:
        return (await repo.get_job(conn, job_id)).finished

    await wait_until(done, timeout=timeout, what=f"job #{job_id} to end")
    return await repo.get_job(conn, job_id)


def _run(settings, body, trainer_command=FAKE):
    """The dispatcher tests' runner (services, a collecting subscriber, the queue); the per-test
    timeout bounds it."""
    return run_with_queue(settings, body, trainer_command)


def test_a_held_write_lock_neither_kills_the_trainer_nor_loses_its_events(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "stream")
    monkeypatch.setenv("FAKE_TRAINER_STEPS", "200")
    monkeypatch.setenv("FAKE_TRAINER_SECONDS", "3")
    settings = _settings(tmp_path, hang_timeout_s=5)

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", OPTIONS)

        async def streaming() -> bool:
            return any(u.job.id == job.id and u.kind == "step" for u in updates)

        await wait_until(streaming, timeout=60, what="the trainer's first step")
        holder = HeldLock(settings.database_path(), 10)  # longer than the trainer takes, than the hang timeout
        try:
            await holder.held()
            t0 = time.monotonic()
            reads = 0
            while holder.proc.poll() is None:  # reads answer at once meanwhile
                started = time.monotonic()
                await repo.get_job(s.conn, job.id)
                await s.stamina.history(1)
                assert time.monotonic() - started < 1.0, "a read waited behind the held write lock"
                reads += 1
                await asyncio.sleep(0.2)
            assert reads > 10 and time.monotonic() - t0 > 8
        finally:
            holder.kill()
        ended = await _finished(s.conn, job.id)
        assert (ended.state, ended.attempts, ended.step, ended.refunded) == ("done", 1, 200, 0)
        assert [e.epoch for e in await repo.epochs(s.conn, job.id)] == [1]
        assert [u.kind for u in updates if u.job.id == job.id].count("finished") == 1
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge"]

    _run(settings, body)


def test_a_command_write_under_a_held_lock_is_refused_in_time_and_changes_nothing(tmp_path):
    settings = _settings(tmp_path)

    async def go():
        async with open_services(settings) as s:
            await s.stamina.balance(5)
            holder = HeldLock(settings.database_path(), 10)
            try:
                await holder.held()
                started = time.monotonic()
                with pytest.raises(DatabaseBusy, match="busy"):
                    await s.stamina.grant(5, 10, actor_id=9)
                assert time.monotonic() - started < 2.5  # inside Discord's 3 s with room to answer
                assert (await s.stamina.balance(5)).balance == 150  # a read: answered, unchanged
            finally:
                holder.kill()
            with write_patience(None):  # the lock is free again: the same write lands
                await s.stamina.grant(5, 10, actor_id=9)
            assert (await s.stamina.balance(5)).balance == 160

    asyncio.run(asyncio.wait_for(go(), 60))


def test_a_full_disk_while_events_are_recorded_delays_them_and_loses_none(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "stream")
    monkeypatch.setenv("FAKE_TRAINER_STEPS", "200")
    monkeypatch.setenv("FAKE_TRAINER_SECONDS", "1")
    real = recorder_module.record_event
    failures = {"left": 6}  # about 6 s of retries with backoff: the trainer ends meanwhile

    async def disk_full_for_a_while(conn, job, event, *args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real(conn, job, event, *args, **kwargs)

    monkeypatch.setattr(recorder_module, "record_event", disk_full_for_a_while)

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", OPTIONS)
        ended = await _finished(s.conn, job.id)
        assert failures["left"] == 0
        assert (ended.state, ended.attempts, ended.step) == ("done", 1, 200)
        assert [e.epoch for e in await repo.epochs(s.conn, job.id)] == [1]

    _run(_settings(tmp_path), body)


def test_a_trainer_out_of_disk_fails_with_the_refund_once_the_ledger_can_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "nospace")
    real = settle_module.settle
    failures = {"left": 5}

    async def ledger_full_for_a_while(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real(*args, **kwargs)

    monkeypatch.setattr("bot.queue.ending.settle", ledger_full_for_a_while)

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", OPTIONS)
        ended = await _finished(s.conn, job.id)
        assert failures["left"] == 0
        assert ended.state == "failed" and ended.refunded == job.cost
        assert ended.error.startswith("the server ran out of disk space")
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge", "refund"]

    _run(_settings(tmp_path), body)


def test_a_generation_that_delivers_fewer_images_refunds_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVE_IMAGES", "0")

    async def body(s, dispatcher, updates):
        request = GenerateRequest("tkchar", base_model="tiny-sd15", steps=2, size="64", count=2)
        job = await s.generation.submit(1, request)
        ended = await _finished(s.conn, job.id)
        assert (ended.state, ended.step, ended.refunded) == ("done", 0, job.cost)
        assert ended.error == "2 of 2 images could not be made"
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge", "refund"]

    _run(_settings(tmp_path), body)


def test_a_running_job_whose_handler_died_is_recovered_after_the_hang_timeout(tmp_path):
    settings = _settings(tmp_path, hang_timeout_s=1)

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        await s.queue.pause(actor_id=9)
        job = await s.queue.submit_training(1, "chara", OPTIONS)
        async with transaction(s.conn):  # as a handler that died after its claim would leave it
            await repo.transition(s.conn, job.id, ("queued",), "running", attempts=1,
                                  started_at=time.time() - 5, last_event_at=time.time() - 5, pid=None)  # fmt: skip

        async def back() -> bool:
            return (await repo.get_job(s.conn, job.id)).state == "queued"

        await wait_until(back, timeout=30, what="the stranded job back in the queue")
        assert "its process was lost" in (await repo.get_job(s.conn, job.id)).error

    _run(settings, body)


def test_each_end_is_announced_once_across_restarts(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "stream")
    monkeypatch.setenv("FAKE_TRAINER_STEPS", "10")
    monkeypatch.setenv("FAKE_TRAINER_SECONDS", "0")
    settings = _settings(tmp_path)

    async def session(claim: bool, submit: bool) -> tuple[list[int], int | None]:
        """One bot run: its subscriber posts (claims) ends when ``claim``; returns the ends it heard."""
        heard: list[int] = []
        async with open_services(settings) as s:

            async def post(update: JobUpdate) -> None:
                if update.kind == "finished" and (not claim or await repo.claim_announcement(s.conn, update.job.id)):
                    heard.append(update.job.id)

            s.bus.subscribe(post)
            async with running_queue(s, FAKE):
                job = None
                if submit:
                    await make_dataset(s, images=4)
                    job = await s.queue.submit_training(1, "chara", OPTIONS, channel_id=77)
                    await _finished(s.conn, job.id)
                    await wait_until(_async(lambda: job.id in heard), 30, what="the end to be heard")
                else:  # a later job, queued, run and heard after the restart: the earlier one must not be
                    later = await s.queue.submit_training(1, "chara", OPTIONS, channel_id=77)
                    await _finished(s.conn, later.id)
                    await wait_until(_async(lambda: later.id in heard), 30, what="the later end")
                    await s.bus.drain()
            return heard, job.id if job else None

    async def go():
        heard, first = await session(claim=True, submit=True)
        assert heard == [first]
        heard_again, _ = await session(claim=True, submit=False)
        assert first not in heard_again and len(heard_again) == 1

    asyncio.run(asyncio.wait_for(go(), 120))


def test_an_end_not_posted_before_a_restart_is_posted_once_after_it(tmp_path):
    settings = _settings(tmp_path)

    async def go():
        async with open_services(settings) as s:
            await make_dataset(s, images=4)
            await s.queue.pause(actor_id=9)
            job = await s.queue.submit_training(1, "chara", OPTIONS, channel_id=77)
            await s.queue.cancel(1, job.id)  # ended with no dispatcher running: nobody posted it
        for expected in ([job.id], []):  # posted at the first start, never again
            async with open_services(settings) as s:
                heard: list[int] = []

                async def post(update: JobUpdate, s=s, heard=heard) -> None:
                    if update.kind == "finished" and await repo.claim_announcement(s.conn, update.job.id):
                        heard.append(update.job.id)

                s.bus.subscribe(post)
                async with running_queue(s, FAKE) as dispatcher:
                    await dispatcher._publish_unannounced()  # what its watch loop does every second
                    await s.bus.drain()
                assert heard == expected

    asyncio.run(asyncio.wait_for(go(), 60))


def _async(check):
    async def wrapped() -> bool:
        return check()

    return wrapped


def _submit_many(tmp_path: Path, first_user: int, count: int, results) -> None:
    """Another process: ``count`` members queue a generation each, all at once."""

    async def go():
        settings = _settings(tmp_path)
        async with open_services(settings) as s:
            request = GenerateRequest("tkchar", base_model="tiny-sd15", steps=2, size="64")
            outcomes = await asyncio.gather(
                *(s.generation.submit(first_user + i, request) for i in range(count)), return_exceptions=True
            )
        return [type(o).__name__ + ": " + str(o) for o in outcomes if isinstance(o, BaseException)]

    results.put(asyncio.run(go()))


def test_two_hundred_submissions_from_two_processes_all_land(tmp_path):
    settings = _settings(tmp_path)

    async def prepare():
        async with open_services(settings):
            pass

    asyncio.run(prepare())
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_submit_many, args=(tmp_path, 1000 * (n + 1), 100, results))
        for n in range(2)
    ]
    for p in procs:
        p.start()
    errors = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    assert errors == [[], []]

    async def count():
        async with open_services(settings) as s:
            return len(await repo.list_jobs(s.conn, limit=1000))

    assert asyncio.run(count()) == 200
