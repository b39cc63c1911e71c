"""The slash commands in the member's language: discord.py's ``app_commands.Translator`` over the
catalogs. Discord shows each member the names and descriptions of their own client's language.

Names (commands, groups, options, choices) are looked up with a context (``pgettext``), so a word
used as a command and as an option can translate apart; descriptions are plain messages. A string
left as it is (a technical name such as AdamW) is not sent as a localization.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from . import DEFAULT_LANGUAGE, Messages, language_of

#: The catalog context of each kind of name (descriptions have none).
NAME_CONTEXTS = {
    Where.command_name: "command",
    Where.group_name: "command",
    Where.parameter_name: "option",
    Where.choice_name: "choice",
}


class CatalogTranslator(app_commands.Translator):
    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContext,
    ) -> str | None:
        language = language_of(locale)
        if language == DEFAULT_LANGUAGE:
            return None
        return translate_command_text(Messages(language), string.message, context.location)


def translate_command_text(t: Messages, text: str, where: Where) -> str | None:
    """``text`` (a name or description at ``where``) in ``t``'s language; None when unchanged."""
    context = NAME_CONTEXTS.get(where)
    translated = t.name(context, text) if context else t(text)
    return None if translated == text else translated
