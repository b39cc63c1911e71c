"""Building a command interaction's ``data.options`` and ``data.resolved`` as Discord does.

The option types come from the command the bot registered, never from the test's
Python values, and the test's values are checked the way Discord's client checks
what a member types: a missing required option, an unknown option, a value of the
wrong type, out of range or not among the choices cannot be sent (ValueError).
"""

from __future__ import annotations

import math
from typing import Any

from .files import Upload, as_upload, attachment_payload, recorded_file
from .state import (
    ADMINISTRATOR,
    JSON,
    Channel,
    Guild,
    Member,
    RecordedFile,
    Role,
    user_payload,
)

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
MAX_SAFE_INT = 2**53
MAX_STRING_OPTION = 6000


def split_command_name(name: str) -> tuple[str, list[str]]:
    """``"operator stamina grant"`` → ``("operator", ["stamina", "grant"])``."""
    parts = name.split()
    if not 1 <= len(parts) <= 3:
        raise LookupError(f"/{name} is not a command name (1 to 3 words)")
    return parts[0], parts[1:]


def walk_subcommands(command: JSON, names: list[str]) -> tuple[list[JSON], list[tuple[str, int]]]:
    """The declared options of the subcommand ``names`` leads to, and the chain to it.

    LookupError when a name is not a subcommand (group) of the registered command,
    or when the path stops at a command or group that needs a subcommand.
    """
    declared: list[JSON] = list(command.get("options") or [])
    chain: list[tuple[str, int]] = []
    for name in names:
        wanted = (SUB_COMMAND_GROUP, SUB_COMMAND) if not chain else (SUB_COMMAND,)
        sub = next((o for o in declared if o.get("name") == name and o.get("type") in wanted), None)
        if sub is None:
            path = " ".join([command["name"], *(n for n, _ in chain)])
            raise LookupError(f"/{path} has no subcommand {name!r}")
        chain.append((name, int(sub["type"])))
        declared = list(sub.get("options") or [])
    if any(o.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in declared):
        path = " ".join([command["name"], *(n for n, _ in chain)])
        raise LookupError(f"/{path} cannot be used without a subcommand")
    return declared, chain


def nest(chain: list[tuple[str, int]], leaf: list[JSON]) -> list[JSON]:
    """Wrap the leaf options into their SUB_COMMAND (and SUB_COMMAND_GROUP) options."""
    options = leaf
    for name, kind in reversed(chain):
        options = [{"name": name, "type": kind, "options": options}]
    return options


def can_use(command: JSON, permissions: int) -> bool:
    """Whether Discord shows ``command`` to a member with ``permissions``.

    ``default_member_permissions`` None: everyone; "0": administrators only;
    otherwise the member needs every bit of it (administrators have all bits).
    """
    required = command.get("default_member_permissions")
    if required is None:
        return True
    needed = int(required)
    if needed == 0:
        return bool(permissions & ADMINISTRATOR)
    return permissions & needed == needed


def _choice_values(option: JSON) -> list[Any] | None:
    choices = option.get("choices")
    return None if not choices else [c.get("value") for c in choices]


def _check_range(option: JSON, value: float) -> None:
    low, high = option.get("min_value"), option.get("max_value")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"option {option['name']!r}: {value} is outside [{low}, {high}]")


class OptionBuilder:
    """Turns a test's ``{name: value}`` into Discord's option list, collecting ``resolved``.

    Files given to attachment options are kept in ``files`` (the caller stores
    them on the server so that their URLs serve the bytes).
    """

    def __init__(
        self, *, guild: Guild, member: Member, channel: Channel, base_url: str, upload_limit: int
    ) -> None:
        self.guild = guild
        self.member = member
        self.channel = channel
        self.base_url = base_url
        self.upload_limit = upload_limit
        self.resolved: dict[str, dict[str, JSON]] = {}
        self.files: list[RecordedFile] = []

    def build(
        self, declared: list[JSON], values: dict[str, Any], *, focused: str | None = None
    ) -> list[JSON]:
        """The option payloads, in declaration order (``focused``: an autocomplete request)."""
        by_name = {o["name"]: o for o in declared}
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; declared: {sorted(by_name)}")
        if focused is None:
            missing = [o["name"] for o in declared if o.get("required") and o["name"] not in values]
            if missing:
                raise ValueError(f"required option(s) missing: {missing}")
        elif focused not in by_name:
            raise ValueError(f"cannot focus unknown option {focused!r}")
        elif not by_name[focused].get("autocomplete"):
            raise ValueError(f"option {focused!r} has no autocomplete")
        result: list[JSON] = []
        for option in declared:
            name = option["name"]
            if name == focused:
                partial = values.get(name, "")
                result.append({"name": name, "type": option["type"], "value": str(partial), "focused": True})
            elif name in values:
                result.append(
                    {"name": name, "type": option["type"], "value": self.value(option, values[name])}
                )
        return result

    def value(self, option: JSON, value: Any) -> Any:
        """The wire value of one option (ValueError when Discord's client would not send it)."""
        kind = int(option["type"])
        converters = {
            STRING: self._string,
            INTEGER: self._integer,
            NUMBER: self._number,
            BOOLEAN: self._boolean,
            USER: self._user,
            CHANNEL: self._channel,
            ROLE: self._role,
            MENTIONABLE: self._mentionable,
            ATTACHMENT: self._attachment,
        }
        if kind not in converters:
            raise ValueError(f"option {option['name']!r} has type {kind}, which takes no value")
        return converters[kind](option, value)

    def _string(self, option: JSON, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"option {option['name']!r} is a string, not {value!r}")
        low = max(int(option.get("min_length") or 0), 1)
        high = int(option.get("max_length") or MAX_STRING_OPTION)
        if not low <= len(value) <= high:
            raise ValueError(f"option {option['name']!r}: length {len(value)} is outside [{low}, {high}]")
        self._check_choice(option, value)
        return value

    def _integer(self, option: JSON, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_SAFE_INT:
            raise ValueError(f"option {option['name']!r} is an integer, not {value!r}")
        _check_range(option, value)
        self._check_choice(option, value)
        return value

    def _number(self, option: JSON, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"option {option['name']!r} is a number, not {value!r}")
        _check_range(option, value)
        self._check_choice(option, value)
        return value

    def _boolean(self, option: JSON, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"option {option['name']!r} is a boolean, not {value!r}")
        return value

    def _check_choice(self, option: JSON, value: Any) -> None:
        allowed = _choice_values(option)
        if allowed is not None and value not in allowed:
            raise ValueError(f"option {option['name']!r}: {value!r} is not one of the choices {allowed}")

    def _user(self, option: JSON, value: Any) -> str:
        if not isinstance(value, Member) or value.user_id not in self.guild.members:
            raise ValueError(f"option {option['name']!r} takes a member of the guild, not {value!r}")
        member_data = value.payload(permissions=self.guild.permissions_of(value))
        for key in ("user", "deaf", "mute"):
            member_data.pop(key, None)
        self.resolved.setdefault("users", {})[str(value.user_id)] = user_payload(
            value.user_id, value.name, bot=value.bot
        )
        self.resolved.setdefault("members", {})[str(value.user_id)] = member_data
        return str(value.user_id)

    def _channel(self, option: JSON, value: Any) -> str:
        if not isinstance(value, Channel) or value.id not in self.guild.channels:
            raise ValueError(f"option {option['name']!r} takes a channel of the guild, not {value!r}")
        types = option.get("channel_types")
        if types and value.type not in types:
            raise ValueError(f"option {option['name']!r} takes channel types {types}, not {value.type}")
        data = value.payload()
        data["permissions"] = str(self.guild.permissions_of(self.member))  # the invoker's
        self.resolved.setdefault("channels", {})[str(value.id)] = data
        return str(value.id)

    def _role(self, option: JSON, value: Any) -> str:
        if not isinstance(value, Role) or value.id not in self.guild.roles:
            raise ValueError(f"option {option['name']!r} takes a role of the guild, not {value!r}")
        self.resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return str(value.id)

    def _mentionable(self, option: JSON, value: Any) -> str:
        if isinstance(value, Role):
            return self._role(option, value)
        return self._user(option, value)

    def _attachment(self, option: JSON, value: Any) -> str:
        try:
            upload: Upload = as_upload(value)
        except TypeError as exc:
            raise ValueError(f"option {option['name']!r}: {exc}") from None
        kept = recorded_file(upload, self.upload_limit)
        self.files.append(kept)
        payload = attachment_payload(self.base_url, self.channel.id, kept, ephemeral=True)
        self.resolved.setdefault("attachments", {})[str(kept.id)] = payload
        return str(kept.id)
