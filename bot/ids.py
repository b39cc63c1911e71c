"""Ids that come from Discord (command options, autocomplete values, button custom ids).

Anything a member types or a client crafts may be any text or any number of digits; SQLite
stores integers up to 2**63 - 1 and raises OverflowError beyond. :func:`parse_id` is the one
place that turns such a value into an id the database can look up, or None, which every
caller answers as "no such thing" (the answer an unknown id gets).
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # SQLite's largest INTEGER
_MAX_DIGITS = len(str(MAX_ID))


def parse_id(value: int | str | None) -> int | None:
    """A positive id that fits SQLite ("12", "#12", " 12 " or 12), or None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().removeprefix("#").strip()
        digits = text.lstrip("0") or "0"  # int() refuses over 4300 digits, leading zeros included
        if not (text.isascii() and text.isdigit()) or len(digits) > _MAX_DIGITS:
            return None
        number = int(digits)
    return number if 1 <= number <= MAX_ID else None


def shown(value: object, limit: int = 40) -> str:
    """``value`` as it may be quoted back in a message (a crafted one can be long)."""
    text = str(value).strip().removeprefix("#")
    return text if len(text) <= limit else text[: limit - 1] + "…"
