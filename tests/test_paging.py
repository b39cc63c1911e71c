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


def test_dataset_and_lora_lists_and_the_add_to_dataset_picker_page_past_25(tmp_path, tiny_sd15):
    from bot.loopback import Upload
    from db import library as lib
    from tests.test_dataset_service import picture

    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            owner = w.alice.user_id
            names = [f"set{i:02d}" for i in range(30)]
            for name in names:
                await w.services.datasets.create(owner, name, "tiny-sd15", "tk")
            async with transaction(w.services.conn):
                for i in range(27):
                    await lib.insert_lora(w.services.conn, owner, f"lora{i:02d}", "/nonexistent.safetensors",
                                          "tiny-sd15", "sd15", None, None)  # fmt: skip
            listing = await w.reply(await w.slash(w.alice, "dataset list"))
            shown, last = await _walk_pages(w, w.alice, listing, r"\bset(\d\d)\b")
            assert sorted(shown) == [n[3:] for n in names] and last == "page 2/2"
            loras = await w.reply(await w.slash(w.alice, "lora list", locale="ja"))
            shown, last = await _walk_pages(w, w.alice, loras, r"\blora(\d\d)\b")
            assert sorted(map(int, shown)) == list(range(27)) and last.endswith("3/3 ページ")
            posted = await w.server.post_message(w.channel, w.bob, "look", [Upload("a.png", picture(1))])
            inter = await w.server.send_message_command(w.guild, w.alice, "Add to dataset", posted)
            await inter.wait_response()
            menu = await w.reply(inter)
            first = [o["value"] for o in menu.components[0]["components"][0]["options"]]
            assert first == names[:25] and "page 1/2" in menu.content
            arrow = next(c for row in menu.components for c in row["components"]
                         if (c.get("emoji") or {}).get("name") == "▶️")  # fmt: skip
            await w.click(menu, w.alice, arrow["custom_id"])
            await w.server.wait_for_message(lambda m: m is menu and "page 2/2" in m.content, 10)
            select = menu.components[0]["components"][0]
            assert [o["value"] for o in select["options"]] == names[25:]
            await w.click(menu, w.alice, select["custom_id"], values=["set29"])
            await w.server.wait_for_message(lambda m: m is menu and bool(m.embeds), 30)
            assert len(await w.services.datasets.images(owner, "set29")) == 1

    asyncio.run(asyncio.wait_for(scenario(), 180))
