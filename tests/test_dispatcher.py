"""The dispatcher driving real trainer processes (tiny model) and misbehaving fake ones."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.queue.bus import JobUpdate
from bot.queue.costs import refund_for
from bot.queue.generation import GenerateRequest
from bot.services import open_services, running_queue
from db import jobs as repo
from db import stamina as stamina_repo
from tests.queue_helpers import FAST, job_progress, make_dataset, queue_settings, record_calls, wait_until

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]
GATED = [sys.executable, str(ROOT / "tests" / "gated_trainer.py")]


async def finished(conn, job_id: int, stall_s: float = 180) -> repo.JobRow:
    """The job once it ended; it may take as long as it keeps reporting progress (``stall_s`` apart)."""

    async def done() -> bool:
        return (await repo.get_job(conn, job_id)).finished

    await wait_until(done, stall_s, what=f"job #{job_id} to end", progress=job_progress(conn, job_id))
    return await repo.get_job(conn, job_id)


def run(settings, body, trainer_command=None):
    async def go():
        async with open_services(settings) as services:
            updates: list[JobUpdate] = []

            async def collect(update: JobUpdate) -> None:
                updates.append(update)

            services.bus.subscribe(collect)
            async with running_queue(services, trainer_command) as dispatcher:
                return await body(services, dispatcher, updates)

    return asyncio.run(go())


@pytest.mark.slow
def test_training_and_generation_through_the_dispatcher(tiny_sd15, tmp_path):
    """A real training job to the end; meanwhile generations run on the lane and reuse the loaded model.

    The real trainer runs behind a gate (tests/gated_trainer.py) that holds its events after the
    first step until the generations are done: the job is running for them on any machine."""
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", {**FAST, "repeats": 5})

        async def first_step() -> bool:
            return any(u.job.id == job.id and u.kind == "step" for u in updates)

        await wait_until(first_step, timeout=180, progress=job_progress(s.conn, job.id))
        request = GenerateRequest("tkchar, red", base_model="tiny-sd15", steps=2, size="64")
        first = await finished(s.conn, (await s.generation.submit(1, request)).id)
        training = await repo.get_job(s.conn, job.id)
        assert first.state == "done", first.error
        assert training.state == "running", "the generation waited for the training job"
        second = await finished(s.conn, (await s.generation.submit(1, request)).id)
        cached = [
            e["model_cached"] for g in (first, second) for e in await repo.events(s.conn, g.id, "started")
        ]
        assert cached == [False, True]

        os.kill(training.pid, signal.SIGUSR1)  # open the gate
        ended = await finished(s.conn, job.id)
        assert ended.state == "done" and ended.refunded == 0 and ended.step == ended.total_steps == 40
        kinds = [e["event"] for e in await repo.events(s.conn, job.id)]
        assert kinds[0] == "started" and kinds[-1] == "done"
        assert kinds.count("epoch_saved") == 2 and kinds.count("preview_ready") == 2
        epochs = await repo.epochs(s.conn, job.id)
        assert [(e.epoch, e.step) for e in epochs] == [(1, 20), (2, 40)]
        assert all(Path(e.path).is_file() and Path(e.preview_path).is_file() for e in epochs)
        assert await repo.step_rate(s.conn, "sd15", 64, 1) > 0  # measured: the next ETA uses it
        ledger = await stamina_repo.job_ledger(s.conn, job.id)
        assert [r.reason for r in ledger] == ["charge"]

        # the member's own copy in the library, then a compare grid with it
        await s.library.save(1, job.id, 2, "chara v1")
        request = GenerateRequest(
            "tkchar", lora="chara v1", steps=2, size="64", compare_weights=[0.7, 0.8, 1.0]
        )
        grid_job = await finished(s.conn, (await s.generation.submit(1, request)).id)
        files = await repo.files(s.conn, grid_job.id)
        assert (
            grid_job.state == "done"
            and grid_job.step == 3
            and [g for _, _, g in files] == [False] * 3 + [True]
        )
        await s.bus.drain()
        mine = [u.kind for u in updates if u.job.id == job.id]
        assert mine[:2] == ["queued", "running"] and mine[-1] == "finished" and mine.count("finished") == 1
        assert mine.index("started") < mine.index("epoch_saved") < mine.index("done")

    run(settings, body, GATED)


def gate_first_run_at(monkeypatch, tmp_path, kind: str) -> None:
    """The GATED trainer stops at the first ``kind`` event of its first run only (a resumed run goes
    through), so a test kills it at a known point on any machine."""
    monkeypatch.setenv("GATED_TRAINER_AT", kind)
    monkeypatch.setenv("GATED_TRAINER_ONCE", str(tmp_path / "gated-once"))


@pytest.mark.slow
def test_a_killed_trainer_resumes_from_its_last_saved_epoch_and_is_charged_once(
    tiny_sd15, tmp_path, monkeypatch
):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})
    gate_first_run_at(monkeypatch, tmp_path, "epoch_saved")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(
            1, "chara", {**FAST, "repeats": 2, "epochs": 3, "previews": False}
        )

        async def first_epoch_saved() -> bool:
            return any(u.job.id == job.id and u.kind == "epoch_saved" for u in updates)

        await wait_until(first_epoch_saved, timeout=180, progress=job_progress(s.conn, job.id))
        pid = (await repo.get_job(s.conn, job.id)).pid
        os.kill(pid, signal.SIGKILL)
        ended = await finished(s.conn, job.id)
        assert ended.state == "done" and ended.attempts == 2 and ended.refunded == 0
        starts = await repo.events(s.conn, job.id, "started")
        assert [e["resumed_from_step"] for e in starts] == [0, 8]
        assert [e.epoch for e in await repo.epochs(s.conn, job.id)] == [1, 2, 3]
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge"]
        await s.bus.drain()
        assert any(u.kind == "requeued" and u.job.id == job.id for u in updates)

    run(settings, body, GATED)


@pytest.mark.slow
def test_cancel_while_training_keeps_saved_epochs_and_refunds_the_rest(tiny_sd15, tmp_path, monkeypatch):
    # a rate that makes a 64-px step cost 0.5: a refund to see
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, step_costs={"sd15": 32})
    gate_first_run_at(monkeypatch, tmp_path, "epoch_saved")  # the cancel comes in epoch 2 at the latest

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        options = {**FAST, "repeats": 5, "epochs": 4, "previews": False}
        est = await s.queue.estimate_training(1, "chara", options)
        job = await s.queue.submit_training(1, "chara", options, expected_cost=est.cost)

        async def first_epoch_saved() -> bool:
            return bool(await repo.epochs(s.conn, job.id))

        await wait_until(first_epoch_saved, timeout=180, progress=job_progress(s.conn, job.id))
        assert (await s.queue.cancel(1, job.id)).state == "cancelling"
        ended = await finished(s.conn, job.id)
        cancelled = (await repo.events(s.conn, job.id, "cancelled"))[0]
        assert ended.state == "cancelled"
        assert ended.refunded == refund_for(est.cost, 80, cancelled["step"]) > 0
        assert est.cost == 40
        assert [e.epoch for e in await repo.epochs(s.conn, job.id)][0] == 1  # saved epochs stay the member's
        assert (await s.stamina.balance(1)).balance == 150 - est.cost + ended.refunded

    run(settings, body, GATED)


async def _not_taken(dispatcher) -> None:
    """Wait until the training loop looked at the queue twice more (the second look began after
    anything the test did before), and check it took nothing."""
    looks = record_calls(dispatcher, "_claim")

    def taken() -> list:
        return [job for (runner,), job in looks if runner.kind == "train"]

    await wait_until(lambda: len(taken()) >= 2, 30, 0.05, "the dispatcher to look for training jobs twice")
    assert taken() == [None] * len(taken())


def _fake_settings(tmp_path, **overrides):
    return queue_settings(tmp_path, {"tiny-sd15": tmp_path / "unused"}, **overrides)


def _fake_job_options() -> dict:
    return {**FAST, "repeats": 25, "resolution": 512}  # 4 images x 25 x 2 epochs = 200 steps, cost 20


def test_a_crashing_trainer_is_retried_then_failed_with_the_refund_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "crash")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())
        ended = await finished(s.conn, job.id)
        assert (ended.state, ended.attempts, job.cost) == ("failed", 2, 20)
        assert "stopped unexpectedly" in ended.error and "2 times" in ended.error
        assert ended.refunded == refund_for(20, 200, 3) == 19
        ledger = await stamina_repo.job_ledger(s.conn, job.id)
        assert [(r.reason, r.delta) for r in ledger] == [("charge", -20), ("refund", 19)]

    run(_fake_settings(tmp_path, max_attempts=2), body, FAKE)


def test_a_silent_trainer_is_killed_and_handled_like_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "hang")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())
        ended = await finished(s.conn, job.id)
        assert (ended.state, ended.attempts, ended.refunded) == ("failed", 2, 20)
        assert "sent nothing for 1.5 s" in ended.error

    run(_fake_settings(tmp_path, max_attempts=2, hang_timeout_s=1.5), body, FAKE)


def test_a_trainer_that_crashes_once_resumes_and_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "crash_first")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())
        ended = await finished(s.conn, job.id)
        assert (ended.state, ended.attempts, ended.refunded) == ("done", 2, 0)
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge"]

    run(_fake_settings(tmp_path), body, FAKE)


def test_queued_jobs_wait_while_paused_and_a_second_dispatcher_is_refused(tmp_path, monkeypatch):
    from bot.queue.recovery import DispatcherBusy
    from bot.services import make_dispatcher

    monkeypatch.setenv("FAKE_TRAINER_MODE", "crash_first")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        await s.queue.pause(actor_id=9)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())
        await _not_taken(dispatcher)
        assert (await repo.get_job(s.conn, job.id)).state == "queued"
        with pytest.raises(DispatcherBusy, match="already runs the queue"):
            await make_dispatcher(s).start()
        await s.queue.resume(actor_id=9)
        assert (await finished(s.conn, job.id)).state == "done"

    run(_fake_settings(tmp_path), body, FAKE)


@pytest.mark.parametrize("alongside", [True, False])
def test_generation_runs_alongside_training_only_where_the_operator_allows(tmp_path, monkeypatch, alongside):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "gated")  # the training job runs until the test lets it end

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())

        async def running() -> bool:
            return any(u.job.id == job.id and u.kind == "started" for u in updates)

        await wait_until(running, timeout=180, progress=job_progress(s.conn, job.id))
        request = GenerateRequest("tkchar", base_model="tiny-sd15", steps=2, size="64")
        generation = await s.generation.submit(1, request)
        if alongside:
            generated = await finished(s.conn, generation.id)
        else:  # the wake that would start it has reached the dispatcher's loops twice over
            looks = record_calls(dispatcher, "_publish_unannounced")
            await wait_until(lambda: len(looks) >= 2, 30, 0.05, "the dispatcher to look twice")
            assert (await repo.get_job(s.conn, generation.id)).state == "queued"
        assert (await repo.get_job(s.conn, job.id)).state == "running"
        os.kill((await repo.get_job(s.conn, job.id)).pid, signal.SIGUSR1)
        training = await finished(s.conn, job.id)
        generated = await finished(s.conn, generation.id)
        assert generated.state == training.state == "done"
        assert (generated.finished_at < training.finished_at) is alongside

    run(_fake_settings(tmp_path, generate_alongside_training=alongside), body, FAKE)


def test_an_over_long_output_line_is_skipped_and_the_job_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAINER_MODE", "longline")

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        first = await s.queue.submit_training(1, "chara", _fake_job_options())
        assert (await finished(s.conn, first.id)).state == "done"
        second = await s.queue.submit_training(1, "chara", _fake_job_options())
        assert (await finished(s.conn, second.id)).state == "done"  # the worker is still serving

    run(_fake_settings(tmp_path), body, FAKE)


def test_a_trainer_that_cannot_start_pauses_the_queue_and_loses_no_job(tmp_path):
    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())

        async def put_back_paused() -> bool:
            current = await repo.get_job(s.conn, job.id)
            return current.state == "queued" and bool(current.error) and await s.queue.paused()

        await wait_until(put_back_paused, timeout=30)
        await _not_taken(dispatcher)  # paused: it is not tried again
        waiting = await repo.get_job(s.conn, job.id)
        assert (waiting.state, waiting.attempts, waiting.refunded) == ("queued", 0, 0)
        assert "could not start" in waiting.error
        assert [r.reason for r in await stamina_repo.job_ledger(s.conn, job.id)] == ["charge"]

    run(_fake_settings(tmp_path), body, ["/nonexistent/python3", "-m", "trainer"])


def test_a_job_another_process_cancels_reaches_the_subscribers_once(tmp_path):
    settings = _fake_settings(tmp_path)

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4)
        await s.queue.pause(actor_id=9)
        job = await s.queue.submit_training(1, "chara", _fake_job_options())
        async with open_services(settings) as cli:  # the operator CLI: its own connection and bus
            await cli.queue.cancel(0, job.id, operator=True)

        async def heard() -> bool:
            return any(u.kind == "finished" and u.job.id == job.id for u in updates)

        await wait_until(heard, timeout=30)
        # the dispatcher's look-back window finds the job again at its next looks (the bus drops those
        # ends): wait until it looked twice more, then count what the subscribers got
        looks = record_calls(dispatcher, "_publish_unannounced")
        await wait_until(lambda: len(looks) >= 2, 30, 0.05, "the dispatcher to look for ended jobs twice")
        await s.bus.drain()
        finals = [u for u in updates if u.kind == "finished" and u.job.id == job.id]
        assert len(finals) == 1 and finals[0].event == {"state": "cancelled", "refunded": job.cost}

    run(settings, body, FAKE)
