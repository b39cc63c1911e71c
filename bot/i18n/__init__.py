"""What the bot says, in the member's language: gettext catalogs read with Babel.

The English text is the message id (gettext's convention), so English needs no catalog. Each other
language has ``locales/<lang>/LC_MESSAGES/*.po`` files, one per area of the bot (so two areas never
edit one file); they are read with Babel at first use, merged, and served through the standard
library's ``gettext`` (plural forms from the catalog's header). Names of commands, options and
choices carry a context (``pgettext``): "new" the command and "new" the option translate apart.

    t = messages(interaction.locale)
    t("Dataset {name} created", name=name)
    t.plural("{n} image", "{n} images", count)
"""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path
from typing import Any

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LANGUAGE = "en"
#: Discord locale prefixes -> the catalogs' language; every other locale gets English.
LANGUAGES = {"ja": "ja"}


def language_of(locale: Any) -> str:
    """``"ja"`` for Discord's ``ja`` locale (a :class:`discord.Locale` or its value), else English."""
    value = str(getattr(locale, "value", locale) or "")
    return LANGUAGES.get(value.split("-")[0].lower(), DEFAULT_LANGUAGE)


def catalog_files(language: str) -> list[Path]:
    return sorted((LOCALES_DIR / language / "LC_MESSAGES").glob("*.po"))


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """All of ``language``'s catalogs as one ``gettext`` translation (English: the ids themselves)."""
    files = catalog_files(language)
    if language == DEFAULT_LANGUAGE or not files:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    merged = None
    for path in files:
        with path.open("rb") as f:
            catalog = read_po(f, locale=language)
        if merged is None:
            merged = catalog
            continue
        for message in catalog:
            if message.id:
                merged[message.id] = message
    buffer = io.BytesIO()
    write_mo(buffer, merged)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


class Messages:
    """One language's messages: ``t(msgid, **values)``, ``t.plural(...)``, ``t.name(context, id)``."""

    def __init__(self, language: str):
        self.language = language
        self._t = translations(language)

    def __call__(self, msgid: str, /, **values: Any) -> str:
        text = self._t.gettext(msgid)
        return text.format(**values) if values else text

    def plural(self, singular: str, plural: str, n: int, /, **values: Any) -> str:
        return self._t.ngettext(singular, plural, n).format(n=n, **values)

    def name(self, context: str, msgid: str) -> str:
        """A name in ``context`` ("command", "option", "choice"): the id itself when untranslated."""
        return self._t.pgettext(context, msgid)


def messages(locale: Any) -> Messages:
    """The messages of a Discord locale (``interaction.locale``, ``guild.preferred_locale``)."""
    return Messages(language_of(locale))


def N_(msgid: str) -> str:  # noqa: N802 - gettext's name for "extract, translate later"
    """Marks a message defined before a language is known (a module constant) for extraction."""
    return msgid
