"""The trainer's one error base.

A :class:`TrainerError` says what is wrong with a job in words its member can act on, so its
message goes out as it is (the ``failed`` event's ``message``) and no traceback is needed. Every
such error of the trainer derives from it (and keeps the builtin base callers catch it by, such
as ``ValueError``); code that tells them apart from bugs catches this class, never names.
This module imports nothing heavy: the contract (which the bot imports) uses it.
"""

from __future__ import annotations


class TrainerError(Exception):
    """An error whose message is for the member: what to fix, without a traceback."""
