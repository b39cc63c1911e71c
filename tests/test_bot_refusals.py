"""What the bot refuses, through the loopback Discord: each refusal is a short private message
and changes nothing. Also the file links for files over the upload limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bot.loopback import Upload
from db import jobs as repo
from tests.bot_harness import bot_world, first_id, job_with_epoch, progress_message
from tests.queue_helpers import make_dataset, queue_settings


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


def test_too_little_stamina_disables_start_and_charges_nothing(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            inter = await w.slash(w.alice, "train", {"dataset": "chara", "epochs": 1000, "repeats": 100})
            estimate = await w.reply(inter)
            assert "You need" in estimate.embeds[0]["footer"]["text"]
            start = next(
                c for row in estimate.components for c in row["components"] if "Start" in c.get("label", "")
            )
            assert start["disabled"] is True
            with pytest.raises(ValueError):  # Discord does not let anyone click a disabled button
                await w.server.send_component(estimate, w.alice, start["custom_id"])
            assert (await w.services.stamina.balance(w.alice.user_id)).balance == 150
            assert await repo.list_jobs(w.services.conn) == []

    run(scenario())


def test_another_members_things_are_not_found(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            await w.services.library.save(w.alice.user_id, job.id, 1, "alice-lora")
            for command, options in [
                ("dataset info", {"name": "chara"}),
                ("tags remove", {"dataset": "chara", "tags": "red"}),
                ("epochs", {"job": str(job.id)}),
                ("generate", {"prompt": "x", "lora": "alice-lora"}),
                ("train", {"dataset": "chara", "like": str(job.id)}),
            ]:
                reply = await w.reply(await w.slash(w.bob, command, options))
                assert reply.ephemeral and reply.content.startswith("❌ you have no"), (
                    command,
                    reply.content,
                )
            progress = await progress_message(w, job.id)
            reply = await w.reply(await w.click(progress, w.bob, f"lorabot:cancel:{job.id}"))
            assert reply.ephemeral and f"no job #{job.id}" in reply.content
            inter = await w.server.send_autocomplete(
                w.guild, w.bob, "dataset info", {"name": ""}, focused="name"
            )
            await inter.wait_response()
            assert inter.choices == []
            inter = await w.server.send_autocomplete(
                w.guild, w.alice, "dataset info", {"name": "ch"}, focused="name"
            )
            await inter.wait_response()
            assert [c["value"] for c in inter.choices] == ["chara"]
            assert (await w.services.queue.job(w.alice.user_id, job.id)).state == "queued"
            assert len(await w.services.datasets.images(w.alice.user_id, "chara")) == 3

    run(scenario())


def test_a_bad_attachment_is_skipped_with_the_reason(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await w.slash(w.alice, "dataset new", {"name": "d", "base_model": "tiny-sd15", "trigger": "tk"})
            files = {
                "file1": Upload("notes.png", b"this is not a picture"),
                "file2": Upload("cut.png", b"\x89PNG\r\n"),
            }
            inter = await w.slash(w.alice, "upload", {"dataset": "d", **files})
            report = await w.server.wait_for_message(lambda m: m is inter.original and bool(m.embeds), 30)
            embed = report.embeds[0]
            assert embed["title"].endswith("added 0 image(s)")
            skipped = next(f for f in embed["fields"] if f["name"].startswith("Skipped"))
            assert "notes.png" in skipped["value"] and "cut.png" in skipped["value"]
            assert await w.services.datasets.images(w.alice.user_id, "d") == []

    run(scenario())


def test_a_file_over_the_upload_limit_comes_as_a_link(settings):
    async def scenario():
        async with bot_world(settings, upload_limit=1024 * 1024) as w:
            job = await job_with_epoch(w, size=3 * 1024 * 1024)
            pager = await w.reply(await w.slash(w.alice, "epochs", {"job": str(job.id)}))
            answer = await w.reply(await w.click(pager, w.alice, first_id(pager, label="Download e1")))
            assert answer.ephemeral and not answer.files and "over Discord's 1 MB limit" in answer.content
            url = next(c["url"] for row in answer.components for c in row["components"] if c.get("url"))
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    data = await resp.read()
                assert data == Path((await repo.epochs(w.services.conn, job.id))[0].path).read_bytes()
                token = url.split("/files/")[1].split("/")[0]
                forged = url.replace(token, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
                async with http.get(forged) as resp:
                    assert resp.status == 403
                expired = w.files.signer.sign(
                    w.alice.user_id, "epoch", f"{job.id}/1", "x.safetensors", lifetime_s=-1
                )
                async with http.get(f"{w.files.base_url}/files/{expired}/x.safetensors") as resp:
                    assert resp.status == 410
                bobs = w.files.signer.sign(w.bob.user_id, "epoch", f"{job.id}/1", "x.safetensors")
                async with http.get(f"{w.files.base_url}/files/{bobs}/x.safetensors") as resp:
                    assert resp.status == 404  # a link only ever serves its holder's own files
            reply = await w.reply(await w.click(pager, w.alice, first_id(pager, label="Download e1")))
            assert "expires <t:" in reply.content

    run(scenario())


def test_operator_commands_refuse_members(settings):
    async def scenario():
        async with bot_world(settings) as w:
            with pytest.raises(PermissionError):  # Discord hides the group from members
                await w.server.send_interaction(w.guild, w.bob, "operator pause", {})
            # ... unless a server admin re-enabled it for everyone: the bot still refuses
            inter = await w.server.send_interaction(
                w.guild, w.bob, "operator pause", {}, bypass_permissions=True
            )
            await inter.wait_response()
            reply = await w.reply(inter)
            assert reply.ephemeral and "only operators" in reply.content
            assert not await w.services.queue.paused()
            grant = {"member": w.bob, "amount": 50}
            reply = await w.reply(await w.slash(w.olga, "operator grant", grant))
            assert "Granted 50" in reply.content
            assert (await w.services.stamina.balance(w.bob.user_id)).balance == 200
            reply = await w.reply(await w.slash(w.olga, "operator pause"))
            assert await w.services.queue.paused()

    run(scenario())


def test_cooldown_refuses_a_burst(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=30)

    async def scenario():
        async with bot_world(settings) as w:
            first = await w.reply(await w.slash(w.alice, "stamina"))
            second = await w.reply(await w.slash(w.alice, "stamina"))
            assert first.embeds and "Slow down" in second.content
            assert (await w.reply(await w.slash(w.bob, "stamina"))).embeds  # others are not held up

    run(scenario())


def test_first_id_helper_finds_buttons():
    from bot.loopback.state import RecordedMessage

    message = RecordedMessage(
        1, 2, {"components": [{"type": 1, "components": [{"type": 2, "custom_id": "a:b", "label": "Go"}]}]}
    )
    assert first_id(message, "a:") == "a:b" and first_id(message, label="Go") == "a:b"
