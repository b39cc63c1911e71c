"""One ETA everywhere (issue 16): the estimate before confirming, /queue, the progress message and
the operator CLI all come from :func:`bot.queue.eta.seconds_left`; before any speed is measured it
is the family's start-up plus its steps at the family table's speed, scaled by pixels and batch."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from bot.queue.dispatcher import Dispatcher
from bot.queue.eta import Shape, estimate_rate, format_duration, seconds_left, startup_seconds
from bot.queue.status import queue_status
from bot.services import open_services
from db import jobs as repo
from trainer.contract.families import FAMILIES

from .queue_helpers import make_dataset, queue_settings
from .test_cli_admin import cli

#: 7 images x 2 repeats x 1 epoch at 512 px, batch 1: the 14-step job of the issue.
FOURTEEN = {"repeats": 2, "epochs": 1, "resolution": 512}


def train(family: str = "sd15", resolution: int = 512, batch: int = 1, steps: int = 14) -> Shape:
    return Shape("train", family, resolution, batch, steps)


def test_a_first_estimate_is_start_up_plus_steps_at_the_family_speed():
    sd15 = FAMILIES["sd15"]
    rate = estimate_rate("sd15", 512, 1, [], sd15.steps_per_s)
    assert seconds_left(train(), rate) == pytest.approx(sd15.startup_s + 14 / sd15.steps_per_s)
    assert format_duration(seconds_left(train(), rate)) == "37s"  # never "0s"
    # 4x the pixels or 2x the batch: each step takes that much longer
    assert estimate_rate("sd15", 1024, 1, [], 2.0) == pytest.approx(0.5)
    assert estimate_rate("sd15", 512, 2, [], 2.0) == pytest.approx(1.0)
    big = seconds_left(train(resolution=1024, batch=2), estimate_rate("sd15", 1024, 2, [], 2.0))
    assert big == pytest.approx(sd15.startup_s + 14 * 8 / 2.0)


def test_every_family_has_a_start_up_so_a_tiny_job_never_says_zero():
    for key, info in FAMILIES.items():
        assert info.startup_s >= 10 and startup_seconds(key) == info.startup_s
        fast = seconds_left(train(key, resolution=64, steps=1), rate=1000.0)
        assert format_duration(fast) != "0s", key
    assert FAMILIES["flux"].startup_s > FAMILIES["sdxl"].startup_s > FAMILIES["sd15"].startup_s
    assert startup_seconds("sd9") > 0  # a family this bot lacks still gets one


def test_a_running_job_counts_its_start_and_then_its_own_speed():
    startup = startup_seconds("sd15")
    assert seconds_left(train(), 2.0, running_for=10) == pytest.approx(startup - 10 + 7)
    assert seconds_left(train(), 2.0, running_for=10_000) == pytest.approx(7)  # loading is over
    assert seconds_left(train(), 2.0, done=4, running_for=60, measured=5.0) == pytest.approx(2.0)
    assert seconds_left(train(), 2.0, done=20) == pytest.approx(startup)  # never below zero steps
    images = Shape("generate", "sd15", 512, 1, 2, sampling_steps=30)
    assert seconds_left(images, 2.0) == pytest.approx(2 * 30 / (3 * 2.0))  # the model stays loaded


def test_measured_speeds_win_and_are_scaled_to_the_shape():
    measured = [(512, 1, 4.0)]
    assert estimate_rate("sd15", 512, 1, measured, 2.0) == 4.0
    assert estimate_rate("sd15", 1024, 1, measured, 2.0) == pytest.approx(1.0)


def test_the_estimate_the_queue_and_the_cli_say_the_same(tmp_path, capsys, monkeypatch):
    settings = queue_settings(tmp_path)
    monkeypatch.setenv("LORABOT_DATA_DIR", str(settings.data_dir))
    expected = startup_seconds("sd15") + 14 / FAMILIES["sd15"].steps_per_s

    async def go():
        async with open_services(settings) as s:
            await make_dataset(s, images=7, size=512)
            est = await s.queue.estimate_training(1, "chara", dict(FOURTEEN))
            job = await s.queue.submit_training(1, "chara", dict(FOURTEEN))
            (status,) = await queue_status(s.queue)
            return est, job, status

    est, job, status = asyncio.run(go())
    assert est.total_steps == 14 and est.eta_s == pytest.approx(expected)
    assert status.job.id == job.id and status.ends_in_s - status.starts_in_s == pytest.approx(est.eta_s)
    code, out, err = cli(capsys, "estimate", "--dataset", "chara", "--user", "1", "--repeats", "2",
                         "--epochs", "1", "--resolution", "512")  # fmt: skip
    assert code == 0 and f"about {format_duration(expected)} once started" in out, err
    code, out, err = cli(capsys, "queue")
    row = next(line.split() for line in out.splitlines() if line.split()[0] == str(job.id))
    assert code == 0 and format_duration(expected) in row, out
    code, out, _ = cli(capsys, "job", "show", str(job.id))
    assert f"ETA {format_duration(expected)}" in out


def test_a_running_job_and_tiny_model_speeds(tmp_path):
    settings = queue_settings(tmp_path)

    async def go():
        async with open_services(settings) as s:
            await make_dataset(s, images=7, size=512)
            await s.queue.submit_training(1, "chara", dict(FOURTEEN))
            job = await repo.claim_next(s.conn, "train", "cpu", now=time.time() - 10)
            left = (await queue_status(s.queue))[0].ends_in_s
            assert left == pytest.approx(startup_seconds("sd15") - 10 + 7, abs=2)
            await repo.update_progress(s.conn, job.id, step=7, steps_per_s=7.0)
            assert (await queue_status(s.queue))[0].ends_in_s == pytest.approx(1.0)

            dispatcher = Dispatcher(s.conn, settings, s.queue.registry, None, [])
            await dispatcher.ends.record_rate(dataclasses.replace(job, steps_per_s=500.0))  # tiny-sd15
            assert await repo.step_rates(s.conn, "sd15") == []  # would make real SD1.5 ETAs say "0s"
            await dispatcher.ends.record_rate(dataclasses.replace(job, base_model="real-sd15", steps_per_s=4.0))
            est = await s.queue.estimate_training(1, "chara", dict(FOURTEEN))
            assert est.eta_s == pytest.approx(startup_seconds("sd15") + 14 / 4.0)

    asyncio.run(go())
