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
    """An expected refusal; its message is for the person who asked."""


#: Every error whose message a member reads as it is: catch these, log nothing.
MEMBER_ERRORS: tuple[type[Exception], ...] = (MemberError, DatabaseBusy)
