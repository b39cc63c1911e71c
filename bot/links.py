"""Signed, expiring download links: tokens for URL paths, and the secret that signs them.

A token is ``<payload>.<mac>``, both base64url without padding. The payload is compact JSON of
``[owner_id, kind, ref, filename, expires_at]``; the MAC is HMAC-SHA256 over it, so changing any
field (or the expiry) breaks the signature. Tokens are not encrypted: never put secrets in them.

Usage::

    signer = LinkSigner(load_link_secret(settings), settings.link_lifetime_s)
    token = signer.sign(owner_id, "epoch", f"{job_id}/{epoch}", "chara-000004.safetensors")
    claims = signer.verify(token)  # raises BadSignature or Expired
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MemberError
from .i18n import N_

if TYPE_CHECKING:
    from .settings import Settings

SECRET_FILE = "link-secret"
_DOMAIN = b"lorabot-link-v1\n"  # binds the MAC to this format and purpose
#: What a member reads about a link that cannot be honoured.
MALFORMED = N_("this link is malformed")
NOT_VALID = N_("this link is not valid (altered, or signed with another secret)")
EXPIRED = N_("this link has expired; ask the bot for a new one")


class LinkError(MemberError):
    """A download link that cannot be honoured; ``str()`` is a short reason for the member."""


class BadSignature(LinkError):
    """The token is malformed, forged or altered."""


class Expired(LinkError):
    """The token was genuine but its lifetime is over."""


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token grants: ``owner_id`` may download ``filename`` of (``kind``, ``ref``)."""

    owner_id: int
    kind: str
    ref: str
    filename: str
    expires_at: int  # Unix seconds


def check_filename(filename: str) -> str:
    """``filename`` if it is a plain file name safe for a URL segment and a download; else ValueError."""
    if (
        not filename
        or filename in (".", "..")
        or len(filename) > 255
        or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in filename)
    ):
        raise ValueError(f"{filename!r} is not a plain file name")
    return filename


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Makes and checks link tokens with one secret; ``clock`` returns Unix seconds (tests fake it)."""

    def __init__(self, secret: bytes, lifetime_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the link secret must be at least 16 bytes")
        if lifetime_s <= 0:
            raise ValueError("the link lifetime must be positive")
        self._secret = secret
        self.lifetime_s = lifetime_s
        self.clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _DOMAIN + payload, hashlib.sha256).digest()

    def sign(
        self, owner_id: int, kind: str, ref: str, filename: str, *, lifetime_s: int | None = None
    ) -> str:
        """A token granting ``owner_id`` the file until now + ``lifetime_s`` (default: the signer's)."""
        check_filename(filename)
        expires_at = int(self.clock()) + (self.lifetime_s if lifetime_s is None else lifetime_s)
        fields = [int(owner_id), str(kind), str(ref), filename, expires_at]
        payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str) -> LinkClaims:
        """The claims of a genuine, unexpired token; BadSignature or Expired otherwise."""
        try:
            head, _, tail = token.partition(".")
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            raise BadSignature(MALFORMED) from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise BadSignature(NOT_VALID)
        try:
            owner_id, kind, ref, filename, expires_at = json.loads(payload)
            claims = LinkClaims(int(owner_id), str(kind), str(ref), str(filename), int(expires_at))
        except (ValueError, TypeError):  # only a holder of the secret could get here
            raise BadSignature(MALFORMED) from None
        if self.clock() >= claims.expires_at:
            raise Expired(EXPIRED)
        return claims


def load_link_secret(settings: Settings) -> bytes:
    """``settings.link_secret``, else the random one in ``DATA_DIR/link-secret`` (made 0600 on first use)."""
    if settings.link_secret is not None and settings.link_secret.get_secret_value():
        return settings.link_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        _create_secret(path)
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ValueError(f"{path} is not a hex secret of 16+ bytes: fix or delete it (links will change)")
    return secret


def _create_secret(path: Path) -> None:
    """Write 32 random bytes as hex to ``path`` atomically, mode 0600; a concurrent creator wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # a concurrent creator won: keep theirs
            os.link(tmp, path)  # unlike os.replace, never overwrites
    finally:
        os.unlink(tmp)
