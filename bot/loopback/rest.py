"""REST routes of the loopback Discord stand-in (the subset discord.py needs).

Every route validates like Discord (see :mod:`validate`) and records what it
receives on the :class:`~bot.loopback.server.LoopbackDiscord`.  Unknown routes
answer 404 JSON and are logged and recorded in ``server.unhandled``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import validate
from .messages import apply_edit, merged_view, new_message, read_body, resolve_files
from .state import JSON, Interaction, RecordedMessage, snowflake

if TYPE_CHECKING:
    from .server import LoopbackDiscord

log = logging.getLogger(__name__)
API = "/api/v10"


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response with a Content-Type of exactly ``application/json``.

    discord.py only parses a body as JSON when the header is exactly that (aiohttp's
    ``web.json_response`` appends ``; charset=utf-8``).
    """
    body = json.dumps(data).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


def error(status: int, code: int, message: str, errors: JSON | None = None) -> web.Response:
    """A Discord-shaped JSON error response."""
    body: JSON = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return json_response(body, status=status)


def empty_message() -> web.Response:
    """Discord's answer to a message with nothing in it."""
    return error(400, 50006, "Cannot send an empty message")


def invalid(errors: JSON) -> web.Response:
    return json_response(validate.invalid_form_body(errors), status=400)


class Rest:
    """Route handlers bound to one stand-in."""

    def __init__(self, server: LoopbackDiscord) -> None:
        self.s = server

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
        r.add_post(f"{API}/interactions/{{iid}}/{{token}}/callback", self.callback)
        r.add_post(f"{API}/webhooks/{{app}}/{{token}}", self.followup)
        hook_msg = f"{API}/webhooks/{{app}}/{{token}}/messages/{{mid}}"
        r.add_get(hook_msg, self.get_hook_message)
        r.add_patch(hook_msg, self.edit_hook_message)
        r.add_delete(hook_msg, self.delete_hook_message)
        r.add_post(f"{API}/channels/{{cid}}/messages", self.create_message)
        chan_msg = f"{API}/channels/{{cid}}/messages/{{mid}}"
        r.add_get(chan_msg, self.get_message)
        r.add_patch(chan_msg, self.edit_message)
        r.add_delete(chan_msg, self.delete_message)
        r.add_get("/attachments/{cid}/{aid}/{filename}", self.attachment)
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

    # -- interactions ---------------------------------------------------------

    def _check_files(self, uploads: list[Any], limit: int) -> web.Response | None:
        for _index, _name, data, _ctype in uploads:
            if len(data) > limit:
                return json_response(validate.too_large(), status=413)
        return None

    async def callback(self, request: web.Request) -> web.Response:
        inter = self.s.interactions.get(int(request.match_info["iid"]))
        if inter is None or inter.token != request.match_info["token"]:
            return error(404, 10062, "Unknown interaction")
        if inter.response is not None:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = await read_body(request)
        kind = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        if kind not in (1, 4, 5, 6, 7, 8, 9, 10, 12):
            return invalid(validate.bad_response_type(kind))
        if kind in (6, 7) and inter.type not in (3, 5):
            return invalid(validate.bad_response_type(kind, component_only=True))
        too_big = self._check_files(uploads, inter.attachment_size_limit)
        if too_big:
            return too_big
        message: RecordedMessage | None = None
        if kind == 4:
            errors = validate.check_message(data)
            if errors:
                return invalid({"data": errors})
            if validate.is_empty_message(data) and not uploads:
                return empty_message()
            message = self._interaction_message(inter, data, uploads)
        elif kind == 5:
            message = self._interaction_message(inter, {"flags": data.get("flags", 0)}, [], loading=True)
        elif kind in (6, 7):
            target = self.s.find_message(int(inter.payload.get("message", {}).get("id", 0)))
            if target is not None and kind == 7:
                errors = validate.check_message(merged_view(target, data))
                if errors:
                    return invalid({"data": errors})
                apply_edit(target, data, uploads, self.s.http_url)
            message = target
        elif kind == 9:
            errors = validate.check_modal(data)
            if errors:
                return invalid({"data": errors})
        inter.response = body
        if message is not None:
            inter.original = message  # for 6/7: the message the component is on
        inter.responded.set()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        result: JSON = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message.ephemeral),
            }
        }
        if message is not None and kind != 6:
            result["interaction"]["response_message_id"] = str(message.id)
            result["resource"] = {"type": kind, "message": message.data}
        elif kind != 1:
            result["resource"] = {"type": kind}
        return json_response(result)

    def _interaction_message(
        self,
        inter: Interaction,
        data: JSON,
        uploads: list[Any],
        *,
        loading: bool = False,
        followup: bool = False,
    ) -> RecordedMessage:
        message = new_message(
            base_url=self.s.http_url,
            channel_id=inter.channel_id,
            guild_id=inter.guild_id,
            author=self.s.bot_user_payload(),
            payload=data,
            files=resolve_files(data, uploads, []),
            message_type=0 if followup else 20,
            webhook_id=self.s.application_id,
            application_id=self.s.application_id,
            extra_flags=128 if loading else 0,
        )
        self.s.record_message(message)
        return message

    def _hook_interaction(self, request: web.Request) -> Interaction | None:
        if int(request.match_info["app"]) != self.s.application_id:
            return None
        return self.s.interaction_by_token(request.match_info["token"])

    async def followup(self, request: web.Request) -> web.Response:
        inter = self._hook_interaction(request)
        if inter is None or inter.response is None:
            return error(404, 10015, "Unknown Webhook")
        body, uploads = await read_body(request)
        too_big = self._check_files(uploads, inter.attachment_size_limit)
        if too_big:
            return too_big
        errors = validate.check_message(body)
        if errors:
            return invalid(errors)
        if validate.is_empty_message(body) and not uploads:
            return empty_message()
        message = self._interaction_message(inter, body, uploads, followup=True)
        inter.followups.append(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return json_response(message.data)
        return web.Response(status=204)

    def _hook_message(self, request: web.Request) -> tuple[Interaction | None, RecordedMessage | None]:
        inter = self._hook_interaction(request)
        if inter is None:
            return None, None
        mid = request.match_info["mid"]
        if mid == "@original":
            return inter, inter.original
        for m in [inter.original, *inter.followups]:
            if m is not None and str(m.id) == mid:
                return inter, m
        return inter, None

    async def get_hook_message(self, request: web.Request) -> web.Response:
        inter, message = self._hook_message(request)
        if inter is None:
            return error(404, 10015, "Unknown Webhook")
        if message is None:
            return error(404, 10008, "Unknown Message")
        return json_response(message.data)

    async def edit_hook_message(self, request: web.Request) -> web.Response:
        inter, message = self._hook_message(request)
        if inter is None:
            return error(404, 10015, "Unknown Webhook")
        if message is None:
            return error(404, 10008, "Unknown Message")
        return await self._edit(request, message, inter.attachment_size_limit)

    async def delete_hook_message(self, request: web.Request) -> web.Response:
        inter, message = self._hook_message(request)
        if inter is None or message is None:
            return error(404, 10008, "Unknown Message")
        self.s.delete_message(message)
        if inter.original is message:
            inter.original = None
        return web.Response(status=204)

    async def _edit(self, request: web.Request, message: RecordedMessage, limit: int) -> web.Response:
        body, uploads = await read_body(request)
        too_big = self._check_files(uploads, limit)
        if too_big:
            return too_big
        errors = validate.check_message(merged_view(message, body))
        if errors:
            return invalid(errors)
        apply_edit(message, body, uploads, self.s.http_url)
        return json_response(message.data)

    # -- channel messages -----------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self.s.find_channel(int(request.match_info["cid"]))
        if channel is None:
            return error(404, 10003, "Unknown Channel")
        body, uploads = await read_body(request)
        too_big = self._check_files(uploads, self.s.upload_limit)
        if too_big:
            return too_big
        errors = validate.check_message(body)
        if errors:
            return invalid(errors)
        if validate.is_empty_message(body) and not uploads:
            return empty_message()
        message = new_message(
            base_url=self.s.http_url,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.s.bot_user_payload(),
            payload=body,
            files=resolve_files(body, uploads, []),
        )
        self.s.record_message(message)
        return json_response(message.data)

    def _channel_message(self, request: web.Request) -> RecordedMessage | None:
        message = self.s.find_message(int(request.match_info["mid"]))
        if message is None or message.channel_id != int(request.match_info["cid"]):
            return None
        return message

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        return json_response(message.data)

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        return await self._edit(request, message, self.s.upload_limit)

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        self.s.delete_message(message)
        return web.Response(status=204)

    async def attachment(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["aid"])
        for message in self.s.messages.get(int(request.match_info["cid"]), []):
            for f in message.files:
                if f.id == wanted:
                    return web.Response(
                        body=f.data, content_type=f.content_type or "application/octet-stream"
                    )
        return error(404, 0, "404: Not Found")

    async def unhandled(self, request: web.Request) -> web.Response:
        entry = f"{request.method} {request.path}"
        log.warning("loopback discord: unhandled route %s", entry)
        self.s.unhandled.append(entry)
        return error(404, 0, "404: Not Found")
