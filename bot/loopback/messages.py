"""Reading message bodies (JSON or multipart) and turning them into recorded messages.

discord.py sends a message either as a JSON body or, when files are attached,
as ``multipart/form-data`` with a ``payload_json`` part and ``files[n]`` parts
whose index matches the ``id`` of an entry in ``payload["attachments"]``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .files import attachment_payload, guess_content_type
from .state import JSON, RecordedFile, RecordedMessage, iso_now, snowflake

UploadedFile = tuple[int, str, bytes, str | None]  # (index n of files[n], filename, data, content type)

EDITABLE_KEYS = ("content", "embeds", "components", "poll", "allowed_mentions", "tts")


async def read_body(request: web.Request) -> tuple[JSON, list[UploadedFile]]:
    """The JSON payload and the uploaded files of a request."""
    if request.content_type.startswith("multipart/"):
        payload: JSON = {}
        files: list[UploadedFile] = []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            name = part.name or ""  # type: ignore[union-attr]
            raw = await part.read()  # type: ignore[union-attr]
            if name == "payload_json":
                payload = json.loads(raw.decode())
            elif name.startswith("files[") and name.endswith("]"):
                ctype = part.headers.get("Content-Type")  # type: ignore[union-attr]
                files.append((int(name[6:-1]), part.filename or f"file{name[6:-1]}", bytes(raw), ctype))  # type: ignore[union-attr]
        return payload, files
    if not request.can_read_body:
        return {}, []
    text = await request.text()
    return (json.loads(text) if text.strip() else {}), []


def resolve_files(payload: JSON, uploads: list[UploadedFile], kept: list[RecordedFile]) -> list[RecordedFile]:
    """The attachments of a message after a create or edit.

    ``kept`` are the attachments the message already has; on an edit only those
    whose id is listed in ``payload["attachments"]`` survive (all of them when the
    key is absent).
    """
    listed = payload.get("attachments")
    by_index = {str(a.get("id")): a for a in listed or []}
    result = list(kept) if listed is None else [f for f in kept if str(f.id) in by_index]
    for index, filename, data, ctype in uploads:
        meta = by_index.get(str(index), {})
        result.append(
            RecordedFile(
                id=snowflake(),
                filename=meta.get("filename") or filename,
                data=data,
                content_type=guess_content_type(meta.get("filename") or filename, ctype),
                description=meta.get("description"),
            )
        )
    return result


def new_message(
    *,
    base_url: str,
    channel_id: int,
    guild_id: int | None,
    author: JSON,
    payload: JSON,
    files: list[RecordedFile],
    message_type: int = 0,
    webhook_id: int | None = None,
    application_id: int | None = None,
    extra_flags: int = 0,
) -> RecordedMessage:
    """A new recorded message built from a create payload."""
    message_id = snowflake()
    data: JSON = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": payload.get("content") or "",
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": bool(payload.get("tts", False)),
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [attachment_payload(base_url, channel_id, f) for f in files],
        "embeds": payload.get("embeds") or [],
        "components": payload.get("components") or [],
        "pinned": False,
        "type": message_type,
        "flags": int(payload.get("flags") or 0) | extra_flags,
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    if webhook_id is not None:
        data["webhook_id"] = str(webhook_id)
    if application_id is not None:
        data["application_id"] = str(application_id)
    if payload.get("poll"):
        data["poll"] = payload["poll"]
    return RecordedMessage(id=message_id, channel_id=channel_id, data=data, files=files)


def apply_edit(message: RecordedMessage, payload: JSON, uploads: list[UploadedFile], base_url: str) -> None:
    """Apply an edit payload to a recorded message in place."""
    for key in EDITABLE_KEYS:
        if key in payload:
            value = payload[key]
            if key in ("embeds", "components") and value is None:
                value = []
            if key == "content" and value is None:
                value = ""
            message.data[key] = value
    if "flags" in payload and payload["flags"] is not None:
        # Only SUPPRESS_EMBEDS (4) and IS_COMPONENTS_V2 (1 << 15) may change; ephemeral stays.
        keep = message.data.get("flags", 0) & 64
        message.data["flags"] = keep | (int(payload["flags"]) & (4 | (1 << 15)))
    message.data["flags"] = int(message.data.get("flags", 0)) & ~128  # no longer "thinking"
    message.files = resolve_files(payload, uploads, message.files)
    message.data["attachments"] = [attachment_payload(base_url, message.channel_id, f) for f in message.files]
    message.data["edited_timestamp"] = iso_now()
    message.edits += 1


def merged_view(message: RecordedMessage, payload: JSON) -> dict[str, Any]:
    """What the message would look like after ``payload`` (for validating edits)."""
    view = {k: message.data.get(k) for k in ("content", "embeds", "components", "flags")}
    view.update({k: v for k, v in payload.items() if k in EDITABLE_KEYS})
    return view


def without_content(data: JSON) -> JSON:
    """A member's message as a bot without the MESSAGE_CONTENT intent receives it.

    (``poll`` is left out, not set to null: discord.py's client dies on ``"poll": null``.)
    """
    blank = {**data, "content": "", "embeds": [], "attachments": [], "components": []}
    blank.pop("poll", None)
    return blank


def member_message(
    *,
    base_url: str,
    channel_id: int,
    guild_id: int,
    author: JSON,
    content: str,
    files: list[RecordedFile],
) -> RecordedMessage:
    """A message a member posts (type 0, no webhook)."""
    return new_message(
        base_url=base_url,
        channel_id=channel_id,
        guild_id=guild_id,
        author=author,
        payload={"content": content},
        files=files,
    )
