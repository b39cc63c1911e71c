"""Discord-shaped HTTP responses of the loopback stand-in (JSON bodies and error shapes)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import validate
from .state import JSON


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
    """Discord's 400 "Invalid Form Body" (code 50035) with the nested ``errors``."""
    return json_response(validate.invalid_form_body(errors), status=400)


def unknown_interaction() -> web.Response:
    """Discord's answer to a callback for an unknown or expired (>3 s) interaction."""
    return error(404, 10062, "Unknown interaction")


def unknown_webhook() -> web.Response:
    return error(404, 10015, "Unknown Webhook")


def invalid_webhook_token() -> web.Response:
    """Discord's answer to a webhook call with an interaction token past its 15 minutes."""
    return error(401, 50027, "Invalid Webhook Token")


def unknown_message() -> web.Response:
    return error(404, 10008, "Unknown Message")


def too_large() -> web.Response:
    return json_response(validate.too_large(), status=413)
