"""The guide's whole flow as a member does it in Discord, through the loopback stand-in with the
real discord.py client, the real queue and the real trainer on the tiny model."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from PIL import Image
from safetensors.torch import load

from bot.loopback import Upload
from bot.loopback.waiting import wait_for
from tests.bot_harness import World, bot_world, first_id
from tests.queue_helpers import queue_settings
from tests.test_dataset_service import picture

FAST = "mixed_precision=no, optimizer=AdamW, preview_steps=2, network_dim=4, network_alpha=2, repeats=1, resolution=64"


async def _upload_and_prune(w: World) -> None:
    inter = await w.slash(w.alice, "dataset new", {"name": "chara", "base_model": "tiny-sd15", "trigger": "tkchar",
                                                   "crop_mode": "center", "crop_size": "256x256"})  # fmt: skip
    assert "Created **chara**" in (await w.reply(inter)).content
    files = {
        f"file{i + 1}": Upload(f"p{i}.png", picture(i, ("red", "green", "blue")[i % 3])) for i in range(7)
    }
    inter = await w.slash(w.alice, "upload", {"dataset": "chara", **files})
    assert inter.response_type == 5  # deferred: tagging takes a while
    report = await _settled(w, inter)
    assert report.embeds[0]["title"] == "📥 chara: added 7 image(s)", report.embeds

    inter = await w.slash(w.alice, "tags view", {"dataset": "chara"})
    view = await w.reply(inter)
    assert "tags on 7 images" in view.embeds[0]["title"]
    table = view.embeds[0]["description"]
    assert "tkchar" in table

    inter = await w.slash(w.alice, "tags remove", {"dataset": "chara"})
    menu = await w.reply(inter)
    select = next(c for row in menu.components for c in row["components"] if c["type"] == 3)
    victim = select["options"][0]["label"]
    await w.click(menu, w.alice, select["custom_id"], values=[select["options"][0]["value"]])
    await w.click(menu, w.alice, first_id(menu, label="Remove 1"))
    await w.click(menu, w.alice, first_id(menu, label="Remove"))
    assert f"Removed `{victim}`" in menu.content
    table = await w.services.datasets.tag_table(w.alice.user_id, "chara")
    assert victim not in {t.tag for t in table}


async def _settled(w: World, inter, timeout: float = 60):
    """The deferred answer once it holds its final embed."""
    return await wait_for(
        lambda: inter.original if inter.original is not None and inter.original.embeds else None,
        timeout,
        f"the final answer to {inter.data.get('name')}",
    )


async def _train(w: World) -> tuple[int, int]:
    inter = await w.slash(w.alice, "preset save", {"name": "fast", "options": FAST})
    assert "Saved preset **fast**" in (await w.reply(inter)).content
    inter = await w.slash(w.alice, "train", {"dataset": "chara", "preset": "fast", "epochs": 2})
    estimate = await w.reply(inter)
    steps = next(f["value"] for f in estimate.embeds[0]["fields"] if f["name"] == "Steps")
    assert "7 images × 1 repeats ÷ batch 1 = 7 steps" in steps and "**14 steps**" in steps
    cost = int(re.search(r"\*\*(\d+)\*\* stamina", str(estimate.embeds[0]["fields"])).group(1))
    await w.click(estimate, w.alice, first_id(estimate, label="Start"))
    await w.server.wait_for_message(lambda m: m is estimate and "Queued" in m.content, 30)
    job_id = int(re.search(r"job #(\d+)", estimate.content).group(1))
    return job_id, cost


async def _watch(w: World, job_id: int) -> None:
    progress = await w.wait_message(lambda m: bool(m.embeds) and f"Job #{job_id}" in m.embeds[0]["title"], 60)
    assert f"lorabot:cancel:{job_id}" in first_id(progress, "lorabot:cancel")
    inter = await w.slash(w.alice, "queue")
    listing = await w.reply(inter)
    line = next(x for x in listing.embeds[0]["description"].split("**#") if x.startswith(f"{job_id}**"))
    assert re.search(r"\d+/14 steps", line), line  # its progress, whatever state it is in now
    for epoch in (1, 2):
        grid = await w.wait_message(
            lambda m, e=epoch: bool(m.files) and f"epoch {e}/2" in m.embeds[0]["title"], 180
        )
        image = Image.open(io.BytesIO(grid.files[0].data))
        assert image.format == "PNG" and image.width >= 64
        assert first_id(grid, f"lorabot:download:{job_id}:{epoch}")
    done = await w.wait_message(lambda m: f"job #{job_id}" in m.content and "is done" in m.content, 120)
    assert f"<@{w.alice.user_id}>" in done.content
    await w.server.wait_for_message(lambda m: m is progress and "✅" in m.embeds[0]["title"], 30)
    assert progress.edits >= 1


async def _epochs(w: World, job_id: int) -> None:
    inter = await w.slash(w.alice, "epochs", {"job": str(job_id)})
    pager = await w.reply(inter)
    assert "epoch 2 (2/2 saved)" in pager.embeds[0]["title"] and pager.files
    download = await w.click(pager, w.alice, first_id(pager, label="Download e2"))
    file_message = await w.reply(download)
    (lora,) = file_message.files
    assert lora.filename.endswith("-e02.safetensors")
    tensors = load(lora.data)
    assert any(k.startswith("lora_unet_") for k in tensors)
    save = await w.click(pager, w.alice, first_id(pager, label="Save e2"))
    assert save.response_type == 9  # the name form
    submit = await w.server.send_modal_submit(save, w.alice, {})
    await submit.wait_response(timeout=30)
    saved = await w.reply(submit)
    assert "Saved epoch 2" in saved.content, saved.content


async def _generate(w: World) -> int:
    (lora,) = await w.services.library.list(w.alice.user_id)
    inter = await w.slash(w.alice, "generate", {"prompt": "tkchar, smile", "lora": lora.name, "weight": 0.8,
                                                "steps": 2, "size": "64"})  # fmt: skip
    first = await w.reply(inter)
    gen_id = int(re.search(r"#(\d+)", first.content).group(1))
    posted = await w.wait_message(lambda m: f"#{gen_id} ·" in m.content, 120)
    assert [f.filename for f in posted.files] == ["image-00.png"]
    inter = await w.slash(w.alice, "generate", {"prompt": "tkchar", "lora": lora.name, "steps": 2, "size": "64",
                                                "compare_weights": "0.7,0.8,1.0"})  # fmt: skip
    cmp_id = int(re.search(r"#(\d+)", (await w.reply(inter)).content).group(1))
    posted = await w.wait_message(lambda m: f"#{cmp_id} ·" in m.content, 120)
    names = [f.filename for f in posted.files]
    assert names[0] == "image-grid.png" and len(names) == 4, names
    grid = Image.open(io.BytesIO(posted.files[0].data))
    assert grid.width > 3 * 64
    jobs = [await w.services.queue.job(w.alice.user_id, j) for j in (gen_id, cmp_id)]
    return sum(j.cost for j in jobs)


@pytest.mark.timeout(600)  # the whole guide with real training: its own limit, as its scenario has
def test_the_guide_flow_in_discord(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0, progress_interval_s=1)

    async def scenario() -> None:
        async with bot_world(settings, queue=True) as w:
            start = (await w.services.stamina.balance(w.alice.user_id)).balance
            await _upload_and_prune(w)
            job_id, cost = await _train(w)
            await _watch(w, job_id)
            await _epochs(w, job_id)
            spent_generating = await _generate(w)
            after = (await w.services.stamina.balance(w.alice.user_id)).balance
            assert start - after == cost + spent_generating

    asyncio.run(asyncio.wait_for(scenario(), 600))
