"""The bot's small HTTP file server: signed download links for files over Discord's upload limit.

It runs on the bot's own event loop. ``GET /files/<token>/<filename>`` streams the file that the
``resolve`` callback maps the verified claims to; nothing from the URL ever names a path, and a
path outside ``root`` (the data folder: a database row a trainer once filled in) is not sent. ::

    async with FileServer.from_settings(settings, services.resolve_download) as files:
        url = files.make_url(member.id, "epoch", f"{job_id}/{epoch}", "chara-000004.safetensors")

Note: aiohttp's ``FileResponse`` (Range, ETag, HEAD) would serve a pre-compressed sibling
(``<file>.gz`` / ``.br``) if one existed next to the resolved file; the bot writes none.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import hdrs, web

from .i18n import DEFAULT_LANGUAGE, LANGUAGES, N_, language_of, messages
from .links import Expired, LinkClaims, LinkError, LinkSigner, check_filename, load_link_secret
from .queue.trust import trusted_file

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

Resolver = Callable[[LinkClaims], Awaitable[Path | None]]
"""Maps verified claims to the file to send, after checking the owner still owns it; None: 404."""

_TOKEN_SEGMENT = re.compile(r"^/files/[^/]+")
_HEADERS = {
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def parse_bind(bind: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8765"`` for IPv6) as (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"'{bind}' is not host:port")
    return host.strip("[]"), int(port)


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` with an ASCII fallback, plus RFC 5987 ``filename*`` if needed."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


#: What a browser reads about a link whose file cannot be sent (besides the links' own errors).
NAME_MISMATCH = N_("the file name does not match this link")
GONE = N_("this file is no longer available")


def accepted_language(header: str | None) -> str:
    """The bot's language a browser prefers by its ``Accept-Language`` header (``ja, en;q=0.8``):
    the one of the highest weight that the bot speaks, English when it names none of them."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (header or "").split(","):
        tag, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.split("-")[0].lower()
        if q > best_q and (primary == DEFAULT_LANGUAGE or primary in LANGUAGES):
            best, best_q = language_of(primary), q
    return best


def _text(request: web.Request, status: int, reason: str | LinkError) -> web.Response:
    """A short plain-text refusal in the browser's language (``reason``: a message id or a link
    error, whose ``str()`` stays English for the logs)."""
    language = accepted_language(request.headers.get(hdrs.ACCEPT_LANGUAGE))
    t = messages(language)
    text = reason.translated(t) if isinstance(reason, LinkError) else t(reason)
    return web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={hdrs.CONTENT_LANGUAGE: language, hdrs.VARY: hdrs.ACCEPT_LANGUAGE},
    )


class FileServer:
    """Serves signed download links over aiohttp; ``port`` is the bound one after :meth:`start`."""

    def __init__(
        self,
        signer: LinkSigner,
        resolve: Resolver,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        base_url: str | None = None,
        root: Path | None = None,
    ) -> None:
        self.signer = signer
        self.root = root  # only files inside it are sent (None: any the resolver returns)
        self.resolve = resolve
        self.host = host
        self.port = port
        self._base_url = base_url.rstrip("/") if base_url else None
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, resolve: Resolver, *, clock: Callable[[], float] = time.time
    ) -> FileServer:
        """A server on ``http_bind`` whose links use ``public_url`` and ``link_lifetime_s``."""
        signer = LinkSigner(load_link_secret(settings), settings.link_lifetime_s, clock)
        host, port = parse_bind(settings.http_bind)
        return cls(
            signer,
            resolve,
            host=host,
            port=port,
            base_url=settings.public_url or None,
            root=settings.data_dir,
        )

    @property
    def base_url(self) -> str:
        """The public root: ``public_url``, else ``http://host:port`` with the bound port."""
        if self._base_url:
            return self._base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def make_url(self, owner_id: int, kind: str, ref: str, filename: str) -> str:
        """A signed link to the file (``kind``, ``ref``) for ``owner_id``, valid for the signer's lifetime."""
        token = self.signer.sign(owner_id, kind, ref, check_filename(filename))
        return f"{self.base_url}/files/{token}/{quote(filename, safe='')}"

    # -- lifecycle ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._on_prepare)
        app.router.add_get("/healthz", self._healthz)  # add_get also answers HEAD
        app.router.add_get("/files/{token}/{filename}", self._download)
        return app

    async def start(self) -> None:
        """Bind ``host:port`` (port 0: a free one, then in ``self.port``) and serve."""
        runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None, shutdown_timeout=5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("file server on %s:%d, links at %s/files/", self.host, self.port, self.base_url)

    async def close(self) -> None:
        """Stop serving (downloads in flight get a few seconds to finish)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FileServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers -------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        try:
            claims = self.signer.verify(request.match_info["token"])
        except Expired as exc:
            return _text(request, 410, exc)
        except LinkError as exc:
            return _text(request, 403, exc)
        if request.match_info["filename"] != claims.filename:
            return _text(request, 403, NAME_MISMATCH)
        path = await self.resolve(claims)
        if path is not None and self.root is not None:
            path = await asyncio.to_thread(trusted_file, self.root, path)  # resolved: what is sent
        if path is None or not path.is_file():
            return _text(request, 404, GONE)
        log.info("sending %s %s to owner %d", claims.kind, claims.ref, claims.owner_id)
        return web.FileResponse(
            path,
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_DISPOSITION: content_disposition(claims.filename),
            },
        )

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """One INFO line per reply (final status, token cut out of the path); safe headers on all."""
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        path = _TOKEN_SEGMENT.sub("/files/<token>", request.path)
        log.info("%s %s %s -> %d", request.remote, request.method, path, response.status)
