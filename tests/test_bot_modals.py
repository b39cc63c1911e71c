"""Forms (modals) answer only the member they were opened for. Discord routes a form's submit by
its custom id alone, so a crafted submit by another member reaches the bot: it is refused
privately, changes nothing, and the owner's form still works afterwards."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from db import jobs as repo
from tests.bot_harness import World, bot_world, first_id, job_with_epoch
from tests.queue_helpers import make_dataset, queue_settings
from tests.test_bot_more import _input

REFUSED = "⛔ This form belongs to the member who opened it: nothing was changed."


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 150))


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


async def forged_submit(w: World, form, values: dict):
    """Bob submits the form the bot opened for alice (the stand-in, like Discord's client, would not
    show it to him; a modified client can send it anyway)."""
    as_bob = dataclasses.replace(form, user_id=w.bob.user_id)
    submit = await w.server.send_modal_submit(as_bob, w.bob, values)
    reply = await w.reply(submit)
    assert reply.ephemeral and reply.content == REFUSED, reply.content
    assert reply.visible_to == w.bob.user_id


def test_advanced_options_form_refuses_another_member(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            estimate = await w.reply(await w.slash(w.alice, "train", {"dataset": "chara", "epochs": 2}))
            before = (estimate.edits, estimate.embeds, estimate.components)
            form = await w.click(estimate, w.alice, first_id(estimate, label="Advanced"))
            assert form.response_type == 9
            text = _input(form, "One option per line")
            await forged_submit(w, form, {text: "epochs = 7"})
            assert (estimate.edits, estimate.embeds, estimate.components) == before
            submit = await w.server.send_modal_submit(form, w.alice, {text: "epochs = 3"})
            await submit.wait_response(timeout=10)
            updated = await w.server.wait_for_message(lambda m: m is estimate and m.edits > before[0], 10)
            steps = next(f["value"] for f in updated.embeds[0]["fields"] if f["name"] == "Steps")
            assert "× 3 epochs" in steps, steps

    run(scenario())


def test_epoch_forms_refuse_another_member(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await job_with_epoch(w)
            pager = await w.reply(await w.slash(w.alice, "epochs", {"job": str(job.id)}))
            save = await w.click(pager, w.alice, first_id(pager, label="Save e1"))
            await forged_submit(w, save, {_input(save, "Name"): "bobs-copy"})
            further = await w.click(pager, w.alice, first_id(pager, label="Train further from e1"))
            await forged_submit(w, further, {_input(further, "More epochs"): "3"})
            compare = await w.click(pager, w.alice, first_id(pager, label="Compare"))
            values = {_input(compare, "Epochs"): "1", _input(compare, "Weights"): "0.5, 1"}
            await forged_submit(w, compare, values)
            for member in (w.alice, w.bob):
                assert await w.services.library.list(member.user_id) == []
            assert await repo.list_jobs(w.services.conn, kind="generate") == []
            balance = (await w.services.stamina.balance(w.alice.user_id)).balance
            assert balance == 150 - job.cost
            # the owner's forms are still open and work
            submit = await w.server.send_modal_submit(save, w.alice, {_input(save, "Name"): "mine"})
            await submit.wait_response(timeout=10)
            assert "Saved epoch 1" in (await w.reply(submit)).content
            assert [lora.name for lora in await w.services.library.list(w.alice.user_id)] == ["mine"]
            submit = await w.server.send_modal_submit(compare, w.alice, values)
            await submit.wait_response(timeout=10)
            assert "1 epochs × 2 weights" in (await w.reply(submit)).content

    run(scenario())
