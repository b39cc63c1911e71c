"""The dataset service under concurrency: shared connections, two processes, deletes mid-upload."""

from __future__ import annotations

import asyncio

import pytest

from bot.loopback.waiting import wait_for
from bot.services import open_services
from bot.settings import load_settings

from .test_dataset_service import new_dataset, picture, with_services


def test_interrupted_ingest_leftovers_are_swept_and_concurrent_uploads_do_not_collide(tmp_path):
    import os
    import time

    async def body(svc):
        ds = await new_dataset(svc)
        folder = svc.folder(ds)
        folder.mkdir(parents=True)
        old, fresh = folder / ".0009.png.tmp", folder / "0010.png"
        for path in (old, fresh):
            path.write_bytes(b"left behind")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        batches = [[(f"a{i}.png", picture(100 + i))] for i in range(3)]
        reports = await asyncio.gather(*(svc.add_files(1, "chara", b) for b in batches))
        assert sum(len(r.added) for r in reports) == 3
        names = sorted(p.name for p in folder.iterdir())
        assert ".0009.png.tmp" not in names and "0010.png" in names  # too fresh to be sure: kept
        assert len({i.file_name for i in await svc.images(1, "chara")}) == 3

    with_services(tmp_path, body)


def test_concurrent_commands_on_one_connection(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2))])
        await asyncio.gather(svc.add_tags(1, "chara", ["one"]), svc.add_tags(1, "chara", ["two"]))
        captions = [i.caption for i in await svc.images(1, "chara")]
        assert all("one" in c and "two" in c for c in captions)  # neither edit lost
        created = await asyncio.gather(*(svc.create(1, f"ds{i}", "tiny-sd15", "tk") for i in range(3)))
        assert len({d.id for d in created}) == 3
        await svc.undo(1, "chara")
        await svc.undo(1, "chara")
        assert all("one" not in i.caption and "two" not in i.caption for i in await svc.images(1, "chara"))

    with_services(tmp_path, body)


def test_two_processes_adding_to_one_dataset(tmp_path):
    """Two services on two connections (the bot and the CLI): every row has its file, no file is lost."""

    async def go():
        settings = load_settings(data_dir=tmp_path / "data")
        async with open_services(settings) as one, open_services(settings) as two:
            await new_dataset(one.datasets)
            batches = [
                [(f"{who}{i}.png", picture(seed + i))]
                for who, seed in (("x", 100), ("y", 200))
                for i in range(3)
            ]
            services = [one.datasets, two.datasets] * 3
            await asyncio.gather(
                *(svc.add_files(1, "chara", b) for svc, b in zip(services, batches, strict=True))
            )
            images = await one.datasets.images(1, "chara")
            folder = one.datasets.folder(await one.datasets.get(1, "chara"))
            assert len(images) == 6
            assert sorted(p.name for p in folder.iterdir()) == sorted(i.file_name for i in images)

    asyncio.run(go())


def test_delete_during_an_upload_stores_nothing(tmp_path):
    async def body(svc):
        ds = await new_dataset(svc)
        upload = asyncio.create_task(svc.add_files(1, "chara", [(f"p{i}.png", picture(i)) for i in range(4)]))
        # the upload holds the dataset's lock first
        await wait_for(lambda: svc._lock(ds.id).locked(), 30, "the upload to take the dataset's lock", every=0.001)
        await svc.delete(1, "chara")  # waits for the upload, then removes everything
        report = await upload
        replacement = await new_dataset(svc, owner=2)
        assert replacement.id != ds.id  # ids are never reused
        assert await svc.images(2, "chara") == [] and len(report.added) == 4
        assert not svc.folder(ds).exists()

    with_services(tmp_path, body)


def test_store_refuses_a_dataset_deleted_by_another_process(tmp_path):
    from bot.datasets import ingest
    from bot.datasets.images import Limits, expand_upload

    async def body(svc):
        ds = await new_dataset(svc)
        await svc.delete(1, "chara")  # as if another process deleted it mid-upload
        images, _ = expand_upload("a.png", picture(1), Limits())
        with pytest.raises(ingest.DatasetGone):
            await ingest.store(svc.conn, ds, svc.folder(ds), images, [("tkchar", None)], limit=10)
        assert list(svc.folder(ds).iterdir()) == []

    with_services(tmp_path, body)
