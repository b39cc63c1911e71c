"""Text the dataset code hands back rather than raises (why an upload skipped a file, a warning, an
edit's description): English that keeps its message id and values, to be said in the member's
language where it is shown.

    Phrase(N_("the same picture as {name}, already in"), name=name)

A :class:`Phrase` is a ``str`` (the English), so logs, the CLI and the database see plain text;
:func:`said` puts it, or a :class:`~bot.errors.MemberError`, in a language (other text as it is).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import MemberError


class Phrase(str):
    """English text (``str``) with its message id and values."""

    msgid: str
    values: dict[str, Any]

    def __new__(cls, msgid: str, /, **values: Any) -> Phrase:
        text = super().__new__(cls, msgid.format(**values) if values else msgid)
        text.msgid, text.values = msgid, values
        return text

    def translated(self, t) -> str:
        """The text in ``t``'s language (``t``: a :class:`bot.i18n.Messages`)."""
        return t(self.msgid, **{k: said(v, t) for k, v in self.values.items()})

    @classmethod
    def parse(cls, text: str, msgids: tuple[str, ...]) -> str:
        """``text`` (English made from one of ``msgids``, e.g. read back from the database) as a
        :class:`Phrase` again; ``text`` itself when no message id matches."""
        for msgid in msgids:
            match = _pattern(msgid).fullmatch(text)
            if match:
                return cls(msgid, **match.groupdict())
        return text


def said(text: Any, t) -> Any:
    """``text`` in ``t``'s language: a :class:`Phrase` or a member error translated, else as it is."""
    if isinstance(text, (Phrase, MemberError)):
        return text.translated(t)
    return text


def _pattern(msgid: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", msgid)  # text, name, text, name, ..., text
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
    return re.compile(body, re.DOTALL)
