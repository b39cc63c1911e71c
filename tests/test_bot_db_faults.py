"""Members' commands while another process holds the database's write lock for 30 s, through the
loopback Discord: reads answer within Discord's 3 s as usual, a write answers within them too
(refused with "busy", nothing changed), and it goes through once the lock is free."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.bot_harness import bot_world, queued_job
from tests.queue_helpers import queue_settings
from tests.test_db_faults import HeldLock

HELD_S = 30  # the holder's intent; the test ends it once its checks are done
READS_S = 10
NEW = {"name": "later", "base_model": "tiny-sd15", "trigger": "tkl"}


@pytest.fixture
def settings(tmp_path):
    return queue_settings(tmp_path, {"tiny-sd15": tmp_path / "unused"}, command_cooldown_s=0)


def test_commands_answer_in_time_while_another_process_holds_the_write_lock(settings):
    async def scenario():
        async with bot_world(settings) as w:
            job = await queued_job(w)
            await w.reply(await w.slash(w.alice, "stamina"))  # alice exists: /stamina is a read now
            holder = HeldLock(settings.database_path(), HELD_S)
            try:
                await holder.held()
                t0 = time.monotonic()
                reads = []
                while time.monotonic() - t0 < READS_S:
                    for command, options in (("queue", {}), ("stamina", {}), ("epochs", {"job": str(job.id)})):
                        inter = await w.slash(w.alice, command, options)
                        await w.reply(inter)
                        reads.append((command, inter.ack_s, inter.late_callbacks))
                slow = [r for r in reads if r[1] is None or r[1] > 3.0 or r[2]]
                assert not slow, f"reads answered late under the held lock: {slow}"
                inter = await w.slash(w.alice, "dataset new", NEW)
                refused = await w.reply(inter)
                assert inter.ack_s is not None and inter.ack_s <= 3.0 and not inter.late_callbacks
                assert refused.ephemeral and "busy" in refused.content, refused.content
                assert [d.name for d, _ in await w.services.datasets.list(w.alice.user_id)] == ["chara"]
                assert holder.proc.poll() is None, "the lock was released before the checks were done"
            finally:
                holder.kill()
            await holder.released()
            answer = await w.reply(await w.slash(w.alice, "dataset new", NEW))
            assert "busy" not in answer.content
            assert sorted(d.name for d, _ in await w.services.datasets.list(w.alice.user_id)) == ["chara", "later"]

    asyncio.run(asyncio.wait_for(scenario(), 180))
