"""/help walks the guide's ten steps in five pages with the commands for each, in the member's
language, and opens at a chosen step."""

from __future__ import annotations

import asyncio

from tests.bot_harness import bot_world
from tests.queue_helpers import queue_settings


def test_help_pages_through_the_ten_steps_in_both_languages(tmp_path, tiny_sd15):
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            first = await w.reply(await w.slash(w.alice, "help"))
            names = [f["name"] for f in first.embeds[0]["fields"]]
            assert names == ["Step 1: Make a dataset", "Step 2: Add images"]
            assert "`/dataset new`" in first.embeds[0]["fields"][0]["value"]
            assert first.embeds[0]["footer"]["text"] == "page 1/5"
            seen = list(names)
            for page in range(2, 6):
                arrow = next(c for row in first.components for c in row["components"]
                             if (c.get("emoji") or {}).get("name") == "▶️")  # fmt: skip
                await w.click(first, w.alice, arrow["custom_id"])
                await w.server.wait_for_message(
                    lambda m, page=page: m is first and m.embeds[0]["footer"]["text"] == f"page {page}/5", 10
                )
                seen += [f["name"] for f in first.embeds[0]["fields"]]
            assert [n.split(":")[0] for n in seen] == [f"Step {i}" for i in range(1, 11)]
            ja = await w.reply(await w.slash(w.alice, "help", {"step": 7}, locale="ja"))
            fields = ja.embeds[0]["fields"]
            assert (
                ja.embeds[0]["title"] == "📖 LoRAの作り方" and ja.embeds[0]["footer"]["text"] == "4/5 ページ"
            )
            assert [f["name"] for f in fields] == [
                "ステップ 7: プレビューを見る",
                "ステップ 8: エポックを選ぶ",
            ]
            assert "`/epochs`" in fields[1]["value"]

    asyncio.run(asyncio.wait_for(scenario(), 120))
