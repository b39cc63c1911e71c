"""The one base of the errors a member (or an operator at the CLI) should read as they are.

A service raises a :class:`MemberError` subclass whose ``str`` says what went wrong and what
to do. :class:`~db.database.DatabaseBusy` (a write that could not get the lock in time:
nothing was written) has a member-facing message too. The Discord layer maps both to a
message in one place (:func:`bot.ui.common.report_error`); anything else is a bug: logged,
and answered with a generic line.
"""

from __future__ import annotations

from db.database import DatabaseBusy

__all__ = ["MEMBER_ERRORS", "DatabaseBusy", "MemberError"]


class MemberError(Exception):
    """An expected refusal; its message is for the person who asked.

    Raised as ``MemberError("dataset {name} has no images yet", name=name)``: the message id (the
    English, with placeholders) and its values travel apart, so :meth:`translated` can put it in
    the member's language (:mod:`bot.i18n`); ``str()`` is the English. A value that is itself a
    ``MemberError`` is translated too. An error raised with a finished sentence (no values) is
    shown in English wherever the catalogs lack that exact sentence.
    """

    def __init__(self, message: str = "", /, **values: object):
        self.msgid, self.values = message, values
        super().__init__(message.format(**values) if values else message)

    def translated(self, t) -> str:
        """The message in ``t``'s language (``t``: a :class:`bot.i18n.Messages`)."""
        values = {k: v.translated(t) if isinstance(v, MemberError) else v for k, v in self.values.items()}
        return t(self.msgid, **values)


#: Every error whose message a member reads as it is: catch these, log nothing.
MEMBER_ERRORS: tuple[type[Exception], ...] = (MemberError, DatabaseBusy)
