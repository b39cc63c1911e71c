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
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from . import validate
from .gateway import Gateway
from .rest import Rest
from .state import (
    JSON,
    Channel,
    Guild,
    Interaction,
    Member,
    RecordedMessage,
    Role,
    new_token,
    snowflake,
    user_payload,
)

log = logging.getLogger(__name__)

_OPTION_TYPES = {bool: 5, int: 4, float: 10, str: 3}


class LoopbackDiscord:
    """An in-memory Discord (REST + gateway) served by aiohttp on 127.0.0.1."""

    def __init__(
        self,
        *,
        bot_name: str = "LoopbackBot",
        heartbeat_interval_ms: int = 41250,
        upload_limit: int = validate.DEFAULT_ATTACHMENT_LIMIT,
    ) -> None:
        self.application_id = snowflake()
        self.bot_user_id = self.application_id
        self.bot_name = bot_name
        self.upload_limit = upload_limit
        self.guilds: dict[int, Guild] = {}
        self.messages: dict[int, list[RecordedMessage]] = {}
        self.commands: dict[int | None, list[JSON]] = {}  # None: global commands
        self.interactions: dict[int, Interaction] = {}
        self.unhandled: list[str] = []
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
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        Rest(self).add_routes(app)
        return app

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
        guild = Guild(id=guild_id, name=name, owner_id=self.bot_user_id)
        guild.roles[guild_id] = Role(id=guild_id, name="@everyone", permissions=0x0000_0000_0006_4C40)
        guild.members[self.bot_user_id] = Member(self.bot_user_id, self.bot_name, bot=True)
        for position, channel_name in enumerate(channels):
            self.add_channel(guild, channel_name, position=position)
        self.guilds[guild_id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str, *, position: int = 0) -> Channel:
        channel = Channel(id=snowflake(), guild_id=guild.id, name=name, position=position)
        guild.channels[channel.id] = channel
        self.messages.setdefault(channel.id, [])
        return channel

    def add_role(self, guild: Guild, name: str, permissions: int = 0) -> Role:
        role = Role(id=snowflake(), name=name, permissions=permissions, position=len(guild.roles))
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
        for inter in self.interactions.values():
            if inter.token == token:
                return inter
        return None

    def command(self, name: str, guild: Guild | None = None) -> JSON | None:
        """A registered command by name (guild commands first, then global)."""
        scopes = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name:
                    return cmd
        return None

    # -- interactions ---------------------------------------------------------

    def _options(self, command: JSON | None, options: dict[str, Any]) -> list[JSON]:
        declared = {o["name"]: o for o in (command or {}).get("options", [])}
        result = []
        for name, value in options.items():
            kind = declared.get(name, {}).get("type") or _OPTION_TYPES.get(type(value), 3)
            result.append({"name": name, "type": kind, "value": value})
        return result

    async def send_interaction(
        self,
        guild: Guild,
        member: Member,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        channel: Channel | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch a slash command INTERACTION_CREATE (type 2) as ``member``.

        The command must be registered (``tree.sync``) in the guild or globally,
        as on Discord.  Returns the :class:`Interaction` record; await its
        ``wait_response()`` for the bot's answer.
        """
        registered = self.command(command, guild)
        if registered is None:
            raise LookupError(f"/{command} is not registered for guild {guild.id} nor globally")
        data: JSON = {
            "id": registered["id"],
            "name": command,
            "type": 1,
            "options": self._options(registered, options or {}),
        }
        if registered.get("guild_id"):
            data["guild_id"] = registered["guild_id"]
        channel = channel or next(iter(guild.channels.values()))
        return await self._dispatch_interaction(
            2, data, guild, member, channel, attachment_size_limit=attachment_size_limit, locale=locale
        )

    async def send_component(
        self,
        message: RecordedMessage,
        member: Member,
        custom_id: str,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch a component INTERACTION_CREATE (type 3): ``member`` clicks a button
        (or picks ``values`` in a select) with ``custom_id`` on a recorded ``message``.

        Raises LookupError when the message has no such component, as Discord
        offers no way to click a component that is not there.
        """
        if not _has_custom_id(message.components, custom_id):
            raise LookupError(f"message {message.id} has no component with custom_id {custom_id!r}")
        channel = self.find_channel(message.channel_id)
        if channel is None:
            raise LookupError(f"message {message.id} is not in a known channel")
        guild = self.guilds[channel.guild_id]
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return await self._dispatch_interaction(
            3, data, guild, member, channel, message=message.data, locale=locale
        )

    async def _dispatch_interaction(
        self,
        kind: int,
        data: JSON,
        guild: Guild,
        member: Member,
        channel: Channel,
        *,
        message: JSON | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Build the full INTERACTION_CREATE payload, record it and dispatch it.

        discord.py kills the client on a payload without ``id``, ``application_id``,
        ``type``, ``token``, ``version``, ``attachment_size_limit`` or
        ``member.user/roles/flags``, so all of them are always present.
        """
        limit = attachment_size_limit or self.upload_limit
        inter_id = snowflake()
        token = new_token()
        payload: JSON = {
            "id": str(inter_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": member.payload(permissions=guild.permissions_of(member)),
            "token": token,
            "version": 1,
            "app_permissions": str(guild.permissions_of(guild.members[self.bot_user_id])),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": limit,
        }
        if message is not None:
            payload["message"] = message
        inter = Interaction(
            id=inter_id,
            token=token,
            type=kind,
            guild_id=guild.id,
            channel_id=channel.id,
            user_id=member.user_id,
            payload=payload,
            attachment_size_limit=limit,
        )
        self.interactions[inter_id] = inter
        if await self.gateway.dispatch("INTERACTION_CREATE", payload) == 0:
            raise RuntimeError("no gateway session is connected")
        return inter


def _has_custom_id(components: list[JSON], custom_id: str) -> bool:
    """Whether a component tree (rows, containers, sections) holds ``custom_id``."""
    for component in components:
        if component.get("custom_id") == custom_id:
            return True
        children = list(component.get("components") or [])
        if component.get("accessory"):
            children.append(component["accessory"])
        if _has_custom_id(children, custom_id):
            return True
    return False
