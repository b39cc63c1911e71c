"""Migration 0005 rebuilds ``jobs`` without the family CHECK: every row, id, counter, index and the
rows that reference a job stay (no cascade), foreign keys come back on, and a Flux job fits."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

from db.database import MIGRATIONS_DIR, connect, migrate, migrations


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_the_rebuild_keeps_every_job_and_what_refers_to_it(tmp_path):
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-4]_*.sql")):
        shutil.copy(path, old)
    db = tmp_path / "bot.sqlite3"

    async def to(directory) -> tuple[int, int]:
        """(version, foreign_keys) of the connection that migrated."""
        conn = await connect(db)
        try:
            version = await migrate(conn, directory)
            return version, (await (await conn.execute("PRAGMA foreign_keys")).fetchone())[0]
        finally:
            await conn.close()

    assert asyncio.run(to(old)) == (4, 1)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("INSERT INTO users (user_id, balance, reset_period) VALUES (1, 100, '2026-12-02')")
        for job_id in (1, 2, 7):
            conn.execute(
                "INSERT INTO jobs (id, owner_id, kind, state, title, base_model, family, resolution, total_steps,"
                " cost, spec, folder, created_at, announced) VALUES (?, 1, 'train', 'done', 't', 'm', 'sdxl',"
                " 1024, 10, 5, '{}', 'f', 0, 1)",
                (job_id,),
            )
            conn.execute(
                "INSERT INTO job_events (job_id, kind, payload, created_at) VALUES (?, 'done', '{}', 0)",
                (job_id,),
            )
        conn.execute("DELETE FROM job_events WHERE job_id = 7")
        conn.execute("DELETE FROM jobs WHERE id = 7")  # the counter stays at 7
        before = _rows(conn, "SELECT * FROM jobs ORDER BY id")

    assert asyncio.run(to(MIGRATIONS_DIR)) == (len(migrations()), 1)  # foreign keys back on
    with sqlite3.connect(db) as conn:
        assert _rows(conn, "SELECT * FROM jobs ORDER BY id") == before
        assert _rows(conn, "SELECT job_id FROM job_events ORDER BY job_id") == [(1,), (2,)]
        assert _rows(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'jobs'") == [(7,)]
        indexes = {
            r[0]
            for r in _rows(conn, "SELECT name FROM sqlite_master WHERE tbl_name = 'jobs' AND type = 'index'")
        }
        assert {"jobs_queue", "jobs_by_owner", "jobs_unannounced"} <= indexes
        conn.execute(
            "INSERT INTO jobs (owner_id, kind, state, title, base_model, family, resolution, total_steps, cost,"
            " spec, folder, created_at) VALUES (1, 'train', 'queued', 't', 'm', 'flux', 1024, 10, 5, '{}', 'f', 0)"
        )
        assert _rows(conn, "SELECT max(id) FROM jobs") == [(8,)]
        assert not _rows(conn, "PRAGMA foreign_key_check")
