"""The database layer: pragmas, numbered migrations in transactions, repository round trips."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from db import datasets as repo
from db.database import (
    MigrationError,
    connect,
    migrate,
    migrations,
    open_database,
    schema_version,
    transaction,
)


def run(coro):
    return asyncio.run(coro)


def test_migrations_apply_once_with_the_pragmas(tmp_path):
    async def go():
        async with open_database(tmp_path / "a.db") as conn:
            assert await schema_version(conn) == len(migrations())
            pragmas = {}
            for name in ("journal_mode", "foreign_keys", "busy_timeout"):
                async with conn.execute(f"PRAGMA {name}") as cur:
                    pragmas[name] = (await cur.fetchone())[0]
            assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}
            assert await migrate(conn) == len(migrations())  # nothing left to do

    run(go())


def test_migration_numbering_and_failure_rollback(tmp_path):
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x INTEGER);")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (x INTEGER);")
    with pytest.raises(MigrationError, match="0002"):
        migrations(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nope VALUES (1);")

    async def go():
        conn = await connect(tmp_path / "db.sqlite")
        with pytest.raises(sqlite3.OperationalError):
            await migrate(conn, tmp_path)
        assert await schema_version(conn) == 1  # 0001 applied, 0002 rolled back whole
        async with conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'") as cur:
            assert await cur.fetchone() is None
        await conn.execute("PRAGMA user_version = 9")
        with pytest.raises(MigrationError, match="newer"):
            await migrate(conn, tmp_path)
        await conn.close()

    run(go())


def test_dataset_rows_and_caption_undo(tmp_path):
    async def go():
        async with open_database(tmp_path / "a.db") as conn:
            fields = dict(base_model="tiny-sd15", trigger_word="tk", crop_mode="none", crop_width=512,
                          crop_height=512, tagger="tiny", general_threshold=0.35, character_threshold=0.85)  # fmt: skip
            async with transaction(conn):
                ds = await repo.insert_dataset(conn, owner_id=1, name="Mine", **fields)
            with pytest.raises(sqlite3.IntegrityError):
                await repo.insert_dataset(conn, owner_id=1, name="mine", **fields)  # names ignore case
            other = await repo.insert_dataset(conn, owner_id=2, name="mine", **fields)
            assert other.id != ds.id
            big_hash = (1 << 64) - 5  # unsigned 64-bit round trip
            await repo.insert_images(
                conn, ds.id, [repo.NewImage("0001.png", "a.png", "s1", big_hash, 8, 8, "tk, a")]
            )
            (image,) = await repo.list_images(conn, ds.id)
            assert image.phash == big_hash
            async with transaction(conn):
                await repo.record_caption_edit(conn, ds.id, "remove a", {image.id: ("tk, a", "tk")})
            assert (await repo.list_images(conn, ds.id))[0].caption == "tk"
            async with transaction(conn):
                assert await repo.undo_last_edit(conn, ds.id) == ("remove a", 1)
            assert (await repo.list_images(conn, ds.id))[0].caption == "tk, a"
            assert await repo.undo_last_edit(conn, ds.id) is None
            await repo.delete_dataset(conn, ds.id)
            assert await repo.count_images(conn, ds.id) == 0  # cascaded
            assert [d.name for d, _ in await repo.list_datasets(conn, 2)] == ["mine"]

    run(go())


def test_two_processes_migrating_a_fresh_database(tmp_path):
    async def go():
        one, two = await connect(tmp_path / "db.sqlite"), await connect(tmp_path / "db.sqlite")
        versions = await asyncio.gather(migrate(one), migrate(two))
        assert versions == [len(migrations())] * 2
        await one.close()
        await two.close()

    run(go())


def test_folders_built_once_even_when_builders_race(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from bot.buildonce import build_folder_once

    calls = []

    def build(folder):
        calls.append(folder)
        folder.mkdir()
        (folder / "a.bin").write_bytes(b"x" * 1000)
        (folder / "done").write_text("ok")

    target = tmp_path / "models" / "thing"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: build_folder_once(target, "done", build), range(4)))
    assert results == [target] * 4 and (target / "done").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]  # no temp folder left
    build_folder_once(target, "done", build)
    assert len(calls) <= 4
