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
            await w.server.wait_for_message(
                lambda m: m is browser and "image 1/3" in m.embeds[0]["title"], 10
            )
            assert browser.embeds[0]["thumbnail"]["url"] == "attachment://thumb.jpg"
            thumb = Image.open(io.BytesIO(browser.file("thumb.jpg").data))
            assert max(thumb.size) <= 256
            jump = next(c for row in browser.components for c in row["components"] if c["type"] == 3)
            await w.click(browser, w.alice, jump["custom_id"], values=["3"])
            await w.server.wait_for_message(
                lambda m: m is browser and "image 3/3" in m.embeds[0]["title"], 10
            )
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


def test_a_tag_longer_than_a_menu_value_can_be_removed(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=2)
            long_tag = "a very long natural language caption " * 4
            await w.services.datasets.add_tags(w.alice.user_id, "chara", [long_tag.strip()])
            menu = await w.reply(await w.slash(w.alice, "tags remove", {"dataset": "chara"}))
            select = next(c for row in menu.components for c in row["components"] if c["type"] == 3)
            option = next(o for o in select["options"] if o["label"].startswith("a very long"))
            assert len(option["label"]) == 100
            await w.click(menu, w.alice, select["custom_id"], values=[option["value"]])
            await w.click(menu, w.alice, first_id(menu, label="Remove 1"))
            await w.click(menu, w.alice, first_id(menu, label="Remove"))
            assert "Removed" in menu.content
            tags = {t.tag for t in await w.services.datasets.tag_table(w.alice.user_id, "chara")}
            assert long_tag.strip() not in tags

    run(scenario())


def test_a_failed_jobs_public_embed_keeps_the_error_private():
    import dataclasses

    from bot.ui.embeds import job_embed

    fields = {f.name for f in repo.JobRow.__dataclass_fields__.values()}
    values = {name: None for name in fields} | {
        "id": 3, "owner_id": 1, "kind": "train", "state": "failed", "priority": 0, "title": "chara",
        "base_model": "m", "family": "sd15", "resolution": 512, "batch_size": 1, "total_steps": 10, "cost": 1,
        "spec": {"epochs": 2}, "folder": "/srv/x", "step": 3, "epoch": 1, "attempts": 1, "refunded": 0,
        "refund_expired": 0, "created_at": 0.0, "error": "[Errno 2] /srv/lorabot/data/jobs/abc missing",
    }  # fmt: skip
    embed = job_embed(repo.JobRow(**values), None)
    assert "/srv" not in str(embed.to_dict())
    assert dataclasses.is_dataclass(repo.JobRow)


def test_delete_image_acts_on_the_image_shown(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            browser = await w.reply(await w.slash(w.alice, "tags view", {"dataset": "chara"}))
            jump = next(c for row in browser.components for c in row["components"] if c["type"] == 3)
            await w.click(browser, w.alice, jump["custom_id"], values=["2"])
            await w.server.wait_for_message(
                lambda m: m is browser and "image 2/3" in m.embeds[0]["title"], 10
            )
            images = await w.services.datasets.images(w.alice.user_id, "chara")
            shown = images[1]
            await w.services.datasets.remove_images(w.alice.user_id, "chara", [images[0].id])  # elsewhere
            ask = await w.reply(await w.click(browser, w.alice, first_id(browser, label="Delete image")))
            assert f"Delete image {shown.id} ({shown.original_name})" in ask.content

    run(scenario())
