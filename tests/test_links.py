"""Signed download links (bot/links.py) and the file server that honours them (bot/web.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from bot.links import BadSignature, Expired, LinkClaims, LinkSigner, check_filename, load_link_secret
from bot.settings import load_settings
from bot.web import FileServer, accepted_language, content_disposition

SECRET = b"s" * 32
T0 = 1_700_000_000.0
OWNER, OTHER = 111_222_333_444_555_666, 999
NAME = "chara lora-000004.safetensors"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fields(token: str) -> list:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _forge(token: str, index: int, value: object) -> str:
    """The token with one payload field changed and the original MAC kept."""
    fields = _fields(token)
    fields[index] = value
    return _b64(json.dumps(fields, separators=(",", ":")).encode()) + "." + token.split(".")[1]


# -- the signer ---------------------------------------------------------------------------------


def test_sign_and_verify_round_trip():
    signer = LinkSigner(SECRET, 3600, clock=Clock())
    token = signer.sign(OWNER, "epoch", "job-1/4", NAME)
    assert all(c.isalnum() or c in "-_." for c in token) and "=" not in token
    assert signer.verify(token) == LinkClaims(OWNER, "epoch", "job-1/4", NAME, int(T0) + 3600)


@pytest.mark.parametrize(
    ("index", "value"),
    [(0, OTHER), (1, "file"), (2, "job-2/4"), (3, "other.safetensors"), (4, int(T0) + 10**6)],
)
def test_changing_any_field_breaks_the_signature(index, value):
    signer = LinkSigner(SECRET, 3600, clock=Clock())
    forged = _forge(signer.sign(OWNER, "epoch", "job-1/4", NAME), index, value)
    with pytest.raises(BadSignature, match="not valid"):
        signer.verify(forged)


@pytest.mark.parametrize("token", ["", ".", "abc", "abc.def", "!!!.???", "a.b.c"])
def test_garbage_is_a_bad_signature(token):
    with pytest.raises(BadSignature):
        LinkSigner(SECRET, 3600).verify(token)


def test_other_secret_and_expiry():
    clock = Clock()
    signer = LinkSigner(SECRET, 60, clock=clock)
    token = signer.sign(OWNER, "epoch", "job-1/4", NAME)
    with pytest.raises(BadSignature):
        LinkSigner(b"t" * 32, 60, clock=clock).verify(token)
    clock.now += 59
    assert signer.verify(token).owner_id == OWNER
    clock.now += 1
    with pytest.raises(Expired, match="expired"):
        signer.verify(token)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "..\\x", "x\ny", "x\x00"])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(ValueError):
        check_filename(name)
    with pytest.raises(ValueError):
        LinkSigner(SECRET, 60).sign(OWNER, "epoch", "j/1", name)


def test_content_disposition_quotes_safely():
    assert content_disposition("a.safetensors") == 'attachment; filename="a.safetensors"'
    value = content_disposition('ché"rie.safetensors')
    assert 'filename="ch__rie.safetensors"' in value and "filename*=UTF-8''ch%C3%A9%22rie" in value


# -- the secret ---------------------------------------------------------------------------------


def test_secret_file_is_created_once_0600_and_reused(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    first = load_link_secret(settings)
    path = tmp_path / "data" / "link-secret"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_link_secret(settings) == first
    assert load_link_secret(load_settings(data_dir=tmp_path / "data")) == first  # a restart
    assert os.listdir(tmp_path / "data") == ["link-secret"]  # no temporary file left behind


def test_configured_secret_is_used(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", link_secret="correct horse battery staple")
    assert load_link_secret(settings) == b"correct horse battery staple"
    assert not (tmp_path / "data" / "link-secret").exists()


def test_corrupt_secret_file_is_an_error(tmp_path):
    (tmp_path / "link-secret").write_text("not hex")
    with pytest.raises(ValueError, match="delete it"):
        load_link_secret(load_settings(data_dir=tmp_path))


# -- the server ---------------------------------------------------------------------------------

Scenario = Callable[[FileServer, aiohttp.ClientSession, Clock], Awaitable[None]]


def serve(files: dict[tuple[int, str, str], Path], scenario: Scenario, lifetime_s: int = 3600) -> None:
    """Run ``scenario`` against a server on a free port whose resolver knows ``files``."""

    async def resolve(claims: LinkClaims) -> Path | None:
        return files.get((claims.owner_id, claims.kind, claims.ref))

    async def main() -> None:
        clock = Clock()
        signer = LinkSigner(SECRET, lifetime_s, clock=clock)
        async with FileServer(signer, resolve, port=0) as server, aiohttp.ClientSession() as http:
            assert server.port != 0 and server.base_url == f"http://127.0.0.1:{server.port}"
            await asyncio.wait_for(scenario(server, http, clock), 10)

    asyncio.run(main())


async def status_and_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


def test_link_serves_the_exact_bytes(tmp_path, caplog):
    payload = os.urandom(6 * 2**20 + 123)
    (tmp_path / "lora.safetensors").write_bytes(payload)
    tokens: list[str] = []

    async def scenario(server: FileServer, http: aiohttp.ClientSession, clock: Clock) -> None:
        url = server.make_url(OWNER, "epoch", "job-1/4", NAME)
        assert url.startswith(f"{server.base_url}/files/") and url.endswith(
            "/chara%20lora-000004.safetensors"
        )
        tokens.append(url.split("/")[-2])
        async with http.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["Content-Disposition"] == f'attachment; filename="{NAME}"'
            assert response.headers["Cache-Control"] == "private, no-store"
            assert await response.read() == payload
        async with http.head(url) as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) == len(payload)
            assert await response.read() == b""
        async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
            assert response.status == 206 and await response.read() == payload[10:20]
        assert await status_and_text(http, f"{server.base_url}/healthz") == (200, "ok")

    with caplog.at_level(logging.INFO, logger="bot.web"):
        serve({(OWNER, "epoch", "job-1/4"): tmp_path / "lora.safetensors"}, scenario)
    lines = [r.getMessage() for r in caplog.records]
    assert any("/files/<token>/chara lora-000004.safetensors -> 200" in line for line in lines), lines
    assert any("-> 206" in line for line in lines), lines
    assert tokens and not any(tokens[0][:20] in line for line in lines), lines  # no token text


def test_link_expires_with_410(tmp_path):
    (tmp_path / "f").write_bytes(b"data")

    async def scenario(server: FileServer, http: aiohttp.ClientSession, clock: Clock) -> None:
        url = server.make_url(OWNER, "epoch", "job-1/4", "f.safetensors")
        assert (await status_and_text(http, url))[0] == 200
        clock.now += 3600
        status, text = await status_and_text(http, url)
        assert status == 410 and "expired" in text

    serve({(OWNER, "epoch", "job-1/4"): tmp_path / "f"}, scenario)


def test_tampered_links_are_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    files = {(OWNER, "epoch", "job-1/4"): tmp_path / "f", (OTHER, "epoch", "job-1/4"): tmp_path / "f"}

    async def scenario(server: FileServer, http: aiohttp.ClientSession, clock: Clock) -> None:
        url = server.make_url(OWNER, "epoch", "job-1/4", "f.safetensors")
        prefix, token, name = url.rsplit("/", 2)
        flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
        refused = {
            "flipped": f"{prefix}/{flipped}/{name}",
            "other owner": f"{prefix}/{_forge(token, 0, OTHER)}/{name}",
            "later expiry": f"{prefix}/{_forge(token, 4, int(T0) + 10**6)}/{name}",
            "no mac": f"{prefix}/{token.split('.')[0]}/{name}",
            "other name": f"{prefix}/{token}/other.safetensors",
        }
        for what, bad in refused.items():
            status, text = await status_and_text(http, bad)
            assert status == 403, (what, status, text)
            assert len(text) < 100 and token not in text
        assert "does not match" in (await status_and_text(http, refused["other name"]))[1]
        other_secret = LinkSigner(b"t" * 32, 60, clock=clock).sign(OWNER, "epoch", "job-1/4", name)
        assert (await status_and_text(http, f"{prefix}/{other_secret}/{name}"))[0] == 403

    serve(files, scenario)


def test_unknown_or_missing_files_are_404(tmp_path):
    files = {(OWNER, "epoch", "gone/1"): tmp_path / "deleted.safetensors", (OWNER, "dir", "d"): tmp_path}

    async def scenario(server: FileServer, http: aiohttp.ClientSession, clock: Clock) -> None:
        for kind, ref in [("epoch", "nope/1"), ("epoch", "gone/1"), ("dir", "d")]:
            status, text = await status_and_text(http, server.make_url(OWNER, kind, ref, "x.safetensors"))
            assert status == 404 and "no longer available" in text, (kind, ref)
        # a genuine link of another member to the same ref: the resolver does not map it
        assert (await status_and_text(http, server.make_url(OTHER, "epoch", "gone/1", "x")))[0] == 404
        for path in ["/files/", "/files/x", "/", "/files/a/b/c", "/../etc/passwd"]:
            assert (await status_and_text(http, server.base_url + path))[0] == 404, path
        async with http.post(server.make_url(OWNER, "epoch", "gone/1", "x")) as response:
            assert response.status == 405

    serve(files, scenario)


def test_from_settings_binds_http_bind_and_uses_public_url(tmp_path):
    """...and sends only files inside the data folder, whatever the resolver (a database row) says."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"data")
    (tmp_path / "outside").write_bytes(b"secret")
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside")

    async def resolve(claims: LinkClaims) -> Path | None:
        return tmp_path / "data" / claims.ref

    async def main() -> None:
        settings = load_settings(data_dir=tmp_path / "data", http_bind="127.0.0.1:0", link_lifetime_s=60)
        async with FileServer.from_settings(settings, resolve) as server, aiohttp.ClientSession() as http:
            url = server.make_url(OWNER, "epoch", "f", "f.bin")
            assert url.startswith(f"http://127.0.0.1:{server.port}/files/") and server.port != 0
            assert await status_and_text(http, url) == (200, "data")
            for ref in ("link", "../outside", "."):
                url = server.make_url(OWNER, "epoch", ref, "f.bin")
                assert (await status_and_text(http, url))[0] == 404, ref
        public = load_settings(data_dir=tmp_path / "data", public_url="https://lora.example.org/")
        url = FileServer.from_settings(public, resolve).make_url(OWNER, "epoch", "j/1", "f.bin")
        assert url.startswith("https://lora.example.org/files/") and url.endswith("/f.bin")

    asyncio.run(main())
    assert (tmp_path / "data" / "link-secret").exists()


# -- refusals in the browser's language ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("ja", "ja"),
        ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
        ("en-US,en;q=0.9,ja;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,ja;q=0.5", "ja"),  # of the bot's languages, Japanese is preferred
        ("fr,en;q=0.8,ja;q=0.5", "en"),
        ("ja;q=0,en", "en"),  # q=0: not acceptable
        ("*", "en"),
        ("ja;q=bogus, en;q=0.1", "en"),
        ("JA-jp", "ja"),
    ],
)
def test_accepted_language(header, language):
    assert accepted_language(header) == language


def test_refusals_answer_in_the_browsers_language(tmp_path):
    """Each refusal (410 expired, 403 bad link, 403 other name, 404 gone) in Japanese for a browser
    that prefers it, in English otherwise; plain UTF-8 text that says its language."""
    files = {(OWNER, "epoch", "job-1/4"): tmp_path / "gone.safetensors"}
    japanese = {
        "expired": (410, "このリンクは期限切れです。ボットから新しいリンクを受け取ってください"),
        "bad": (403, "このリンクは無効です(書き換えられたか、別の鍵で署名されています)"),
        "malformed": (403, "このリンクは形式が正しくありません"),
        "other name": (403, "ファイル名がこのリンクと一致しません"),
        "gone": (404, "このファイルはもうダウンロードできません"),
    }
    english = {
        "expired": "this link has expired; ask the bot for a new one",
        "bad": "this link is not valid (altered, or signed with another secret)",
        "malformed": "this link is malformed",
        "other name": "the file name does not match this link",
        "gone": "this file is no longer available",
    }

    async def scenario(server: FileServer, http: aiohttp.ClientSession, clock: Clock) -> None:
        url = server.make_url(OWNER, "epoch", "job-1/4", "f.safetensors")
        old = LinkSigner(SECRET, 60, clock=lambda: clock.now - 3600).sign(
            OWNER, "epoch", "job-1/4", "f.safetensors"
        )
        prefix, token, name = url.rsplit("/", 2)
        urls = {
            "expired": f"{prefix}/{old}/{name}",
            "bad": f"{prefix}/{_forge(token, 0, OTHER)}/{name}",
            "malformed": f"{prefix}/a.b/{name}",
            "other name": f"{prefix}/{token}/other.safetensors",
            "gone": url,
        }
        for what, bad in urls.items():
            status, text = japanese[what]
            for header, language, expected in [
                ("ja,en-US;q=0.9,en;q=0.8", "ja", text),
                ("en-US,en;q=0.9,ja;q=0.8", "en", english[what]),
                (None, "en", english[what]),
            ]:
                headers = {"Accept-Language": header} if header else {}
                async with http.get(bad, headers=headers) as response:
                    assert response.status == status, (what, header)
                    assert await response.text() == expected + "\n", (what, header)
                    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
                    assert response.headers["Content-Language"] == language
                    assert "Accept-Language" in response.headers["Vary"]
                    assert response.headers["Cache-Control"] == "private, no-store"

    serve(files, scenario)


def test_link_errors_stay_english_for_the_logs():
    with pytest.raises(Expired) as info:
        LinkSigner(SECRET, 60, clock=Clock()).verify(
            LinkSigner(SECRET, 60, clock=lambda: 0).sign(OWNER, "k", "r", "f")
        )
    assert str(info.value) == "this link has expired; ask the bot for a new one"
