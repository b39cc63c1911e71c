"""Render options a family renders without (Flux: a negative prompt, a sampler, clip skip; its
training previews' negative and sampler) are refused naming the family, by the contract, the bot
before anything is charged, and the trainer when a job arrives; defaults pass, SD is unaffected."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.queue.generation import GenerateRequest
from bot.queue.service import QueueError
from bot.services import open_services
from db import jobs as repo
from db.database import transaction
from tests.queue_helpers import FAST, make_dataset, queue_settings
from trainer.contract import GenerateJob, JobError, TrainJob, parse_job
from trainer.contract.families import refused_options, refused_render_options

GEN = {"base_model": "m", "output_dir": "o", "prompt": "p"}
TRAIN = {"dataset_dir": "d", "output_dir": "o", "base_model": "m"}
MODELS = {"tiny-sd15": Path("/nonexistent/sd15"), "tiny-flux": Path("/nonexistent/flux")}
NEGATIVE = "negative does not apply to Flux.1: leave it out"


def render_refusals(family: str, **options) -> list[str]:
    return refused_render_options(family, GenerateJob.model_validate({**GEN, **options}).changed_options())


# Contract --------------------------------------------------------------------------------------


def test_flux_refuses_the_render_options_it_ignores_and_sd_takes_them():
    assert render_refusals("flux", negative="blurry", sampler="ddim", clip_skip=2) == [
        "clip_skip does not apply to Flux.1: leave it out",
        NEGATIVE,
        "sampler does not apply to Flux.1: leave it out",
    ]
    for family in ("sd15", "sdxl"):
        assert render_refusals(family, negative="blurry", sampler="ddim", clip_skip=2) == []


def test_defaults_pass_on_flux():
    assert render_refusals("flux") == []
    assert render_refusals("flux", negative="", sampler="euler_a", clip_skip=None, steps=4, cfg=3.5) == []


def test_a_job_naming_flux_is_invalid_with_one_line_per_option():
    with pytest.raises(JobError) as info:
        parse_job({**GEN, "model_family": "flux", "negative": "blurry", "sampler": "ddim"}, GenerateJob)
    assert info.value.problems == [NEGATIVE, "sampler does not apply to Flux.1: leave it out"]
    assert parse_job({**GEN, "model_family": "flux"}, GenerateJob).negative == ""
    assert parse_job({**GEN, "model_family": "sdxl", "negative": "blurry"}, GenerateJob).negative == "blurry"
    assert parse_job({**GEN, "negative": "blurry"}, GenerateJob).model_family is None  # checked once loaded


def test_flux_training_refuses_changed_preview_negative_and_sampler_only():
    changed = TrainJob.model_validate(
        {**TRAIN, "preview_negative": "ugly", "preview_sampler": "ddim", "preview_steps": 4}
    ).changed_options()
    assert refused_options("flux", changed) == [
        "preview_negative does not apply to Flux.1: leave it out",
        "preview_sampler does not apply to Flux.1: leave it out",
    ]
    assert refused_options("sd15", changed) == [] and refused_options("sdxl", changed) == []
    assert refused_options("flux", TrainJob.model_validate(TRAIN).changed_options()) == []


# Trainer ---------------------------------------------------------------------------------------


def test_render_job_refuses_them_for_a_detected_family_before_touching_the_pipeline():
    from trainer.generate import render_job

    loaded = SimpleNamespace(family="flux", model=SimpleNamespace(family="flux"), pipe=None)
    job = GenerateJob.model_validate({**GEN, "negative": "blurry"})  # no model_family: detected
    with pytest.raises(JobError, match=NEGATIVE):
        render_job(loaded, job, events=None, stop=None)


def test_serve_answers_a_flux_job_with_a_negative_with_failed():
    from trainer.events import EventWriter
    from trainer.serve import Server

    stream = io.StringIO()
    server = Server(EventWriter(stream))
    job = {**GEN, "model_family": "flux", "negative": "blurry"}
    server.handle_line(json.dumps({"id": "r1", "job": job}))
    (event,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (event["event"], event["request"]) == ("failed", "r1")
    assert event["message"] == f"invalid job: {NEGATIVE}"
    assert server.queue.qsize() == 0


# Bot -------------------------------------------------------------------------------------------


def run(tmp_path, body):
    settings = queue_settings(tmp_path, MODELS)

    async def go():
        async with open_services(settings) as services:
            return await body(services)

    return asyncio.run(go())


def test_a_flux_generate_with_a_negative_is_refused_and_charges_nothing(tmp_path):
    async def body(s):
        before = (await s.stamina.balance(1)).balance
        for request, message in [
            (GenerateRequest("tk", base_model="tiny-flux", negative="blurry"), NEGATIVE),
            (GenerateRequest("tk", base_model="tiny-flux", sampler="ddim"), "sampler does not apply"),
        ]:
            with pytest.raises(QueueError, match=message):
                await s.generation.estimate(1, request)
            with pytest.raises(QueueError, match=message):
                await s.generation.submit(1, request)
        assert (await s.stamina.balance(1)).balance == before
        assert await repo.list_jobs(s.conn) == []
        # what the cog sends when the member gives no negative, and an SD model with one, pass
        job = await s.generation.submit(1, GenerateRequest("tk", base_model="tiny-flux", negative=""))
        assert job.family == "flux" and "sampler" not in job.spec["options"]
        sd = await s.generation.estimate(1, GenerateRequest("tk", base_model="tiny-sd15", negative="blurry"))
        assert sd.family == "sd15"

    run(tmp_path, body)


async def flux_trained_job(s) -> repo.JobRow:
    """A queued Flux training job of member 1 with epochs 1 and 2 recorded as saved."""
    await make_dataset(s, images=2, base="tiny-flux")
    job = await s.queue.submit_training(1, "chara", FAST)
    out = Path(job.folder) / "output"
    out.mkdir(parents=True, exist_ok=True)
    async with transaction(s.conn):
        for epoch in (1, 2):
            (out / f"e{epoch}.safetensors").write_bytes(b"not read by the service")
            await repo.save_epoch(s.conn, job.id, epoch, epoch * 2, str(out / f"e{epoch}.safetensors"))
    return job


def test_a_flux_compare_leaves_out_the_preview_negative_but_refuses_the_members(tmp_path):
    async def body(s):
        job = await flux_trained_job(s)
        with pytest.raises(QueueError, match="preview_negative does not apply to Flux.1"):
            await s.queue.submit_training(1, "chara", {**FAST, "preview_negative": "ugly"})
        before = (await s.stamina.balance(1)).balance
        with pytest.raises(QueueError, match=NEGATIVE):
            await s.generation.compare_epochs(1, job.id, [1, 2], [1.0], negative="blurry")
        assert (await s.stamina.balance(1)).balance == before
        grid = await s.generation.compare_epochs(1, job.id, [1, 2], [0.8, 1.0])
        options = grid.spec["options"]
        assert not {"negative", "sampler", "clip_skip"} & set(options)
        parse_job({**options, "output_dir": "o", "base_model": "m", "model_family": "flux"}, GenerateJob)

    run(tmp_path, body)


def test_through_discord_the_member_gets_the_message_and_keeps_the_stamina(tmp_path):
    from tests.bot_harness import bot_world

    settings = queue_settings(tmp_path, MODELS, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            options = {"prompt": "tk", "base_model": "tiny-flux", "negative": "blurry"}
            reply = await w.reply(await w.slash(w.alice, "generate", options))
            assert reply.ephemeral and reply.content == f"❌ {NEGATIVE}"
            assert (await w.services.stamina.balance(w.alice.user_id)).balance == 150
            assert await repo.list_jobs(w.services.conn) == []

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_the_cli_calls_a_refused_option_of_a_detected_family_an_invalid_job(tiny_flux, tmp_path):
    from tests.conftest import parse_events, run_trainer, write_job

    job = {"base_model": str(tiny_flux), "output_dir": str(tmp_path / "gen"), "prompt": "p",
           "negative": "blurry", "steps": 1, "width": 64, "height": 64}  # fmt: skip
    proc = run_trainer("generate", "--job", str(write_job(tmp_path / "gen.json", job)))
    assert proc.returncode == 2, proc.stderr[-2000:]  # EXIT_INVALID_JOB
    assert parse_events(proc.stdout)[-1]["message"] == f"invalid job: {NEGATIVE}"
    assert not (tmp_path / "gen").exists() or not any((tmp_path / "gen").iterdir())
