"""What every operator command shares: argument types and the operator's wording of messages.

The services answer members (``you have no dataset named 'x' (see your datasets with /dataset
list)``); at the terminal the operator reads the same refusals, so :func:`for_operator` says them
to the operator, naming the member and the CLI command instead of the slash command.
"""

from __future__ import annotations

import argparse
import re

MAX_ID = 2**63 - 1  # a Discord id (snowflake) is a positive 64-bit number, as SQLite stores it
_ID_EXAMPLE = (
    "user ids are positive numbers such as 123456789012345678 (in Discord: Developer Mode, then Copy User ID)"
)


def discord_id(text: str) -> int:
    """An argparse type: a member's (or operator's) Discord id; zero, negatives and words are refused."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a Discord user id: {_ID_EXAMPLE}") from None
    if not 0 < value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{value} is not a Discord user id: {_ID_EXAMPLE}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for job and image numbers: 1 or more."""
    try:
        value = int(text.removeprefix("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 < value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{value} is not a valid number here: use 1 or more")
    return value


#: (pattern, replacement) in order; ``{user}`` is the member the command named (``--user``).
_REWRITES: tuple[tuple[str, str], ...] = (
    (
        r"\(see your datasets with /dataset list\)",
        "(list them with 'python -m bot dataset list --user {user}')",
    ),
    (r"\(see your jobs with /queue\)", "(list the jobs with 'python -m bot queue --all')"),
    (r"see /epochs job:(\d+)", r"see 'python -m bot job show \1'"),
    (r"cancel one in /queue", "cancel one with 'python -m bot job cancel ID'"),
    (r"\(see /tags view\)", "(see 'python -m bot dataset tags NAME --user {user}')"),
    (r"with /dataset remove-images", "with 'python -m bot dataset remove-images'"),
    (r"upload some first", "add some with 'python -m bot dataset add NAME --user {user} FILES'"),
    (r"\(see /preset options\)", "(README.md, 'The trainer on its own', lists every option)"),
    (r"[;:,]?\s*ask the operator\b", "; 'python -m bot check' says more"),
    (r"(disk space[^.]*)\.?\s*Tell (?:the|an) operator\b\.?", r"\1: free some space, then try again"),
    (r"\byou already have\b", "{who} already has"),
    (r"\byou have no\b", "{who_none}"),
    (r"\band you have\b", "and {who} has"),
    (r"\byour limit\b", "their limit"),
)


def for_operator(message: str, user: int | None = None) -> str:
    """A member-facing message said to the operator: the member by id, CLI commands for slash ones."""
    who = f"user {user}" if user is not None else "the member"
    fill = {"user": user if user is not None else "ID", "who": who,
            "who_none": f"{who} has no" if user is not None else "there is no"}  # fmt: skip
    for pattern, replacement in _REWRITES:
        message = re.sub(pattern, _fill(replacement, fill), message)
    return message


def _fill(template: str, values: dict[str, object]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template
