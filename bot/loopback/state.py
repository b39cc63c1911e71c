"""In-memory state of the loopback Discord stand-in, and Discord-shaped payloads.

Everything a test may want to assert on lives here: guilds with their channels,
roles and members; every message posted (content, embeds, components and the
bytes of each attachment); registered application commands; and each dispatched
interaction with the responses the bot gave to it.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .waiting import WaitTimeout, wait_for

JSON = dict[str, Any]

_EPOCH_MS = 1420070400000

ADMINISTRATOR = 0x8
MANAGE_GUILD = 0x20
EVERYONE_PERMISSIONS = 0x0000_0000_0006_4C40
ALL_PERMISSIONS = (1 << 53) - 1
_counter = itertools.count(1)


def snowflake() -> int:
    """A fresh, increasing Discord snowflake (timestamp-based, unique per process)."""
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    return ((now_ms - _EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    """The current time as Discord's ISO 8601 timestamps."""
    return datetime.now(timezone.utc).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> JSON:
    """A Discord user object."""
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "verified": True,
        "mfa_enabled": False,
    }


@dataclass
class Role:
    """A guild role; a guild's @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int = 0
    position: int = 0

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Member:
    """A guild member: a user plus the ids of its roles. ``dms_closed``: the member takes no direct
    messages from this server's members (the bot's DMs are refused with 50007)."""

    user_id: int
    name: str
    roles: list[int] = field(default_factory=list)
    bot: bool = False
    joined_at: str = field(default_factory=iso_now)
    dms_closed: bool = False

    def payload(self, permissions: int | None = None) -> JSON:
        data: JSON = {
            "user": user_payload(self.user_id, self.name, bot=self.bot),
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "nick": None,
            "avatar": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class Channel:
    """A guild text channel."""

    id: int
    guild_id: int
    name: str
    type: int = 0
    position: int = 0

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "type": self.type,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class Guild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    locale: str = "en-US"  #: the community's language (preferred_locale): what channel posts use

    def permissions_of(self, member: Member) -> int:
        """The member's guild-level permissions (all of them for the owner or an admin)."""
        perms = self.roles[self.id].permissions if self.id in self.roles else 0
        for role_id in member.roles:
            if role_id in self.roles:
                perms |= self.roles[role_id].permissions
        if member.user_id == self.owner_id or perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def payload(self) -> JSON:
        """The GUILD_CREATE payload (available guild with everything in it)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": self.locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": iso_now(),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [],
            "members": [m.payload() for m in self.members.values()],
            "channels": [c.payload() for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class RecordedFile:
    """One uploaded attachment, with its bytes."""

    id: int
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass
class RecordedMessage:
    """A message (posted by the bot or a member); ``data`` is the payload served back.

    ``visible_to`` is the one user who sees an ephemeral message (None: everyone).
    """

    id: int
    channel_id: int
    data: JSON
    files: list[RecordedFile] = field(default_factory=list)
    edits: int = 0
    visible_to: int | None = None

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def content(self) -> str:
        return self.data.get("content") or ""

    @property
    def embeds(self) -> list[JSON]:
        return self.data.get("embeds") or []

    @property
    def components(self) -> list[JSON]:
        return self.data.get("components") or []

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    def file(self, filename: str) -> RecordedFile:
        """The attachment called ``filename`` (KeyError when absent)."""
        for f in self.files:
            if f.filename == filename:
                return f
        raise KeyError(filename)


@dataclass
class Interaction:
    """A dispatched interaction and everything the bot answered to it."""

    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user_id: int
    payload: JSON
    attachment_size_limit: int
    response: JSON | None = None
    original: RecordedMessage | None = None
    followups: list[RecordedMessage] = field(default_factory=list)
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    dispatched_at: float = field(default_factory=time.monotonic)
    ack_s: float | None = None  # seconds from dispatch to the first (accepted or late) callback
    late_callbacks: int = 0  # callbacks refused with 10062 because the ack deadline had passed
    focused_type: int | None = None  # autocomplete: the type of the focused option

    @property
    def data(self) -> JSON:
        """The ``data`` of the dispatched INTERACTION_CREATE."""
        return self.payload.get("data") or {}

    @property
    def response_type(self) -> int | None:
        return None if self.response is None else int(self.response["type"])

    @property
    def choices(self) -> list[JSON]:
        """The autocomplete choices the bot answered (callback type 8); [] before or otherwise."""
        if self.response_type != 8:
            return []
        return list((self.response or {}).get("data", {}).get("choices") or [])

    @property
    def modal(self) -> JSON | None:
        """The modal the bot opened (callback type 9: custom_id, title, components), else None."""
        if self.response_type != 9:
            return None
        return (self.response or {}).get("data") or {}

    async def wait_response(self, timeout: float = 5.0) -> JSON:
        """Wait until the bot calls the interaction callback; return its payload."""
        try:
            await asyncio.wait_for(self.responded.wait(), timeout)
        except asyncio.TimeoutError:
            name = self.data.get("name") or self.data.get("custom_id") or "an interaction"
            raise WaitTimeout(f"the bot's callback to {name}", timeout) from None
        assert self.response is not None
        return self.response

    def answer_message(self, final: bool = False) -> RecordedMessage | None:
        """The message answering this interaction as a member sees it: the latest followup, else the
        original once it is no longer "thinking" (flag 128); ``final``: once it also has an embed."""
        if self.followups:
            return self.followups[-1]
        original = self.original
        if original is not None and not original.flags & 128 and (not final or original.embeds):
            return original
        return None

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[RecordedMessage]:
        """Wait until at least ``count`` followup messages arrived."""
        await wait_for(lambda: len(self.followups) >= count, timeout, f"{count} followups of an interaction")
        return self.followups


def new_token() -> str:
    """An interaction token (opaque, URL-safe)."""
    return "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
