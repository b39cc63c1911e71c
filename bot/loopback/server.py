"""``LoopbackDiscord``: a fake Discord on 127.0.0.1 for driving the real discord.py client.

Usage::

    server = LoopbackDiscord()
    guild = server.add_guild("Test guild")
    alice = server.add_member(guild, "alice")
    await server.start()
    with point_discord_at(server):          # bot.loopback.harness
        ...  # run a discord.Client with any token
    handle = await server.send_interaction(guild, alice, "hello", {"who": "me"})
    response = await handle.wait_response()
    await server.close()

The members' side (slash commands with subcommands and attachments, autocomplete,
context menus, components, modals) is in :mod:`bot.loopback.interactions`; direct messages
(the bot's DMs, members who closed theirs, buttons clicked in a DM) in :mod:`bot.loopback.direct`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from . import validate
from .components import custom_ids
from .direct import DirectMessages, DMChannel
from .files import UploadLike, as_upload, recorded_file
from .gateway import Gateway
from .interactions import InteractionSender
from .messages import member_message, without_content
from .rest import Rest
from .state import (
    EVERYONE_PERMISSIONS,
    JSON,
    Channel,
    Guild,
    Interaction,
    Member,
    RecordedFile,
    RecordedMessage,
    Role,
    snowflake,
    user_payload,
)
from .waiting import wait_for

log = logging.getLogger(__name__)


#: View Channel, Send Messages, Embed Links, Attach Files, Read Message History, Use External Emojis.
BOT_INVITE_PERMISSIONS = 0x400 | 0x800 | 0x4000 | 0x8000 | 0x10000 | 0x40000


class LoopbackDiscord(DirectMessages, InteractionSender):
    """An in-memory Discord (REST + gateway) served by aiohttp on 127.0.0.1.

    ``upload_limit``: the bot's upload limit (413 over it); ``member_upload_limit``:
    the largest file a member can attach (default: ``upload_limit``);
    ``ack_deadline_s``: the time a bot has for the first callback of an
    interaction (Discord: 3 s); ``token_lifetime_s``: how long the interaction
    webhook works (Discord: 15 minutes); ``clock``: the seconds both are measured
    in (a test can pass one it advances by hand).
    """

    def __init__(
        self,
        *,
        bot_name: str = "LoopbackBot",
        heartbeat_interval_ms: int = 41250,
        upload_limit: int = validate.DEFAULT_ATTACHMENT_LIMIT,
        member_upload_limit: int | None = None,
        ack_deadline_s: float = 3.0,
        token_lifetime_s: float = 15 * 60.0,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.application_id = snowflake()
        self.bot_user_id = self.application_id
        self.bot_name = bot_name
        self.upload_limit = upload_limit
        self.member_upload_limit = upload_limit if member_upload_limit is None else member_upload_limit
        self.ack_deadline_s = ack_deadline_s
        self.token_lifetime_s = token_lifetime_s
        self.clock = clock  # the ack deadline and the token lifetime run on it
        self.token = token  # None: any bot token is accepted
        self.guilds: dict[int, Guild] = {}
        self.messages: dict[int, list[RecordedMessage]] = {}  # channel id (a DM's too) -> messages
        self.dm_channels: dict[int, DMChannel] = {}  # user id -> the bot's DM channel with them
        self.commands: dict[int | None, list[JSON]] = {}  # None: global commands
        self.interactions: dict[int, Interaction] = {}
        self.ephemeral_files: dict[int, tuple[int, RecordedFile]] = {}  # id -> (channel id, file)
        self.unhandled: list[str] = []
        self._tokens: dict[str, Interaction] = {}
        self.gateway = Gateway(self, heartbeat_interval_ms)
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return f"{self.http_url}/api/v10"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._check_token])
        app.router.add_get("/gateway", self.gateway.handle)
        Rest(self).add_routes(app)
        return app

    @web.middleware
    async def _check_token(self, request: web.Request, handler):
        """With ``token`` set, bot routes need ``Authorization: Bot <token>`` (401 otherwise, as on
        Discord); interaction callbacks and webhooks authenticate by their own token."""
        path = request.path
        exempt = path.startswith(("/api/v10/webhooks/", "/api/v10/interactions/")) or not path.startswith(
            "/api/"
        )
        if self.token is None or exempt or request.headers.get("Authorization") == f"Bot {self.token}":
            return await handler(request)
        from .responses import json_response

        return json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port (``self.port``)."""
        self._runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("loopback discord on %s", self.http_url)

    async def close(self) -> None:
        """Close every websocket and stop serving."""
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LoopbackDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- world building -------------------------------------------------------

    def add_guild(self, name: str = "Loopback guild", *, channels: tuple[str, ...] = ("general",)) -> Guild:
        """A new guild with an @everyone role, the bot as member, and text channels."""
        guild_id = snowflake()
        guild = Guild(id=guild_id, name=name, owner_id=snowflake())  # someone else owns it, as usually
        guild.roles[guild_id] = Role(id=guild_id, name="@everyone", permissions=EVERYONE_PERMISSIONS)
        # the bot's own role carries the permissions it was invited with
        bot_role = Role(id=snowflake(), name=self.bot_name, permissions=BOT_INVITE_PERMISSIONS, position=1)
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot_user_id] = Member(
            self.bot_user_id, self.bot_name, roles=[bot_role.id], bot=True
        )
        for position, channel_name in enumerate(channels):
            self.add_channel(guild, channel_name, position=position)
        self.guilds[guild_id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str, *, position: int = 0) -> Channel:
        channel = Channel(id=snowflake(), guild_id=guild.id, name=name, position=position)
        guild.channels[channel.id] = channel
        self.messages.setdefault(channel.id, [])
        return channel

    def add_role(self, guild: Guild, name: str, permissions: Any = 0) -> Role:
        """A new role; ``permissions`` is an int or a ``discord.Permissions`` (its ``.value``).

        An operator role: ``add_role(guild, "Operator", discord.Permissions(manage_guild=True))``
        or ``permissions=state.MANAGE_GUILD`` (0x20).
        """
        value = int(getattr(permissions, "value", permissions))
        role = Role(id=snowflake(), name=name, permissions=value, position=len(guild.roles))
        guild.roles[role.id] = role
        return role

    def add_member(self, guild: Guild, name: str, *, roles: list[Role] | None = None) -> Member:
        member = Member(user_id=snowflake(), name=name, roles=[r.id for r in roles or []])
        guild.members[member.user_id] = member
        return member

    # -- payloads -------------------------------------------------------------

    def bot_user_payload(self) -> JSON:
        return user_payload(self.bot_user_id, self.bot_name, bot=True)

    def application_payload(self) -> JSON:
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user_payload(),
            "owner": user_payload(snowflake(), "owner"),
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "tags": [],
        }

    def ready_payload(self, session_id: str) -> JSON:
        return {
            "v": 10,
            "user": self.bot_user_payload(),
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session_id,
            "resume_gateway_url": self.ws_url,
            "shard": [0, 1],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
        }

    # -- lookups and records --------------------------------------------------

    def find_channel(self, channel_id: int) -> Channel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return None

    def find_message(self, message_id: int) -> RecordedMessage | None:
        for messages in self.messages.values():
            for message in messages:
                if message.id == message_id:
                    return message
        return None

    def record_message(self, message: RecordedMessage) -> None:
        self.messages.setdefault(message.channel_id, []).append(message)

    def delete_message(self, message: RecordedMessage) -> None:
        bucket = self.messages.get(message.channel_id, [])
        if message in bucket:
            bucket.remove(message)

    def interaction_by_token(self, token: str) -> Interaction | None:
        return self._tokens.get(token)

    def command(self, name: str, guild: Guild | None = None, *, kind: int | None = None) -> JSON | None:
        """A registered command by name (guild commands first, then global).

        ``kind``: 1 slash, 2 user and 3 message context menu (None: any type).
        """
        scopes = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and (kind is None or int(cmd.get("type", 1)) == kind):
                    return cmd
        return None

    def channel_messages(
        self, channel: Channel | int, *, interactions: bool = False
    ) -> list[RecordedMessage]:
        """Messages the bot posted in ``channel``, oldest first.

        Only those posted through the channel (progress messages, preview grids...)
        unless ``interactions``, which adds interaction responses and followups.
        """
        channel_id = channel if isinstance(channel, int) else channel.id
        return [
            m
            for m in self.messages.get(channel_id, [])
            if m.author_id == self.bot_user_id and (interactions or "webhook_id" not in m.data)
        ]

    def all_messages(self) -> list[RecordedMessage]:
        """Every recorded message of every channel."""
        return [m for bucket in self.messages.values() for m in bucket]

    def messages_with_component(self, custom_id_prefix: str) -> list[RecordedMessage]:
        """Recorded messages with a component whose custom_id starts with the prefix."""
        return [
            m
            for m in self.all_messages()
            if any(cid.startswith(custom_id_prefix) for cid in custom_ids(m.components))
        ]

    async def wait_for_message(
        self,
        predicate: Callable[[RecordedMessage], bool],
        timeout: float = 5.0,
        what: str = "a recorded message that matches",
    ) -> RecordedMessage:
        """The first recorded message (posted or edited) for which ``predicate`` holds.

        :class:`~bot.loopback.waiting.WaitTimeout` (an ``asyncio.TimeoutError``) after ``timeout``.
        """
        return await wait_for(
            lambda: next((m for m in self.all_messages() if predicate(m)), None), timeout, what
        )

    # -- members posting ------------------------------------------------------

    async def post_message(
        self,
        channel: Channel,
        member: Member,
        content: str = "",
        files: Sequence[UploadLike] = (),
        *,
        dispatch: bool = True,
    ) -> RecordedMessage:
        """``member`` posts a message (with attachments) in ``channel``.

        ValueError for what Discord's client refuses: an empty message, content over
        2000 characters, more than 10 files, a file over ``member_upload_limit``.
        With ``dispatch`` the bot gets a MESSAGE_CREATE (content, embeds and
        attachments blanked unless it identified with the MESSAGE_CONTENT intent).
        """
        guild = self.guilds[channel.guild_id]
        if member.user_id not in guild.members:
            raise LookupError(f"{member.name} is not a member of guild {guild.id}")
        if len(content) > validate.MAX_CONTENT:
            raise ValueError(f"content is {len(content)} characters, over {validate.MAX_CONTENT}")
        if len(files) > 10:
            raise ValueError("a message takes at most 10 attachments")
        kept = [recorded_file(as_upload(f), self.member_upload_limit) for f in files]
        if not content and not kept:
            raise ValueError("cannot send an empty message")
        message = member_message(
            base_url=self.http_url,
            channel_id=channel.id,
            guild_id=guild.id,
            author=user_payload(member.user_id, member.name, bot=member.bot),
            content=content,
            files=kept,
        )
        self.record_message(message)
        if dispatch:
            event = message.data if self.gateway.message_content_intent else without_content(message.data)
            member_data = {k: v for k, v in member.payload().items() if k != "user"}
            await self.gateway.dispatch("MESSAGE_CREATE", {**event, "member": member_data})
        return message
