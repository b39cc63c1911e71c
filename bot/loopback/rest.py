"""REST routes of the loopback Discord stand-in (the subset discord.py needs).

Every route validates like Discord (see :mod:`validate`) and records what it
receives on the :class:`~bot.loopback.server.LoopbackDiscord`.  Unknown routes
answer 404 JSON and are logged and recorded in ``server.unhandled``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from . import validate
from .direct import DirectRoutes, DMChannel, cannot_message_user
from .messages import new_message, resolve_files, without_content
from .responses import error, invalid, json_response, unknown_message
from .state import JSON, RecordedMessage, snowflake
from .webhooks import API, InteractionRoutes

__all__ = ["API", "Rest", "error", "invalid", "json_response"]

log = logging.getLogger(__name__)


class Rest(DirectRoutes, InteractionRoutes):
    """Route handlers bound to one stand-in."""

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{API}/users/@me", self.me)
        r.add_get(f"{API}/gateway", self.gateway)
        r.add_get(f"{API}/gateway/bot", self.gateway_bot)
        r.add_get(f"{API}/oauth2/applications/@me", self.application)
        for base in (f"{API}/applications/{{app}}", f"{API}/applications/{{app}}/guilds/{{guild}}"):
            r.add_get(f"{base}/commands", self.get_commands)
            r.add_put(f"{base}/commands", self.put_commands)
            r.add_post(f"{base}/commands", self.post_command)
        self.add_interaction_routes(app)
        self.add_direct_routes(app)
        r.add_post(f"{API}/channels/{{cid}}/messages", self.create_message)
        chan_msg = f"{API}/channels/{{cid}}/messages/{{mid}}"
        r.add_get(chan_msg, self.get_message)
        r.add_patch(chan_msg, self.edit_message)
        r.add_delete(chan_msg, self.delete_message)
        r.add_get("/attachments/{cid}/{aid}/{filename}", self.attachment)
        r.add_get("/ephemeral-attachments/{cid}/{aid}/{filename}", self.ephemeral_attachment)
        r.add_route("*", "/{tail:.*}", self.unhandled)

    # -- identity and gateway -------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return json_response(self.s.bot_user_payload())

    async def gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.s.ws_url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.s.ws_url, "shards": 1, "session_start_limit": limit})

    async def application(self, request: web.Request) -> web.Response:
        return json_response(self.s.application_payload())

    # -- application commands -------------------------------------------------

    def _command_scope(self, request: web.Request) -> tuple[int | None, web.Response | None]:
        if int(request.match_info["app"]) != self.s.application_id:
            return None, error(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        if guild is None:
            return None, None
        if int(guild) not in self.s.guilds:
            return None, error(403, 50001, "Missing Access")
        return int(guild), None

    def _stored_command(self, guild_id: int | None, cmd: JSON, old: dict[str, JSON]) -> JSON:
        kind = int(cmd.get("type", 1))
        previous = old.get(f"{kind}:{cmd['name']}")
        stored = {
            "type": kind,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            **cmd,
        }
        stored["id"] = previous["id"] if previous else str(snowflake())
        if stored["default_member_permissions"] is not None:  # Discord answers it as a string
            stored["default_member_permissions"] = str(int(stored["default_member_permissions"]))
        stored["application_id"] = str(self.s.application_id)
        stored["version"] = str(snowflake())
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    async def get_commands(self, request: web.Request) -> web.Response:
        guild_id, err = self._command_scope(request)
        if err:
            return err
        return json_response(self.s.commands.get(guild_id, []))

    async def put_commands(self, request: web.Request) -> web.Response:
        guild_id, err = self._command_scope(request)
        if err:
            return err
        payload = await request.json()
        errors = validate.check_commands(payload)
        if errors:
            return invalid(errors)
        old = {f"{c['type']}:{c['name']}": c for c in self.s.commands.get(guild_id, [])}
        self.s.commands[guild_id] = [self._stored_command(guild_id, c, old) for c in payload]
        return json_response(self.s.commands[guild_id])

    async def post_command(self, request: web.Request) -> web.Response:
        guild_id, err = self._command_scope(request)
        if err:
            return err
        payload = await request.json()
        errors = validate.check_command(payload)
        if errors:
            return invalid(errors)
        current = self.s.commands.setdefault(guild_id, [])
        old = {f"{c['type']}:{c['name']}": c for c in current}
        stored = self._stored_command(guild_id, payload, old)
        current[:] = [c for c in current if c["id"] != stored["id"]] + [stored]
        if len(current) > validate.MAX_COMMANDS:
            current.pop()
            return error(400, 30032, "Maximum number of application commands reached (100)")
        return json_response(stored, status=201)

    # -- channel messages -----------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["cid"])
        channel = self.s.find_channel(cid) or self.s.find_dm_channel(cid)
        if channel is None:
            return error(404, 10003, "Unknown Channel")
        if isinstance(channel, DMChannel) and not self.s.takes_dms(channel.recipient_id):
            return cannot_message_user()
        checked = await self._new_message_body(request, self.s.upload_limit)
        if isinstance(checked, web.Response):
            return checked
        body, uploads = checked
        message = new_message(
            base_url=self.s.http_url,
            channel_id=channel.id,
            guild_id=getattr(channel, "guild_id", None),  # None in a DM
            author=self.s.bot_user_payload(),
            payload=body,
            files=resolve_files(body, uploads, []),
        )
        self.s.record_message(message)
        return json_response(message.data)

    def _channel_message(self, request: web.Request) -> RecordedMessage | None:
        """A message of the channel the bot can reach (ephemeral ones are not in the channel)."""
        message = self.s.find_message(int(request.match_info["mid"]))
        if message is None or message.channel_id != int(request.match_info["cid"]):
            return None
        return None if message.visible_to is not None else message

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return unknown_message()
        if message.author_id != self.s.bot_user_id and not self.s.gateway.message_content_intent:
            return json_response(without_content(message.data))
        return json_response(message.data)

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return unknown_message()
        if message.author_id != self.s.bot_user_id:
            return error(403, 50005, "Cannot edit a message authored by another user")
        return await self._edit(request, message, self.s.upload_limit)

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return unknown_message()
        self.s.delete_message(message)
        return web.Response(status=204)

    async def attachment(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["aid"])
        for message in self.s.messages.get(int(request.match_info["cid"]), []):
            for f in message.files:
                if f.id == wanted:
                    return _file_response(f.data, f.content_type)
        return error(404, 0, "404: Not Found")

    async def ephemeral_attachment(self, request: web.Request) -> web.Response:
        """Files members gave to a command's attachment option."""
        kept = self.s.ephemeral_files.get(int(request.match_info["aid"]))
        if kept is None or kept[0] != int(request.match_info["cid"]):
            return error(404, 0, "404: Not Found")
        return _file_response(kept[1].data, kept[1].content_type)

    async def unhandled(self, request: web.Request) -> web.Response:
        entry = f"{request.method} {request.path}"
        log.warning("loopback discord: unhandled route %s", entry)
        self.s.unhandled.append(entry)
        return error(404, 0, "404: Not Found")


def _file_response(data: bytes, content_type: str | None) -> web.Response:
    return web.Response(body=data, content_type=content_type or "application/octet-stream")
