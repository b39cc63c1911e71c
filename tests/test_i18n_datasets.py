"""Datasets, uploads and tags in the member's language (loopback stand-in, real discord.py client):
/dataset new, /upload with a file it skips, /tags view and a page turn, /tags remove with its
confirmation, /tags undo and a refusal, once in Japanese and once in English."""

from __future__ import annotations

import asyncio

import pytest

from bot.datasets.phrases import Phrase
from bot.i18n import Messages, messages
from bot.loopback import Upload
from tests.bot_harness import World, bot_world, first_id
from tests.queue_helpers import queue_settings
from tests.test_bot_more import _arrow
from tests.test_dataset_service import picture

#: What each step says, per language (the English is what the bot said before the catalogs).
SAYS = {
    "ja": {
        "created": "**chara** を作成しました",
        "next": "次は `/upload dataset:chara`",
        "added": "📥 chara: 画像を 2 枚追加しました",
        "skipped": "スキップ 1 件",
        "not_image": "notes.png: 画像ではありません(PILで読めません)",
        "now_has": "データセットの画像は **2** 枚",
        "tags_title": "画像 2 枚にタグ",
        "remove_button": "タグを削除…",
        "image_page": "chara · 画像 1/2",
        "caption_by": "キャプション: タガーが作成",
        "question": "**chara** のすべての画像から `{tag}` を削除しますか?",
        "confirm": "削除",
        "removed": "キャプション 2 件から `{tag}` を削除しました。",
        "undone": "↩️ 取り消しました: {tag} を削除(キャプション 2 件)。",
        "bad_name": "❌ データセット名は、文字(どの言語でも)・数字・スペース",
    },
    "en-US": {
        "created": "Created **chara**",
        "next": "Next: `/upload dataset:chara`",
        "added": "📥 chara: added 2 image(s)",
        "skipped": "Skipped 1",
        "not_image": "notes.png: not an image (PIL cannot read it)",
        "now_has": "The dataset now has **2** images",
        "tags_title": "tags on 2 images",
        "remove_button": "Remove tags…",
        "image_page": "chara · image 1/2",
        "caption_by": "caption by the tagger",
        "question": "Remove `{tag}` from every image of **chara**?",
        "confirm": "Remove",
        "removed": "✂️ Removed `{tag}` from 2 caption(s).",
        "undone": "↩️ undid: remove {tag} (2 caption(s)).",
        "bad_name": "❌ a dataset name is 1-40 letters",
    },
}


@pytest.fixture
def settings(tmp_path, tiny_sd15):
    return queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)


async def _walk(w: World, member, locale: str) -> None:
    says = SAYS[locale]
    new = {"name": "chara", "base_model": "tiny-sd15", "trigger": "tkchar"}
    created = await w.reply(await w.slash(member, "dataset new", new, locale=locale))
    assert says["created"] in created.content and says["next"] in created.content, created.content

    files = {
        "file1": Upload("red.png", picture(0, "red")),
        "file2": Upload("green.png", picture(1, "green")),
        "file3": Upload("notes.png", b"this is not a picture"),
    }
    inter = await w.slash(member, "upload", {"dataset": "chara", **files}, locale=locale)
    report = await w.server.wait_for_message(lambda m: m is inter.original and bool(m.embeds), 60)
    embed = report.embeds[0]
    assert embed["title"] == says["added"] and says["now_has"] in embed["description"], embed
    skipped = next(f for f in embed["fields"] if f["name"] == says["skipped"])
    assert says["not_image"] in skipped["value"], skipped

    browser = await w.reply(await w.slash(member, "tags view", {"dataset": "chara"}, locale=locale))
    title = browser.embeds[0]["title"]
    assert title.startswith("🏷️ chara: ") and says["tags_title"] in title, title
    assert first_id(browser, label=says["remove_button"])
    await w.click(browser, member, _arrow(browser, "▶️"), locale=locale)
    page = await w.server.wait_for_message(
        lambda m: m is browser and says["image_page"] in m.embeds[0]["title"], 10
    )
    assert says["caption_by"] in page.embeds[0]["footer"]["text"], page.embeds[0]["footer"]

    table = await w.services.datasets.tag_table(member.user_id, "chara")
    tag = next(t.tag for t in table if t.tag != "tkchar" and t.count == 2)
    options = {"dataset": "chara", "tags": tag}
    question = await w.reply(await w.slash(member, "tags remove", options, locale=locale))
    assert question.content == says["question"].format(tag=tag), question.content
    await w.click(question, member, first_id(question, label=says["confirm"]), locale=locale)
    done = await w.server.wait_for_message(lambda m: m is question and not m.components, 10)
    assert says["removed"].format(tag=tag) in done.content, done.content

    undone = await w.reply(await w.slash(member, "tags undo", {"dataset": "chara"}, locale=locale))
    assert undone.content == says["undone"].format(tag=tag), undone.content

    bad = {"name": "bad/name", "base_model": "tiny-sd15", "trigger": "tk"}
    refused = await w.reply(await w.slash(member, "dataset new", bad, locale=locale))
    assert refused.content.startswith(says["bad_name"]), refused.content


def test_datasets_uploads_and_tags_speak_the_members_language(settings):
    async def scenario():
        async with bot_world(settings) as w:
            await _walk(w, w.alice, "ja")
            await _walk(w, w.bob, "en-US")

    asyncio.run(asyncio.wait_for(scenario(), 240))


def test_a_skip_reason_and_an_undo_step_are_said_again_in_japanese():
    ja, en = messages("ja"), Messages("en")
    reason = Phrase("the same picture as {name}, already in", name="a.png")
    assert reason == "the same picture as a.png, already in" and "same picture" in reason  # still a str
    assert reason.translated(ja) == "すでにある a.png と同じ画像です"
    assert reason.translated(en) == str(reason)
    stored = "replace red hair with blue hair"  # an undo step's description, as the database keeps it
    step = Phrase.parse(stored, ("remove {tags}", "replace {old} with {new}"))
    assert step == stored and step.translated(ja) == "red hair を blue hair に置き換え"
    assert Phrase.parse("something older", ("remove {tags}",)) == "something older"
