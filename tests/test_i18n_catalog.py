"""The message catalogs: every message the code says has Japanese (files still being converted are
listed, and the list may only shrink), translations keep their placeholders, plural forms work, and
a member whose Discord is in Japanese reads Japanese."""

from __future__ import annotations

import asyncio
import string
from collections import Counter

from babel.messages.pofile import read_po

from bot.errors import MemberError
from bot.i18n import Messages, catalog_files, messages
from bot.i18n.catalog import lacking
from bot.ui.common import friendly_error
from tests.bot_harness import bot_world
from tests.queue_helpers import queue_settings

#: Files whose messages are not yet all in the catalogs (issue 16's conversion, area by area).
#: A file leaves the list when it is done; the test fails if a listed file has nothing left to do.
NOT_YET_CONVERTED: set[str] = set()


def test_every_message_the_code_says_has_japanese():
    per_file = Counter(said.path for said in lacking("ja"))
    new = {path: n for path, n in per_file.items() if path not in NOT_YET_CONVERTED}
    assert not new, f"messages without Japanese (run `python -m bot.i18n`): {new}"
    done = NOT_YET_CONVERTED - set(per_file)
    assert not done, f"converted: take {sorted(done)} off NOT_YET_CONVERTED"


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_translations_keep_their_placeholders():
    for path in catalog_files("ja"):
        with path.open("rb") as f:
            for message in read_po(f):
                if not message.id:
                    continue
                ids = message.id if isinstance(message.id, tuple) else (message.id,)
                strings = message.string if isinstance(message.string, tuple) else (message.string,)
                want = set().union(*(_fields(i) for i in ids)) - {"n"}
                for text in strings:
                    assert _fields(text) - {"n"} == want, f"{path.name}: {message.id!r} -> {text!r}"


def test_plural_forms_and_member_errors_in_both_languages():
    ja, en = messages("ja"), Messages("en")
    assert en.plural("{name} ({n} image)", "{name} ({n} images)", 2, name="a") == "a (2 images)"
    assert en.plural("{name} ({n} image)", "{name} ({n} images)", 1, name="a") == "a (1 image)"
    assert ja.plural("{name} ({n} image)", "{name} ({n} images)", 2, name="a") == "a(2 枚)"
    error = MemberError(
        "I cannot post progress and pictures in this channel (missing permission: {missing}): "
        "run the command in a channel where I can, or ask an operator to give me that permission",
        missing="Attach Files",
    )
    assert str(error).startswith("I cannot post progress") and "Attach Files" in str(error)
    assert friendly_error(error, ja).startswith("❌ このチャンネルには") and "Attach Files" in friendly_error(
        error, ja
    )
    unknown = MemberError("a sentence no catalog has")
    assert friendly_error(unknown, ja) == "❌ a sentence no catalog has"  # English rather than nothing


def test_a_japanese_member_reads_japanese_and_an_english_one_english(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=60)

    async def scenario():
        async with bot_world(settings) as w:
            for member, locale, said in (
                (w.alice, "ja", "少し待ってください"),
                (w.bob, "en-US", "Slow down"),
            ):
                await w.reply(await w.slash(member, "stamina", locale=locale))
                again = await w.reply(await w.slash(member, "stamina", locale=locale))
                assert said in again.content, again.content

    asyncio.run(asyncio.wait_for(scenario(), 120))
