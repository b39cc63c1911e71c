"""A full disk during an upload: the member is told, nothing is added and nothing half-written stays.

Injected ENOSPC from the file writer, a real SQLITE_FULL (the database capped with max_page_count),
a real full file system (a small tmpfs, where this test may mount one) and the bot's progress line.
"""

from __future__ import annotations

import asyncio
import errno
import io
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.datasets import ingest
from bot.datasets.service import DiskFull, ServiceError
from bot.loopback import Upload
from bot.settings import load_settings
from db.database import is_disk_full
from tests.bot_harness import bot_world

from .test_dataset_service import make_zip, new_dataset, picture, with_services


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (temp files included)."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def noise_png(seed: int, side: int = 256) -> bytes:
    """A picture PNG cannot compress (about 190 KB at 256x256)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def enospc_on_call(monkeypatch, n: int) -> None:
    """The file writer fails with ENOSPC on its n-th image (mid-batch, with a temp file open)."""
    calls = {"n": 0}
    real = ingest.encode_png

    def encode(image):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(image)

    monkeypatch.setattr(ingest, "encode_png", encode)


def test_out_of_space_recognizes_a_full_disk_and_nothing_else():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(RuntimeError("disk full"))


def test_enospc_mid_batch_adds_nothing_and_leaves_no_file(tmp_path, monkeypatch):
    async def body(svc):
        ds = await new_dataset(svc)
        await svc.add_files(1, "chara", [("kept.png", picture(50))])
        before = files_in(svc.folder(ds))
        enospc_on_call(monkeypatch, 3)
        with pytest.raises(DiskFull, match="the server ran out of disk space; nothing was added"):
            await svc.add_files(1, "chara", [(f"p{i}.png", picture(i)) for i in range(5)])
        assert [i.original_name for i in await svc.images(1, "chara")] == ["kept.png"]
        assert files_in(svc.folder(ds)) == before  # neither the 2 written nor the half-written one
        monkeypatch.undo()
        report = await svc.add_files(1, "chara", [(f"p{i}.png", picture(i)) for i in range(5)])
        assert len(report.added) == 5  # space again: the same upload goes through

    with_services(tmp_path, body)


def test_a_full_database_adds_nothing_and_leaves_no_file(tmp_path):
    """SQLite's own "database or disk is full", from a database capped at its current size."""

    async def body(svc):
        ds = await new_dataset(svc)
        async with svc.conn.execute("PRAGMA page_count") as cur:
            pages = (await cur.fetchone())[0]
        await svc.conn.execute(f"PRAGMA max_page_count = {pages}")
        caption = ", ".join(f"tag_{i}" for i in range(300))  # rows that need new pages
        entries = {f"p{i}.png": picture(i) for i in range(6)} | {f"p{i}.txt": caption.encode() for i in range(6)}
        zipped = make_zip(entries)
        with pytest.raises(DiskFull, match="ran out of disk space; nothing was added"):
            await svc.add_files(1, "chara", [("set.zip", zipped)])
        assert await svc.images(1, "chara") == [] and files_in(svc.folder(ds)) == []
        await svc.conn.execute("PRAGMA max_page_count = 1073741823")
        assert len((await svc.add_files(1, "chara", [("set.zip", zipped)])).added) == 6

    with_services(tmp_path, body)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs where the datasets' images go; skipped where mounting is not allowed (not root)."""
    mount = tmp_path / "data" / "datasets"
    mount.mkdir(parents=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=True)


def test_a_really_full_disk_adds_nothing_and_leaves_no_file(tmp_path, small_disk):
    async def body(svc):
        await new_dataset(svc)
        with pytest.raises(DiskFull, match="ran out of disk space; nothing was added"):
            await svc.add_files(1, "chara", [(f"n{i}.png", noise_png(i)) for i in range(8)])  # ~1.5 MB
        assert await svc.images(1, "chara") == [] and files_in(small_disk) == []
        report = await svc.add_files(1, "chara", [(f"n{i}.png", noise_png(i)) for i in range(2)])
        assert len(report.added) == 2  # what fits still goes in
        assert files_in(small_disk) == sorted(i.file_name for i in await svc.images(1, "chara"))

    with_services(tmp_path, body)


def test_a_failed_upload_ends_its_progress_line_with_what_happened(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path / "data", command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            await new_dataset(w.services.datasets, owner=w.alice.user_id)
            enospc_on_call(monkeypatch, 2)
            files = {f"file{i + 1}": Upload(f"p{i}.png", picture(i)) for i in range(4)}
            inter = await w.slash(w.alice, "upload", {"dataset": "chara", **files})
            line = await w.server.wait_for_message(
                lambda m: m is inter.original and "Upload stopped" in (m.content or ""), 60
            )
            assert line.content == (
                "❌ Upload stopped: the server ran out of disk space; nothing was added. Tell the operator"
            )
            assert not line.embeds
            assert await w.services.datasets.images(w.alice.user_id, "chara") == []
            ds = await w.services.datasets.get(w.alice.user_id, "chara")
            assert files_in(w.services.datasets.folder(ds)) == []

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_disk_full_is_a_service_error_for_the_member():
    assert issubclass(DiskFull, ServiceError) and str(DiskFull()) == "the server ran out of disk space"


def test_the_cli_says_the_disk_is_full_in_one_error_line(tmp_path, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORABOT_DATA_DIR", str(tmp_path / "data"))
    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(picture(i))
    assert main(["dataset", "new", "d", "--user", "1", "--base-model", "tiny-sd15", "--trigger", "tk"]) == 0
    enospc_on_call(monkeypatch, 2)
    code = main(["dataset", "add", "d", "--user", "1", "p0.png", "p1.png", "p2.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [
        "error: the server ran out of disk space; nothing was added: free some space, then try again"
    ], err
    assert files_in(tmp_path / "data" / "datasets") == []
