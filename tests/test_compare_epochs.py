"""Compare epochs x weights in one grid: the contract, the service's checks, and a real render."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.queue.record import generation_job
from bot.queue.service import QueueError
from bot.services import open_services
from db import jobs as repo
from db.database import transaction
from tests.queue_helpers import FAST, make_dataset, queue_settings
from trainer.contract import GenerateJob, JobError, parse_job

GEN = {"base_model": "m", "output_dir": "o", "prompt": "p"}
ROWS = [{"path": "a.safetensors", "label": "epoch 1"}, {"path": "b.safetensors", "label": "epoch 2"}]
MODELS = {"tiny-sd15": Path("/nonexistent/sd15")}


def problems(**options) -> list[str]:
    with pytest.raises(JobError) as info:
        parse_job({**GEN, **options}, GenerateJob)
    return info.value.problems


# Contract --------------------------------------------------------------------------------------


def test_compare_loras_rows_need_weights_one_seed_and_distinct_labels():
    job = parse_job({**GEN, "compare_loras": ROWS, "compare_weights": [0.6, 1.0]}, GenerateJob)
    assert [r.label for r in job.compare_loras] == ["epoch 1", "epoch 2"] and job.loras == []
    assert parse_job(dict(GEN), GenerateJob).compare_loras is None  # plain jobs are unchanged
    assert problems(compare_loras=ROWS) == [
        "compare_loras needs compare_weights (the grid's columns, e.g. [0.6, 0.8, 1.0])"
    ]
    assert problems(compare_loras=ROWS, compare_weights=[1.0], count=2) == [
        "compare_loras renders one grid with one seed: leave count at 1"
    ]
    same = [ROWS[0], {**ROWS[1], "label": "epoch 1"}]
    assert problems(compare_loras=same, compare_weights=[1.0]) == [
        "compare_loras labels must differ (they name the grid's rows)"
    ]
    assert problems(compare_weights=[1.0]) == ["compare_weights needs a LoRA in loras or compare_loras"]
    many = [{"path": "x", "label": f"epoch {i}"} for i in range(9)]
    assert any("at most 8" in p for p in problems(compare_loras=many, compare_weights=[1.0]))
    assert any(
        "compare_loras.0.label" in p for p in problems(compare_loras=[{"path": "x"}], compare_weights=[1])
    )


# Service ---------------------------------------------------------------------------------------


def run(tmp_path, body, models=None):
    settings = queue_settings(tmp_path, models or MODELS)

    async def go():
        async with open_services(settings) as services:
            return await body(services)

    return asyncio.run(go())


async def trained_job(s, tmp_path: Path, epochs=(1, 2), files=None, **options):
    """A queued training job of member 1 with ``epochs`` recorded as saved (files made up or given,
    in the job's output folder: the only place the bot takes an epoch file from)."""
    await make_dataset(s, images=2)
    job = await s.queue.submit_training(1, "chara", {**FAST, **options})
    out = Path(job.folder) / "output"
    out.mkdir(parents=True, exist_ok=True)
    async with transaction(s.conn):
        for i, epoch in enumerate(epochs):
            path = out / f"e{epoch}.safetensors"
            if files:
                shutil.copyfile(files[i], path)
            else:
                path.write_bytes(b"not read by the service")
            await repo.save_epoch(s.conn, job.id, epoch, epoch * 2, str(path))
    return job


def test_compare_epochs_queues_one_grid_with_the_jobs_preview_settings(tmp_path):
    async def body(s):
        job = await trained_job(s, tmp_path, preview_negative="ugly")
        est = await s.generation.estimate_compare(1, job.id, [2, 1], [0.6, 0.8, 1.0])
        assert (est.images, est.width, est.height, est.family) == (6, 64, 64, "sd15")
        with pytest.raises(QueueError, match="cost changed"):
            await s.generation.compare_epochs(1, job.id, [1, 2], [0.6, 0.8, 1.0], expected_cost=est.cost + 1)
        gen = await s.generation.compare_epochs(
            1, job.id, [2, 1], [0.6, 0.8, 1.0], channel_id=7, expected_cost=est.cost
        )
        assert (
            gen.kind == "generate" and gen.total_steps == 6 and gen.cost == est.cost and gen.channel_id == 7
        )
        assert gen.title == f"compare #{job.id} epochs 1,2 x 0.6/0.8/1"
        opts = gen.spec["options"]
        assert [r["label"] for r in opts["compare_loras"]] == ["epoch 1", "epoch 2"]
        assert opts["compare_weights"] == [0.6, 0.8, 1.0] and opts["loras"] == [] and opts["count"] == 1
        assert (opts["prompt"], opts["negative"], opts["steps"]) == (
            "tkchar",
            "ugly",
            2,
        )  # trigger; FAST's steps
        assert opts["seed"] == job.spec["options"]["seed"]  # the previews' seed
        await s.queue.cancel(1, gen.id)  # room under the member's job limit
        mine = await s.generation.compare_epochs(
            1, job.id, [1], [1.0], prompt="tkchar, smile", seed=3, steps=4
        )
        assert (mine.spec["options"]["prompt"], mine.spec["options"]["seed"]) == ("tkchar, smile", 3)
        assert mine.spec["options"]["steps"] == 4

    run(tmp_path, body)


def test_compare_epochs_refuses_others_jobs_unsaved_epochs_and_bad_axes(tmp_path):
    async def body(s):
        job = await trained_job(s, tmp_path, preview_prompt="tkchar, red")
        assert (await s.generation.estimate_compare(1, job.id, [1], [1.0])).images == 1
        cases = [
            (dict(owner_id=2), f"you have no job #{job.id}"),
            (dict(epochs=[1, 3]), "has no saved epoch 3"),
            (dict(weights=[0.1 * i for i in range(9)]), "pick 1 to 8 weights"),
            (dict(weights=[]), "pick 1 to 8 weights"),
            (dict(weights=[0.5, 2.5]), "from -2 to 2 .got 2.5"),
            (dict(epochs=[]), "pick 1 to 8 saved epochs"),
            (dict(epochs=list(range(1, 10))), "pick 1 to 8 saved epochs"),
            (dict(steps=0), "steps"),
        ]
        for change, message in cases:
            args = {"owner_id": 1, "job_id": job.id, "epochs": [1, 2], "weights": [0.8, 1.0], **change}
            with pytest.raises(QueueError, match=message):
                await s.generation.compare_epochs(**args)
        balance = (await s.stamina.balance(1)).balance
        gen = await s.generation.compare_epochs(1, job.id, [1, 2], [1.0])
        assert gen.spec["options"]["prompt"] == "tkchar, red"
        assert (await s.stamina.balance(1)).balance == balance - gen.cost
        with pytest.raises(QueueError, match="not a training job"):
            await s.generation.compare_epochs(1, gen.id, [1], [1.0])

    run(tmp_path, body)


# Rendering -------------------------------------------------------------------------------------


def fake_lora(model: Path, path: Path, seed: int, text_encoder: bool) -> str:
    """A kohya LoRA file for the tiny model with random weights: no training needed."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from trainer.kohya import export_state_dict
    from trainer.lora import add_lora, lora_parameters, text_encoder_target_modules, unet_target_modules

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    add_lora(unet, unet_target_modules(unet), 4, 4.0)
    tes = [CLIPTextModel.from_pretrained(model / "text_encoder")] if text_encoder else []
    for te in tes:
        add_lora(te, text_encoder_target_modules(te), 4, 4.0)
    for part in [unet, *tes]:
        for param in lora_parameters(part):
            torch.nn.init.normal_(param, std=0.2)
    save_file(export_state_dict(unet, tes, "sd15", torch.float32), str(path))
    return str(path)


def render(loaded, job: dict) -> list[dict]:
    from trainer.events import EventWriter, StopFlag
    from trainer.generate import has_lora_layers, render_job

    stream = io.StringIO()
    assert render_job(loaded, parse_job(job, GenerateJob), EventWriter(stream), StopFlag()) == 0
    assert not has_lora_layers(loaded.pipe)  # every adapter was removed again
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.slow
def test_a_compare_job_from_the_service_renders_epochs_x_weights(tiny_sd15, tmp_path):
    from trainer.generate import load_for_job

    files = [
        fake_lora(tiny_sd15, tmp_path / "e1.safetensors", 1, text_encoder=False),
        fake_lora(tiny_sd15, tmp_path / "e2.safetensors", 2, text_encoder=True),
    ]
    weights = [0.5, 1.0, 1.5]

    async def body(s):
        job = await trained_job(s, tmp_path, files=[Path(f) for f in files])
        gen = await s.generation.compare_epochs(1, job.id, [1, 2], weights, steps=2)
        return generation_job(s.queue.registry, gen, "cpu")

    request = run(tmp_path, body, {"tiny-sd15": tiny_sd15})
    loaded = load_for_job(parse_job(request, GenerateJob))
    events = render(loaded, request)
    kinds = [e["event"] for e in events]
    assert kinds == ["started", *["image_ready"] * 7, "done"]
    assert events[0]["total_steps"] == events[0]["images"] == 6
    images = [e for e in events if e["event"] == "image_ready" and not e.get("grid")]
    assert [(e["label"], e["weights"][0]) for e in images] == [
        (f"epoch {r}", w) for r in (1, 2) for w in weights
    ]
    assert len({e["seed"] for e in images}) == 1
    grid_event = events[-2]
    assert grid_event["grid"] and grid_event["path"].endswith("image-grid.png")
    assert events[-1]["files"] == [e["path"] for e in images] + [grid_event["path"]]
    px = [np.asarray(Image.open(e["path"])) for e in images]
    assert px[0].shape == (64, 64, 3)
    for col in range(3):
        assert not np.array_equal(px[col], px[3 + col])  # the epochs differ at every weight

    # the grid: a row-label column left and title + column labels above 2 x 3 enlarged cells
    grid = Image.open(grid_event["path"])
    cell = 192  # make_grid enlarges 64 px renders x3 (render.MIN_CELL)
    left, top = grid.width - 3 * cell, grid.height - 2 * cell
    assert 0 < left < cell and 0 < top < cell
    for i, image in enumerate(px):
        r, c = divmod(i, 3)
        box = (left + c * cell, top + r * cell, left + (c + 1) * cell, top + (r + 1) * cell)
        enlarged = np.asarray(Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST))
        assert np.array_equal(np.asarray(grid.crop(box)), enlarged)

    # each row is what a plain compare_weights job with that epoch renders: the other rows' adapters do nothing
    for r, path in enumerate(files):
        plain = {k: v for k, v in request.items() if k != "compare_loras"}
        plain.update(loras=[{"path": path}], output_dir=str(tmp_path / f"plain{r}"))
        singles = [
            e["path"] for e in render(loaded, plain) if e["event"] == "image_ready" and not e.get("grid")
        ]
        for c, single in enumerate(singles):
            assert np.array_equal(np.asarray(Image.open(single)), px[3 * r + c])
