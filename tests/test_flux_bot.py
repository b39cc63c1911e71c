"""A Flux base model through the bot's queue: the estimate is the charge, the real trainer runs it to
the end with previews, and a /generate with the member's LoRA renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from bot.queue.generation import GenerateRequest
from db import jobs as repo
from db import stamina as stamina_repo
from tests.queue_helpers import FAST, make_dataset, queue_settings
from tests.test_dispatcher import finished, run


@pytest.mark.slow
def test_a_flux_job_costs_its_estimate_trains_and_generates(tiny_flux, tmp_path):
    settings = queue_settings(tmp_path, {"tiny-flux": tiny_flux})

    async def body(s, dispatcher, updates):
        await make_dataset(s, images=4, base="tiny-flux")
        with pytest.raises(Exception, match="clip_skip does not apply to Flux.1"):
            await s.queue.estimate_training(1, "chara", {**FAST, "clip_skip": 2})
        est = await s.queue.estimate_training(1, "chara", FAST)
        job = await s.queue.submit_training(1, "chara", FAST, expected_cost=est.cost)
        assert est.family == "flux" and job.cost == est.cost
        ended = await finished(s.conn, job.id)
        assert ended.state == "done", ended.error
        epochs = await repo.epochs(s.conn, job.id)
        assert [e.epoch for e in epochs] == [1, 2] and all(Path(e.preview_path).is_file() for e in epochs)
        assert [r.delta for r in await stamina_repo.job_ledger(s.conn, job.id)] == [-est.cost]

        await s.library.save(1, job.id, 2, "chara flux")
        request = GenerateRequest("tkchar", lora="chara flux", steps=2, size="64", compare_weights=[0.5, 1.0])
        grid = await finished(s.conn, (await s.generation.submit(1, request)).id)
        assert grid.state == "done", grid.error
        assert [g for _, _, g in await repo.files(s.conn, grid.id)] == [False, False, True]

    run(settings, body)


@pytest.mark.slow
def test_the_demo_runs_the_guide_flow_on_flux_through_discord(tmp_path, capsys):
    """``python -m bot demo --family flux``: the real discord.py client against the loopback Discord,
    from /dataset new on tiny Flux to a /generate grid with the downloaded LoRA."""
    import asyncio

    from bot.demo import run_demo

    assert asyncio.run(run_demo(str(tmp_path / "demo"), "flux")) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tiny Flux.1 model" in out and "[11] /generate compare_weights" in out
    with safe_open(str(next((tmp_path / "demo" / "downloads").glob("*.safetensors"))), "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "flux1"
