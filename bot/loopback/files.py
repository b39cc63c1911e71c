"""Files on the loopback Discord stand-in: what members upload and attachment payloads.

A test hands a member's file over as an :class:`Upload` (or a ``(filename, bytes)``
tuple).  The stand-in keeps its bytes and serves them on the same server, under
``/attachments/{channel}/{id}/{filename}`` for message attachments and under
``/ephemeral-attachments/{channel}/{id}/{filename}`` for files given to a slash
command's attachment option, like Discord's CDN does.
"""

from __future__ import annotations

import io
import mimetypes
from dataclasses import dataclass

from .state import JSON, RecordedFile, snowflake

GENERIC_TYPES = (None, "", "application/octet-stream")


@dataclass(frozen=True)
class Upload:
    """A file a member attaches (to a message or to a command's attachment option)."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


UploadLike = Upload | tuple[str, bytes]


def as_upload(value: object) -> Upload:
    """An :class:`Upload` from an ``Upload`` or a ``(filename, bytes)`` tuple (TypeError otherwise)."""
    if isinstance(value, Upload):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (bytes, bytearray))
    ):
        return Upload(value[0], bytes(value[1]))
    raise TypeError(f"an attachment must be an Upload or a (filename, bytes) tuple, not {value!r}")


def guess_content_type(filename: str, given: str | None = None) -> str | None:
    """The media type Discord reports: the given one, else the one the file name implies."""
    if given not in GENERIC_TYPES:
        return given
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or given or None


def recorded_file(upload: Upload, limit: int) -> RecordedFile:
    """Keep a member's upload; ValueError when it is over ``limit`` bytes.

    Discord's client refuses to attach a file larger than the member's upload
    limit, so such a file never reaches a bot.
    """
    if not upload.filename:
        raise ValueError("an attachment needs a file name")
    if len(upload.data) > limit:
        raise ValueError(f"{upload.filename} is {len(upload.data)} bytes, over the upload limit of {limit}")
    return RecordedFile(
        id=snowflake(),
        filename=upload.filename,
        data=upload.data,
        content_type=guess_content_type(upload.filename, upload.content_type),
        description=upload.description,
    )


def image_size(f: RecordedFile) -> tuple[int, int] | None:
    """Width and height of an image attachment (None when not an image Pillow can read)."""
    if not (f.content_type or "").startswith("image/"):
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(f.data)) as img:
            return int(img.width), int(img.height)
    except Exception:
        return None


def attachment_payload(base_url: str, channel_id: int, f: RecordedFile, *, ephemeral: bool = False) -> JSON:
    """Discord's attachment object for a kept file, with URLs on the stand-in."""
    route = "ephemeral-attachments" if ephemeral else "attachments"
    url = f"{base_url}/{route}/{channel_id}/{f.id}/{f.filename}"
    data: JSON = {
        "id": str(f.id),
        "filename": f.filename,
        "size": len(f.data),
        "url": url,
        "proxy_url": url,
    }
    if f.content_type:
        data["content_type"] = f.content_type
    if f.description:
        data["description"] = f.description
    size = image_size(f)
    if size is not None:
        data["width"], data["height"] = size
    if ephemeral:
        data["ephemeral"] = True
    return data
