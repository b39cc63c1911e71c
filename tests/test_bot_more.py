"""The rest of the commands: the library, tag paging and image deletion, option help, train
further, compare epochs, and a channel the bot cannot post in."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from db import jobs as repo
from tests.bot_harness import bot_world, first_id, job_with_epoch
from tests.queue_helpers import make_dataset, queue_settings


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 120))


def test_library_list_download_delete(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            await w.services.library.save(w.alice.user_id, job.id, 1, "my lora")
            listing = await w.reply(await w.slash(w.alice, "lora list"))
            assert "my lora" in listing.embeds[0]["description"]
            got = await w.reply(await w.slash(w.alice, "lora download", {"name": "my lora"}))
            assert [f.filename for f in got.files] == ["my_lora.safetensors"]
            ask = await w.reply(await w.slash(w.alice, "lora delete", {"name": "my lora"}))
            await w.click(ask, w.alice, first_id(ask, label="Delete"))
            assert "Deleted **my lora**" in ask.content
            assert await w.services.library.list(w.alice.user_id) == []

    run(scenario())


def test_tag_pages_show_thumbnails_and_delete_an_image(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            browser = await w.reply(await w.slash(w.alice, "tags view", {"dataset": "chara"}))
            await w.click(browser, w.alice, _arrow(browser, "▶️"))
            assert "image 1/3" in browser.embeds[0]["title"]
            assert browser.embeds[0]["thumbnail"]["url"] == "attachment://thumb.jpg"
            thumb = Image.open(io.BytesIO(browser.file("thumb.jpg").data))
            assert max(thumb.size) <= 256
            jump = next(c for row in browser.components for c in row["components"] if c["type"] == 3)
            await w.click(browser, w.alice, jump["custom_id"], values=["3"])
            assert "image 3/3" in browser.embeds[0]["title"]
            ask = await w.reply(await w.click(browser, w.alice, first_id(browser, label="Delete image")))
            await w.click(ask, w.alice, first_id(ask, label="Delete"))
            assert "2 left" in ask.content
            assert len(await w.services.datasets.images(w.alice.user_id, "chara")) == 2
            reply = await w.reply(
                await w.slash(w.alice, "tags remove", {"dataset": "chara", "tags": "no_such_tag"})
            )
            assert reply.content.startswith("❌ no such tag in chara: no_such_tag")

    run(scenario())


def _arrow(message, emoji: str) -> str:
    for row in message.components:
        for c in row["components"]:
            if (c.get("emoji") or {}).get("name") == emoji:
                return c["custom_id"]
    raise LookupError(emoji)


def test_option_help_and_presets(settings):
    async def scenario():
        async with bot_world(settings) as w:
            help_all = await w.reply(await w.slash(w.alice, "preset options"))
            assert "network_dim" in str(help_all.embeds[0]["fields"])
            one = await w.reply(await w.slash(w.alice, "preset options", {"option": "optimizer"}))
            assert "Prodigy" in one.embeds[0]["description"]
            bad = await w.reply(
                await w.slash(w.alice, "preset save", {"name": "p", "options": "optimiser=Lion"})
            )
            assert "did you mean 'optimizer'" in bad.content
            assert await w.services.presets.list(w.alice.user_id) == []

    run(scenario())


def test_train_further_and_compare_epochs(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            pager = await w.reply(await w.slash(w.alice, "epochs", {"job": str(job.id)}))
            form = await w.click(pager, w.alice, first_id(pager, label="Train further from e1"))
            assert form.response_type == 9
            submit = await w.server.send_modal_submit(form, w.alice, {_input(form, "More epochs"): "3"})
            await submit.wait_response(timeout=10)
            estimate = await w.reply(submit)
            fields = {f["name"]: f["value"] for f in estimate.embeds[0]["fields"]}
            assert f"job #{job.id}, epoch 1" in fields["Starts from"] and "× 3 epochs" in fields["Steps"]
            form = await w.click(pager, w.alice, first_id(pager, label="Compare"))
            values = {_input(form, "Epochs"): "1", _input(form, "Weights"): "0.5, 1"}
            submit = await w.server.send_modal_submit(form, w.alice, values)
            await submit.wait_response(timeout=10)
            queued = await w.reply(submit)
            assert "1 epochs × 2 weights" in queued.content
            compare = (await repo.list_jobs(w.services.conn, kind="generate"))[0]
            assert compare.total_steps == 2 and compare.channel_id == w.channel.id

    run(scenario())


def _input(form, label: str) -> str:
    """The custom id of the text input labelled ``label`` in the modal the bot opened."""
    for row in form.modal["components"]:
        for c in row.get("components") or [row.get("component")]:
            if c and label in (c.get("label") or ""):
                return c["custom_id"]
    raise LookupError(label)


def test_a_channel_the_bot_cannot_post_in_is_refused(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            bot_role = next(r for r in w.guild.roles.values() if r.name == w.server.bot_name)
            bot_role.permissions &= ~0x8000  # no Attach Files
            reply = await w.reply(await w.slash(w.alice, "train", {"dataset": "chara"}))
            assert "missing permission: Attach Files" in reply.content
            assert await repo.list_jobs(w.services.conn) == []

    run(scenario())
