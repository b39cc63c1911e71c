"""The slash commands in Japanese: every name, description, option and choice the command tree
sends has a Japanese entry in the catalogs (a new command without one fails here), and Discord's
stand-in accepts the localized payload the real client syncs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import discord
import pytest
from babel.messages.pofile import read_po
from discord import app_commands
from discord.ext import commands

from bot.cogs import COGS
from bot.i18n import Messages, catalog_files, language_of, messages
from bot.i18n.commands import NAME_CONTEXTS
from bot.settings import Settings
from tests.bot_harness import bot_world
from tests.queue_helpers import queue_settings


class Recorder(app_commands.Translator):
    """Every string discord.py asks to translate, with where it sits."""

    def __init__(self):
        self.seen: dict[tuple[str | None, str], str] = {}

    async def translate(self, string, locale, context):
        self.seen[(NAME_CONTEXTS.get(context.location), string.message)] = context.location.name
        return None


async def _command_strings() -> dict[tuple[str | None, str], str]:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    defaults = {k: f.default for k, f in Settings.model_fields.items() if not f.is_required()}
    bot.services = SimpleNamespace(settings=Settings.model_construct(**defaults))
    bot.settings = bot.services.settings
    for cog in COGS:
        await bot.add_cog(cog(bot))
    recorder = Recorder()
    for command in bot.tree.get_commands():
        await command.get_translated_payload(bot.tree, recorder)
    return recorder.seen


def _japanese_catalog() -> dict[tuple[str | None, str], str]:
    entries = {}
    for path in catalog_files("ja"):
        with path.open("rb") as f:
            for message in read_po(f):
                if message.id:
                    entries[(message.context, message.id)] = message.string
    return entries


def test_every_command_string_has_a_japanese_entry():
    seen = asyncio.run(_command_strings())
    catalog = _japanese_catalog()
    missing = [
        f"{where}: {text!r} (context {ctx})"
        for (ctx, text), where in seen.items()
        if not catalog.get((ctx, text))
    ]
    assert not missing, "no Japanese in bot/i18n/locales/ja for:\n" + "\n".join(missing)
    assert len(seen) > 150  # the whole tree was walked


def test_language_of_discord_locales():
    assert language_of(discord.Locale.japanese) == "ja" and language_of("ja") == "ja"
    assert language_of(discord.Locale.american_english) == "en" and language_of(None) == "en"
    assert language_of("fr") == "en"  # no French catalog: English
    t = messages("ja")
    assert t.name("command", "dataset") == "データセット" and t.name("option", "new") == "置換後"
    assert Messages("en").name("command", "dataset") == "dataset"


@pytest.mark.parametrize("locale", ["ja", "en-US"])
def test_the_synced_commands_carry_japanese_names_the_stand_in_accepts(tmp_path, tiny_sd15, locale):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})

    async def scenario():
        async with bot_world(settings) as w:
            dataset = w.server.command("dataset")
            assert dataset["name_localizations"]["ja"] == "データセット"
            assert "学習用" in dataset["description_localizations"]["ja"]
            new = next(o for o in dataset["options"] if o["name"] == "new")
            assert new["name_localizations"]["ja"] == "新規"
            trigger = next(o for o in new["options"] if o["name"] == "trigger")
            assert trigger["name_localizations"]["ja"] == "トリガーワード"
            train = w.server.command("train")
            optimizer = next(o for o in train["options"] if o["name"] == "optimizer")
            assert all("ja" not in (c.get("name_localizations") or {}) for c in optimizer["choices"])
            # A member of either language runs the command by its English name (what Discord sends)
            inter = await w.slash(
                w.alice, "dataset new", {"name": "chara", "base_model": "tiny-sd15", "trigger": "tkchar"},
                locale=locale,
            )  # fmt: skip
            assert "chara" in (await w.reply(inter)).content

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_the_stand_in_refuses_what_discord_refuses_in_localizations():
    from bot.loopback.validate import check_command

    def command(**extra):
        option = {"type": 3, "name": "name", "description": "d", "name_localizations": {"ja": "名前"}}
        return {"name": "dataset", "description": "d", "options": [option, {**option, **extra}]}

    ok = {"name": "other", "name_localizations": {"ja": "他"}}
    assert check_command(command(**ok)) == {}
    assert "name" in check_command(command(name="x", name_localizations={"ja": "名前"}))["options"]["1"]
    bad = check_command({"name": "a", "description": "d", "name_localizations": {"ja": "Bad Name", "xx": "a"},
                         "description_localizations": {"ja": ""}})  # fmt: skip
    assert set(bad["name_localizations"]) == {"ja", "xx"} and "ja" in bad["description_localizations"]
