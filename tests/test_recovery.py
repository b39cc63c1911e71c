"""Crash recovery across processes: the process hosting the dispatcher is SIGKILLed mid-job.

The host is ``python -m bot worker`` (the queue without Discord) on a shared data folder; the
test submits through the services in its own process, as the bot and the operator CLI do.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.loopback.waiting import wait_for_sync
from bot.queue.costs import refund_for
from bot.services import open_services
from tests.queue_helpers import FAST, make_dataset, queue_settings

ROOT = Path(__file__).resolve().parents[1]


def _env(settings, **extra) -> dict[str, str]:
    env = dict(os.environ, LORABOT_DATA_DIR=str(settings.data_dir), HF_HUB_OFFLINE="1")
    env["LORABOT_MODEL_REGISTRY"] = str(settings.model_registry)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_host(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def query(settings, sql: str, *args):
    with sqlite3.connect(settings.database_path(), timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def wait_for(settings, sql: str, job_id: int, timeout: float = 180):
    """The rows of ``sql`` (on ``job_id``) once there are some. It may take as long as the job keeps
    making progress: WaitTimeout after ``timeout`` seconds without a change of its row."""

    def progress():
        return query(settings, "SELECT state, attempts, step, last_event_at FROM jobs WHERE id = ?", job_id)

    return wait_for_sync(
        lambda: query(settings, sql, job_id), timeout, f"rows of {sql} ({job_id})", 0.2, progress
    )


def submit(settings, options: dict) -> int:
    async def go():
        async with open_services(settings) as s:
            await make_dataset(s, images=4)
            return (await s.queue.submit_training(1, "chara", options)).id

    return asyncio.run(go())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_host(host: subprocess.Popen, trainer_pid: int) -> None:
    host.send_signal(signal.SIGKILL)
    host.wait(10)
    wait_for_sync(lambda: not alive(trainer_pid), 30, "the trainer to die with its killed host", 0.1)


def ledger(settings, job_id: int) -> list[tuple[str, int]]:
    return [
        tuple(r)
        for r in query(
            settings, "SELECT reason, delta FROM stamina_ledger WHERE job_id = ? ORDER BY id", job_id
        )
    ]


@pytest.mark.slow
def test_killed_host_the_job_resumes_in_the_next_one_and_is_charged_once(tiny_sd15, tmp_path):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})
    job_id = submit(settings, {**FAST, "repeats": 2, "epochs": 3, "previews": False})
    # the first run stops at its first saved epoch (tests/gated_trainer.py): the kill lands there
    gated = f"{sys.executable} {ROOT / 'tests' / 'gated_trainer.py'}"
    env = _env(settings, LORABOT_TRAINER_COMMAND=gated, GATED_TRAINER_AT="epoch_saved",
               GATED_TRAINER_ONCE=tmp_path / "gated-once")  # fmt: skip
    log = tmp_path / "hosts.log"
    host = start_host(env, log)
    try:
        wait_for(settings, "SELECT 1 FROM job_epochs WHERE job_id = ? AND epoch = 1", job_id)
        (pid,) = query(settings, "SELECT pid FROM jobs WHERE id = ?", job_id)[0]
        kill_host(host, pid)
        assert query(settings, "SELECT state FROM jobs WHERE id = ?", job_id)[0][0] == "running"
        host = start_host(env, log)
        wait_for(
            settings, "SELECT 1 FROM jobs WHERE id = ? AND state IN ('done', 'failed', 'cancelled')", job_id
        )
    finally:
        host.send_signal(signal.SIGTERM)
        assert host.wait(30) == 0, log.read_text()[-2000:]
    state, attempts, refunded = query(
        settings, "SELECT state, attempts, refunded FROM jobs WHERE id = ?", job_id
    )[0]
    assert (state, attempts, refunded) == ("done", 2, 0), log.read_text()[-2000:]
    starts = query(settings, "SELECT json_extract(payload, '$.resumed_from_step') FROM job_events"
                   " WHERE job_id = ? AND kind = 'started' ORDER BY id", job_id)  # fmt: skip
    assert [s for (s,) in starts] == [0, 8]
    assert [r for r, _ in ledger(settings, job_id)] == ["charge"]
    assert [e for (e,) in query(settings, "SELECT epoch FROM job_epochs WHERE job_id = ?", job_id)] == [
        1,
        2,
        3,
    ]


def test_killed_host_with_no_attempts_left_the_job_fails_with_its_refund_once(tmp_path):
    """A fake trainer that never finishes; after the host is killed the next host may not restart it."""
    settings = queue_settings(tmp_path, {"tiny-sd15": tmp_path / "unused"})
    job_id = submit(settings, {**FAST, "repeats": 25, "resolution": 512})  # 200 steps, cost 20
    fake = f"{sys.executable} {ROOT / 'tests' / 'fake_trainer.py'}"
    env = _env(settings, LORABOT_MAX_ATTEMPTS=1, FAKE_TRAINER_MODE="hang", LORABOT_TRAINER_COMMAND=fake)
    log = tmp_path / "hosts.log"
    host = start_host(env, log)
    try:
        wait_for(
            settings, "SELECT 1 FROM job_events WHERE job_id = ? AND kind = 'started'", job_id, timeout=60
        )
        (pid,) = query(settings, "SELECT pid FROM jobs WHERE id = ?", job_id)[0]
        kill_host(host, pid)
        host = start_host(env, log)
        wait_for(settings, "SELECT 1 FROM jobs WHERE id = ? AND state = 'failed'", job_id, timeout=60)
    finally:
        host.send_signal(signal.SIGTERM)
        assert host.wait(30) == 0, log.read_text()[-2000:]
    error, refunded = query(settings, "SELECT error, refunded FROM jobs WHERE id = ?", job_id)[0]
    assert "the bot stopped while it ran" in error
    assert refunded == refund_for(20, 200, 0) == 20
    assert ledger(settings, job_id) == [("charge", -20), ("refund", 20)]
