"""Ids from Discord that SQLite cannot hold (or that are no number): every command option, every
autocomplete and every button custom id that carries a job answers "no such job", privately,
within the interaction, and nothing is logged as an error (bot_world fails on a logged error).
Also the one error mapping: a busy database is said as such, never "Something went wrong"."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.ids import MAX_ID, parse_id
from db.database import DatabaseBusy
from tests.bot_harness import World, bot_world, first_id, job_with_epoch, progress_message
from tests.queue_helpers import queue_settings

HUGE = "1" * 30  # OverflowError in SQLite before the one parser
BAD = [HUGE, "#" + HUGE, str(MAX_ID + 1), "0", "-5", "abc", "12abc", "١٢"]  # the last: Arabic-Indic digits
BUSY = "⏳ The server is busy right now: nothing was changed. Try again in a moment."


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 150))


def no_job(text: str) -> str:
    return f"❌ you have no job #{text.removeprefix('#')} (see your jobs with /queue)"


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


def test_parse_id_accepts_only_what_sqlite_holds():
    assert [parse_id(v) for v in ("12", "#12", " 12 ", 12, str(MAX_ID), MAX_ID)] == [12, 12, 12, 12, MAX_ID, MAX_ID]
    assert parse_id("0" * 5000 + "7") == 7
    assert [parse_id(v) for v in (*BAD, MAX_ID + 1, 0, -1, True, None, "", "#", "1" * 5000)] == [None] * 16


def test_bad_job_ids_in_every_command_option_are_no_such_job(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            for bad in BAD:
                for member, command, options in [
                    (w.alice, "epochs", {"job": bad}),
                    (w.alice, "train", {"dataset": "chara", "like": bad}),
                    (w.alice, "train", {"dataset": "chara", "continue_job": bad, "continue_epoch": 1}),
                    (w.olga, "operator cancel", {"job": bad}),
                ]:
                    reply = await w.reply(await w.slash(member, command, options))
                    assert reply.ephemeral and reply.content == no_job(bad), (command, bad, reply.content)
            for command, options in [("lora download", {"name": HUGE}), ("lora delete", {"name": HUGE}),
                                     ("generate", {"prompt": "x", "lora": HUGE})]:  # fmt: skip
                reply = await w.reply(await w.slash(w.alice, command, options))
                assert reply.ephemeral and reply.content.startswith(f"❌ you have no LoRA named '{HUGE}'")
            # a real id still works, and a saved epoch that is not there is said as such
            reply = await w.reply(
                await w.slash(w.alice, "train", {"dataset": "chara", "continue_job": str(job.id),
                                                 "continue_epoch": 7})  # fmt: skip
            )
            assert reply.content == f"❌ job #{job.id} has no saved epoch 7: see /epochs job:{job.id}"
            assert (await w.services.queue.job(w.alice.user_id, job.id)).state == "queued"

    run(scenario())


def test_bad_ids_in_autocomplete_offer_nothing(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            for member, command, focused, options in [
                (w.alice, "epochs", "job", {}),
                (w.olga, "operator cancel", "job", {}),
                (w.alice, "train", "like", {"dataset": "chara", "continue_job": HUGE}),
                (w.alice, "train", "continue_job", {"dataset": "chara", "like": HUGE}),
            ]:
                for typed in (HUGE, str(MAX_ID + 1), "abc"):
                    inter = await w.server.send_autocomplete(
                        w.guild, member, command, {**options, focused: typed}, focused=focused
                    )
                    await inter.wait_response(timeout=10)
                    assert inter.response_type == 8 and inter.choices == [], (command, typed)
            inter = await w.server.send_autocomplete(w.guild, w.alice, "epochs", {"job": str(job.id)}, focused="job")
            await inter.wait_response(timeout=10)
            assert [c["value"] for c in inter.choices] == [str(job.id)]

    run(scenario())


def crafted(message, *custom_ids: str):
    """``message`` as a modified client could send it: buttons with any custom ids."""
    buttons = [{"type": 2, "style": 2, "label": f"b{i}", "custom_id": c} for i, c in enumerate(custom_ids)]
    return dataclasses.replace(message, data={**message.data, "components": [{"type": 1, "components": buttons}]})


def test_crafted_button_custom_ids_are_no_such_job(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            progress = await progress_message(w, job.id)
            assert first_id(progress, f"lorabot:cancel:{job.id}")
            for bad in (HUGE, str(MAX_ID + 1), "0", "abc"):
                ids = [f"lorabot:cancel:{bad}", f"lorabot:download:{bad}:1", f"lorabot:save:{bad}:1"]
                message = crafted(progress, *ids)
                for custom_id in ids:
                    reply = await w.reply(await w.click(message, w.alice, custom_id))
                    assert reply.ephemeral and reply.content == no_job(bad), (custom_id, reply.content)
            no_epoch = f"❌ job #{job.id} has no saved epoch {HUGE}: see /epochs job:{job.id}"
            ids = [f"lorabot:download:{job.id}:{HUGE}", f"lorabot:save:{job.id}:{HUGE}"]
            message = crafted(progress, *ids)
            for custom_id in ids:
                reply = await w.reply(await w.click(message, w.alice, custom_id))
                assert reply.ephemeral and reply.content == no_epoch, (custom_id, reply.content)
            assert (await w.services.queue.job(w.alice.user_id, job.id)).state == "queued"

    run(scenario())


async def busy(*_args, **_kwargs):
    raise DatabaseBusy()


async def _answered_busy(w: World, inter) -> None:
    reply = await w.reply(inter)
    assert reply.ephemeral and reply.content == BUSY, reply.content


def test_a_busy_database_is_said_in_every_kind_of_handler(settings, monkeypatch):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            pager = await w.reply(await w.slash(w.alice, "epochs", {"job": str(job.id)}))
            save_form = await w.click(pager, w.alice, first_id(pager, label="Save e1"))
            dataset_delete = await w.reply(await w.slash(w.alice, "dataset delete", {"name": "chara"}))
            services = w.services
            monkeypatch.setattr(services.queue, "job", busy)  # a command (the tree's handler)
            await _answered_busy(w, await w.slash(w.alice, "epochs", {"job": str(job.id)}))
            # a button: deferred ("thinking") first, then the service call
            await _answered_busy(w, await w.click(pager, w.alice, first_id(pager, label="Download e1")))
            # a form (deferred, then the save)
            monkeypatch.setattr(services.library, "save", busy)
            submit = await w.server.send_modal_submit(save_form, w.alice, {})
            await _answered_busy(w, submit)
            # a view's button whose action deferred before the service failed: a followup says it
            monkeypatch.setattr(services.datasets, "delete", busy)
            click = await w.click(dataset_delete, w.alice, first_id(dataset_delete, label="Delete"))
            [followup] = await click.wait_followups(1, timeout=10)
            assert followup.ephemeral and followup.content == BUSY
            monkeypatch.undo()
            assert len(await services.datasets.images(w.alice.user_id, "chara")) == 3
            assert await services.library.list(w.alice.user_id) == []

    run(scenario())
