"""Direct messages on the loopback stand-in.

The bot opens a DM channel with a member (``POST /users/@me/channels``, which Discord answers
whatever the member's settings) and posts in it like in any channel; the messages are recorded
under the DM channel's id (:meth:`DirectMessages.dm_messages`). A member who does not take
direct messages from the server's members (``member.dms_closed = True``; Discord: Privacy
Settings) gets none: the post is refused with 403, code 50007 "Cannot send messages to this user",
as it is for a user who shares no server with the bot. Members click the buttons of a DM like
those of a channel message: the interaction comes without a guild (context 1, the bot's DM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .messages import read_body
from .responses import error, invalid, json_response
from .state import JSON, Channel, Guild, Interaction, Member, RecordedMessage, snowflake, user_payload

if TYPE_CHECKING:
    from .server import LoopbackDiscord

API = "/api/v10"
CANNOT_MESSAGE_USER = 50007
INVALID_RECIPIENTS = 50033
#: What a bot may do in its DM with a user (Discord's ``app_permissions`` there): view, send, embed
#: links, attach files, read history, mention everyone, external emojis.
DM_APP_PERMISSIONS = 0x400 | 0x800 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000


@dataclass
class DMChannel:
    """The bot's DM channel with one user (type 1)."""

    id: int
    recipient_id: int
    recipient_name: str

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user_payload(self.recipient_id, self.recipient_name)],
        }


class DirectMessages:
    """Mixin of :class:`~bot.loopback.server.LoopbackDiscord`: DM channels and who takes DMs."""

    dm_channels: dict[int, DMChannel]  # user id -> the bot's DM channel with them

    def find_user(self: LoopbackDiscord, user_id: int) -> Member | None:
        """The user as a member of some guild of the stand-in (None: no such user here)."""
        return next((g.members[user_id] for g in self.guilds.values() if user_id in g.members), None)

    def dm_channel(self: LoopbackDiscord, member: Member) -> DMChannel:
        """The bot's DM channel with ``member`` (opened on first use, the same one afterwards)."""
        channel = self.dm_channels.get(member.user_id)
        if channel is None:
            channel = DMChannel(snowflake(), member.user_id, member.name)
            self.dm_channels[member.user_id] = channel
            self.messages.setdefault(channel.id, [])
        return channel

    def find_dm_channel(self: LoopbackDiscord, channel_id: int) -> DMChannel | None:
        return next((c for c in self.dm_channels.values() if c.id == channel_id), None)

    def takes_dms(self: LoopbackDiscord, user_id: int) -> bool:
        """Whether the user takes DMs from the bot: a member of a guild it shares with the bot who
        has not closed their DMs there."""
        return any(
            not g.members[user_id].dms_closed and not g.members[user_id].bot
            for g in self.guilds.values()
            if user_id in g.members and self.bot_user_id in g.members
        )

    def dm_messages(self: LoopbackDiscord, member: Member) -> list[RecordedMessage]:
        """What the bot sent ``member`` in direct messages, oldest first ([] when none)."""
        channel = self.dm_channels.get(member.user_id)
        return [] if channel is None else self.channel_messages(channel.id)

    def place_of(
        self: LoopbackDiscord, channel_id: int, member: Member
    ) -> tuple[Guild | None, Channel | DMChannel]:
        """Where ``member`` acts on something in ``channel_id``: a guild channel, or their own DM
        with the bot (guild None). LookupError for a channel they cannot see."""
        channel = self.find_channel(channel_id)
        if channel is not None:
            return self.guilds[channel.guild_id], channel
        dm = self.find_dm_channel(channel_id)
        if dm is None or dm.recipient_id != member.user_id:
            raise LookupError(f"channel {channel_id} is neither a guild channel nor {member.name}'s DM")
        return None, dm


def dm_context(member: Member) -> JSON:
    """What an INTERACTION_CREATE from the bot's DM has instead of a guild and a member."""
    return {
        "user": user_payload(member.user_id, member.name, bot=member.bot),
        "app_permissions": str(DM_APP_PERMISSIONS),
        "authorizing_integration_owners": {"0": "0"},  # a guild install, used in the bot's DM
        "context": 1,
    }


def cannot_message_user() -> web.Response:
    """Discord's answer to a message for a user who takes no DMs from the bot."""
    return error(403, CANNOT_MESSAGE_USER, "Cannot send messages to this user")


class DirectRoutes:
    """The REST side of DMs (a base of :class:`~bot.loopback.rest.Rest`)."""

    s: LoopbackDiscord

    def add_direct_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{API}/users/@me/channels", self.open_dm)

    async def open_dm(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        try:
            user_id = int(body.get("recipient_id"))
        except (TypeError, ValueError):
            return invalid(
                {"recipient_id": {"_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "required"}]}}
            )
        member = self.s.find_user(user_id)
        if member is None or member.user_id == self.s.bot_user_id:
            return error(400, INVALID_RECIPIENTS, "Invalid Recipient(s)")
        return json_response(self.s.dm_channel(member).payload())


def interaction_place(
    server: LoopbackDiscord, interaction: Interaction
) -> tuple[Guild | None, Channel | DMChannel]:
    """Where an earlier interaction happened (its modal is submitted there too)."""
    if interaction.guild_id is None:
        dm = server.find_dm_channel(interaction.channel_id)
        assert dm is not None, f"interaction {interaction.id} has no guild and no DM channel"
        return None, dm
    guild = server.guilds[int(interaction.guild_id)]
    return guild, guild.channels[interaction.channel_id]
