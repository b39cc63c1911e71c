"""Captions by hand in Discord (loopback stand-in, real discord.py client): an image's caption
edited in a form from its page, re-tags that ask first and say how many hand edits they replace,
with their progress, and /dataset edit (rename, trigger, threshold) with clear refusals."""

from __future__ import annotations

import asyncio

import pytest

from bot.ui import progress_line
from tests.bot_harness import World, bot_world, first_id
from tests.queue_helpers import make_dataset, queue_settings
from tests.test_bot_modals import forged_submit
from tests.test_bot_more import _arrow, _input

CAPTION_FIELD = "Comma-separated tags"


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 150))


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


async def captions(w: World, dataset: str = "chara") -> list[str]:
    return [i.caption for i in await w.services.datasets.images(w.alice.user_id, dataset)]


def _field(form, label: str) -> dict:
    for row in form.modal["components"]:
        for c in row.get("components") or [row.get("component")]:
            if c and label in (c.get("label") or ""):
                return c
    raise LookupError(label)


async def first_image_page(w: World):
    """Alice's 2-image dataset in /tags view, at its first image: (that image, the browser)."""
    await make_dataset(w.services, owner=w.alice.user_id, images=2)
    first = (await w.services.datasets.images(w.alice.user_id, "chara"))[0]
    browser = await w.reply(await w.slash(w.alice, "tags view", {"dataset": "chara"}))
    assert first_id(browser, label="Re-tag all")  # on the tag frequency page: the whole dataset
    await w.click(browser, w.alice, _arrow(browser, "▶️"))
    await w.server.wait_for_message(lambda m: m is browser and "image 1/2" in m.embeds[0]["title"], 10)
    return first, browser


def test_edit_a_caption_from_its_page(settings):
    async def scenario():
        async with bot_world(settings) as w:
            first, browser = await first_image_page(w)
            form = await w.click(browser, w.alice, first_id(browser, label="Edit caption"))
            assert form.response_type == 9 and form.modal["title"] == f"Caption of image {first.id}"
            assert _field(form, CAPTION_FIELD)["value"] == first.caption  # prefilled with the caption
            text = _input(form, CAPTION_FIELD)

            before = await captions(w)
            empty = await w.server.send_modal_submit(form, w.alice, {text: " , ,"})
            reply = await w.reply(empty)
            assert (
                reply.ephemeral
                and reply.content == "❌ a caption needs at least one tag: nothing was changed"
            )
            await forged_submit(w, form, {text: "tkchar, bobs words"})
            assert await captions(w) == before

            edits = browser.edits
            submit = await w.server.send_modal_submit(
                form, w.alice, {text: "1girl, tkchar, red dress\nsmile"}
            )
            (note,) = await submit.wait_followups(1, timeout=10)
            assert note.content.startswith(
                f"✏️ Saved the caption of image {first.id} (the trigger word stays first)"
            )
            assert (await captions(w))[0] == "tkchar, 1girl, red dress, smile"
            shown = await w.server.wait_for_message(lambda m: m is browser and m.edits > edits, 10)
            assert "`red dress`" in shown.embeds[0]["description"]  # the page shows the new caption
            assert shown.embeds[0]["footer"]["text"].endswith("caption edited by hand")
            assert (await w.services.datasets.images(w.alice.user_id, "chara"))[0].caption_source == "hand"

            again = await w.slash(w.alice, "tags caption", {"dataset": "chara", "image": first.id})
            assert _field(again, CAPTION_FIELD)["value"] == "tkchar, 1girl, red dress, smile"
            await w.services.datasets.add_tags(
                w.alice.user_id, "chara", ["hat"], image_id=first.id
            )  # meanwhile
            values = {_input(again, CAPTION_FIELD): "tkchar, from the old form"}
            stale = await w.reply(await w.server.send_modal_submit(again, w.alice, values))
            assert "changed since you opened it (another edit): open it again" in stale.content
            assert (await captions(w))[0] == "tkchar, 1girl, red dress, smile, hat"
            missing = await w.reply(
                await w.slash(w.alice, "tags caption", {"dataset": "chara", "image": 999})
            )
            assert missing.content.startswith("❌ image 999 is not in dataset 'chara'")

    run(scenario())


def test_retag_asks_first_and_says_what_it_replaces(settings, monkeypatch):
    shown: list[str] = []
    real_edit = progress_line.ProgressLine._edit

    async def recorded(self, text: str) -> None:
        shown.append(text)
        await real_edit(self, text)

    monkeypatch.setattr(progress_line.ProgressLine, "_edit", recorded)

    async def scenario():
        async with bot_world(settings) as w:
            owner = w.alice.user_id
            await make_dataset(w.services, owner=owner, images=3)
            images = await w.services.datasets.images(owner, "chara")
            await w.services.datasets.set_caption(owner, "chara", images[0].id, "tkchar, my pose")
            await w.services.datasets.add_tags(owner, "chara", ["extra"], image_id=images[1].id)
            before = await captions(w)
            options = {"dataset": "chara", "threshold": 0.8}

            question = await w.reply(await w.slash(w.alice, "tags retag", options))
            assert question.content.startswith(
                "Re-tag all 3 image(s) of **chara** with `tiny` at threshold 0.8?"
            )
            assert "**2 caption(s) you edited by hand will be replaced.**" in question.content
            assert "becomes the dataset's setting" in question.content
            await w.click(question, w.alice, first_id(question, label="Cancel"))
            assert question.content == "Cancelled: nothing was changed." and not question.components
            assert await captions(w) == before

            info = await w.reply(await w.slash(w.alice, "dataset info", {"name": "chara"}))
            own = next(f["value"] for f in info.embeds[0]["fields"] if f["name"] == "Your own captions")
            assert own == "2 edited by hand, 0 from a zip"
            question = await w.reply(await w.slash(w.alice, "tags retag", options))
            assert first_id(question, label="Keep my 2, re-tag 1")
            await w.click(question, w.alice, first_id(question, label="Re-tag 3"))
            done = await w.server.wait_for_message(lambda m: m is question and "Re-tagged" in m.content, 30)
            assert done.content.startswith("🏷️ Re-tagged 3 image(s) of **chara**: 3 caption(s) changed.")
            assert not done.components
            assert "⏳ Tagging: 3/3" in [f"⏳ {t}" for t in shown]  # the progress line was shown
            after = await captions(w)
            assert not any("my pose" in c or "extra" in c for c in after)
            assert all(c.startswith("tkchar, ") and "1girl" not in c for c in after)
            assert (await w.services.datasets.get(owner, "chara")).general_threshold == 0.8

            refused = await w.reply(
                await w.slash(w.alice, "tags retag", {"dataset": "chara", "images": "1, x"})
            )
            assert refused.content.startswith("❌ '1, x' is not a list of image ids")

    run(scenario())


def test_retag_one_image_from_its_page(settings):
    async def scenario():
        async with bot_world(settings) as w:
            first, browser = await first_image_page(w)
            question = await w.reply(await w.click(browser, w.alice, first_id(browser, label="Re-tag image")))
            assert question.content.startswith(
                f"Re-tag image {first.id} of **chara** with `tiny` at threshold 0.35?"
            )
            assert "No caption here was edited by hand" in question.content
            await w.click(question, w.alice, first_id(question, label="Re-tag"))
            done = await w.server.wait_for_message(lambda m: m is question and "Re-tagged" in m.content, 30)
            assert done.content.startswith("🏷️ Re-tagged 1 image(s) of **chara**: 0 caption(s) changed.")

    run(scenario())


def test_dataset_edit_renames_and_changes_the_trigger(settings):
    async def scenario():
        async with bot_world(settings) as w:
            owner = w.alice.user_id
            await make_dataset(w.services, owner=owner, images=3)
            await w.services.datasets.create(owner, "other", "tiny-sd15", "tk")
            options = {"name": "chara", "new_name": "hero", "trigger": "herotk"}
            reply = await w.reply(await w.slash(w.alice, "dataset edit", options))
            assert reply.content.splitlines()[:3] == [
                "✏️ Changed **hero**:",
                "• renamed from **chara**",
                "• trigger `tkchar` → `herotk`: 3 caption(s) rewritten, `herotk` first and `tkchar` gone",
            ]
            assert all(c.startswith("herotk, ") and "tkchar" not in c for c in await captions(w, "hero"))

            for options, message in [
                (
                    {"name": "hero", "new_name": "other", "threshold": 0.5},
                    "❌ you already have a dataset named 'other'",
                ),
                ({"name": "hero", "new_name": "../x"}, "❌ a dataset name is 1-40 letters"),
                ({"name": "hero", "crop_size": "big", "trigger": "zz"}, "❌ "),
                ({"name": "hero"}, "❌ say what to change"),
            ]:
                refused = await w.reply(await w.slash(w.alice, "dataset edit", options))
                assert refused.content.startswith(message), refused.content
            row = await w.services.datasets.get(owner, "hero")
            assert (row.trigger_word, row.general_threshold) == ("herotk", 0.35)

            reply = await w.reply(
                await w.slash(
                    w.alice, "dataset edit", {"name": "hero", "threshold": 0.6, "crop_mode": "focus"}
                )
            )
            assert "• tagger tiny @ 0.35 → tiny @ 0.6 for later uploads" in reply.content
            assert "the 3 image(s) already in keep theirs" in reply.content
            question = await w.reply(
                await w.click(reply, w.alice, first_id(reply, label="Re-tag the 3 image(s) now"))
            )
            assert question.content.startswith(
                "Re-tag all 3 image(s) of **hero** with `tiny` at threshold 0.6?"
            )

    run(scenario())
