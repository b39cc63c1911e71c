"""Lists that never cut: /queue pages through every job a member ever ran (not the last five) and
/stamina through the whole history, past 25 and past 100 entries, in the member's language."""

from __future__ import annotations

import asyncio
import re

from db import jobs as repo
from db.database import transaction
from tests.bot_harness import bot_world
from tests.queue_helpers import queue_settings


async def _ended_jobs(services, owner: int, count: int) -> list[int]:
    await services.stamina.ensure_user(owner)
    ids = []
    async with transaction(services.conn):
        for i in range(count):
            new = repo.NewJob(owner, "train", 0, f"old{i}", None, "tiny-sd15", "sd15", 64, 1, 10, 2,
                              {"epochs": 1, "options": {}}, "/nonexistent")  # fmt: skip
            job = await repo.insert_job(services.conn, new)
            await repo.transition(services.conn, job.id, ("queued",), "done", finished_at=1.0)
            ids.append(job.id)
    return ids


async def _walk_pages(w, member, message, pattern: str) -> tuple[list[str], str]:
    """Every page of a paged message, clicking ▶ until it is disabled; the ids each page shows."""
    seen, footer = [], ""
    while True:
        text = message.embeds[0].get("description", "") + "".join(
            f["value"] for f in message.embeds[0].get("fields", [])
        )
        seen += re.findall(pattern, text)
        footer = message.embeds[0].get("footer", {}).get("text", "")
        arrow = next(c for row in message.components for c in row["components"]
                     if (c.get("emoji") or {}).get("name") == "▶️")  # fmt: skip
        if arrow.get("disabled"):
            return seen, footer
        before = footer
        await w.click(message, member, arrow["custom_id"])
        await w.server.wait_for_message(
            lambda m, before=before: m is message and m.embeds[0]["footer"]["text"] != before, 10
        )


def test_queue_pages_through_every_job_past_25(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            ids = await _ended_jobs(w.services, w.alice.user_id, 30)
            listing = await w.reply(await w.slash(w.alice, "queue"))
            assert listing.embeds[0]["footer"]["text"] == "page 1/4"
            shown, last = await _walk_pages(w, w.alice, listing, r"\*\*#(\d+)\*\*")
            assert sorted(map(int, shown)) == ids and last == "page 4/4"
            ja = await w.reply(await w.slash(w.alice, "queue", locale="ja"))
            assert (
                ja.embeds[0]["title"] == "📋 自分のジョブ" and ja.embeds[0]["footer"]["text"] == "1/4 ページ"
            )
            assert "完了" in ja.embeds[0]["description"] and "学習" in ja.embeds[0]["description"]

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_stamina_pages_through_the_whole_history_past_100(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            for i in range(110):
                await w.services.stamina.grant(w.alice.user_id, 1, actor_id=w.olga.user_id, note=f"g{i}")
            listing = await w.reply(await w.slash(w.alice, "stamina"))
            shown, last = await _walk_pages(w, w.alice, listing, r"\bg(\d+)\b")
            assert sorted(map(int, shown)) == list(range(110)) and last.endswith("page 8/8")
            ja = await w.reply(await w.slash(w.alice, "stamina", locale="ja"))
            assert ja.embeds[0]["title"] == "⚡ スタミナ" and "付与" in ja.embeds[0]["fields"][0]["value"]

    asyncio.run(asyncio.wait_for(scenario(), 180))
