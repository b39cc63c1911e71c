"""Interaction routes of the loopback stand-in: the callback and the interaction webhook.

Timing follows Discord: the first callback must arrive within ``ack_deadline_s``
(3 s) of the dispatch, else it is answered 404 / 10062 "Unknown interaction";
the webhook (followups, @original) works for ``token_lifetime_s`` (15 min) after
the dispatch, then answers 401 / 50027 "Invalid Webhook Token".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from . import validate
from .messages import UploadedFile, apply_edit, merged_view, new_message, read_body, resolve_files
from .responses import (
    empty_message,
    error,
    invalid,
    invalid_webhook_token,
    json_response,
    too_large,
    unknown_interaction,
    unknown_message,
    unknown_webhook,
)
from .state import JSON, Interaction, RecordedMessage
from .validate_callbacks import check_callback_type, check_choices, check_modal_layout

if TYPE_CHECKING:
    from .server import LoopbackDiscord

API = "/api/v10"


class InteractionRoutes:
    """The callback and webhook routes, bound to one stand-in (base of ``Rest``)."""

    def __init__(self, server: LoopbackDiscord) -> None:
        self.s = server

    def add_interaction_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post(f"{API}/interactions/{{iid}}/{{token}}/callback", self.callback)
        r.add_post(f"{API}/webhooks/{{app}}/{{token}}", self.followup)
        hook_msg = f"{API}/webhooks/{{app}}/{{token}}/messages/{{mid}}"
        r.add_get(hook_msg, self.get_hook_message)
        r.add_patch(hook_msg, self.edit_hook_message)
        r.add_delete(hook_msg, self.delete_hook_message)

    def _check_files(self, uploads: list[UploadedFile], limit: int) -> web.Response | None:
        for _index, _name, data, _ctype in uploads:
            if len(data) > limit:
                return too_large()
        return None

    async def _new_message_body(
        self, request: web.Request, limit: int
    ) -> tuple[JSON, list[UploadedFile]] | web.Response:
        """A new message's body and files, or Discord's error for a message it refuses."""
        body, uploads = await read_body(request)
        refused = self._check_files(uploads, limit)
        if refused:
            return refused
        errors = validate.check_message(body)
        if errors:
            return invalid(errors)
        if validate.is_empty_message(body) and not uploads:
            return empty_message()
        return body, uploads

    # -- the callback ---------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        inter = self.s.interactions.get(int(request.match_info["iid"]))
        if inter is None or inter.token != request.match_info["token"]:
            return unknown_interaction()
        elapsed = self.s.clock() - inter.dispatched_at
        if inter.response is None and elapsed > self.s.ack_deadline_s:
            inter.late_callbacks += 1
            if inter.ack_s is None:
                inter.ack_s = elapsed
            return unknown_interaction()
        if inter.response is not None:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = await read_body(request)
        kind = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        type_errors = check_callback_type(kind, inter.type)
        if type_errors:
            return invalid(type_errors)
        refused = self._check_files(uploads, inter.attachment_size_limit)
        if refused is None:
            message, refused = self._callback_message(inter, kind, data, uploads)
        if refused is not None:
            return refused
        inter.response = body
        if inter.ack_s is None:
            inter.ack_s = elapsed
        if message is not None:
            inter.original = message  # for 6/7: the message the component is on
        inter.responded.set()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        return json_response(_callback_result(inter, kind, message))

    def _callback_message(
        self, inter: Interaction, kind: int, data: JSON, uploads: list[UploadedFile]
    ) -> tuple[RecordedMessage | None, web.Response | None]:
        """Validate the callback's data; the message it creates or edits (or an error)."""
        if kind == 4:
            errors = validate.check_message(data)
            if errors:
                return None, invalid({"data": errors})
            if validate.is_empty_message(data) and not uploads:
                return None, empty_message()
            return self._interaction_message(inter, data, uploads), None
        if kind == 5:
            return self._interaction_message(inter, {"flags": data.get("flags", 0)}, [], loading=True), None
        if kind in (6, 7):
            target = self.s.find_message(int(inter.payload.get("message", {}).get("id", 0)))
            if target is not None and kind == 7:
                errors = validate.check_message(merged_view(target, data))
                if errors:
                    return None, invalid({"data": errors})
                apply_edit(target, data, uploads, self.s.http_url)
            return target, None
        if kind == 8:
            errors = check_choices(data, inter.focused_type)
            return None, (invalid({"data": errors}) if errors else None)
        if kind == 9:
            errors = check_modal_layout(data)
            return None, (invalid({"data": errors}) if errors else None)
        return None, None

    def _interaction_message(
        self,
        inter: Interaction,
        data: JSON,
        uploads: list[UploadedFile],
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
        if message.ephemeral:
            message.visible_to = inter.user_id
        self.s.record_message(message)
        return message

    # -- the interaction webhook ----------------------------------------------

    def _hook_interaction(self, request: web.Request) -> tuple[Interaction | None, web.Response | None]:
        """The interaction of a webhook URL, or Discord's error for an unknown/expired token."""
        if int(request.match_info["app"]) != self.s.application_id:
            return None, unknown_webhook()
        inter = self.s.interaction_by_token(request.match_info["token"])
        if inter is None:
            return None, unknown_webhook()
        if self.s.clock() - inter.dispatched_at > self.s.token_lifetime_s:
            return None, invalid_webhook_token()
        return inter, None

    async def followup(self, request: web.Request) -> web.Response:
        inter, refused = self._hook_interaction(request)
        if inter is None or inter.response is None:
            return refused or unknown_webhook()
        checked = await self._new_message_body(request, inter.attachment_size_limit)
        if isinstance(checked, web.Response):
            return checked
        body, uploads = checked
        message = self._interaction_message(inter, body, uploads, followup=True)
        inter.followups.append(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return json_response(message.data)
        return web.Response(status=204)

    def _hook_message(
        self, request: web.Request
    ) -> tuple[Interaction | None, RecordedMessage | None, web.Response | None]:
        inter, refused = self._hook_interaction(request)
        if inter is None:
            return None, None, refused
        mid = request.match_info["mid"]
        if mid == "@original":
            message = inter.original
        else:
            candidates = [inter.original, *inter.followups]
            message = next((m for m in candidates if m is not None and str(m.id) == mid), None)
        return inter, message, (None if message is not None else unknown_message())

    async def get_hook_message(self, request: web.Request) -> web.Response:
        _inter, message, refused = self._hook_message(request)
        if message is None:
            return refused or unknown_message()
        return json_response(message.data)

    async def edit_hook_message(self, request: web.Request) -> web.Response:
        inter, message, refused = self._hook_message(request)
        if inter is None or message is None:
            return refused or unknown_message()
        return await self._edit(request, message, inter.attachment_size_limit)

    async def delete_hook_message(self, request: web.Request) -> web.Response:
        inter, message, refused = self._hook_message(request)
        if inter is None or message is None:
            return refused or unknown_message()
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


def _callback_result(inter: Interaction, kind: int, message: RecordedMessage | None) -> JSON:
    """The body of a callback answered ``?with_response=true``."""
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
    return result
