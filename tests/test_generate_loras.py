"""/generate with several LoRAs at a weight each and a sampler, through the loopback Discord and the
real discord.py client: the job the trainer (tests/fake_trainer.py serve) gets carries them, the
charge is the estimate, and each bad input is one clear message that changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from bot.queue.generation import GenerateRequest
from bot.queue.service import QueueError
from db import jobs as repo
from db import library as library_repo
from db import stamina as stamina_repo
from db.database import transaction
from tests.bot_harness import World, bot_world
from tests.conftest import base_job, train_in_process, write_dataset
from tests.queue_helpers import queue_settings
from tests.test_dispatcher import finished
from trainer.contract import GenerateJob, parse_job

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]
#: The fake trainer never opens a model, and a registry entry with a family is not looked at on disk.
MODELS = {key: Path(f"/nonexistent/{key}") for key in ("tiny-sd15", "tiny-sdxl", "tiny-flux")}
FULL = 150  # a member's daily stamina


@pytest.fixture
def settings(tmp_path):
    return queue_settings(tmp_path, MODELS, command_cooldown_s=0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def add_lora(
    w: World, owner: int, name: str, base: str = "tiny-sd15", data: bytes | None = None
) -> library_repo.LoraRow:
    """A LoRA in ``owner``'s library (by default random bytes: the fake trainer only reads them)."""
    path = w.services.library.folder(owner) / f"{name.replace(' ', '_')}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(2048) if data is None else data)
    family = base.rsplit("-", 1)[-1]
    async with transaction(w.services.conn):
        return await library_repo.insert_lora(
            w.services.conn, owner, name, str(path), base, family, None, None
        )


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def queued_id(content: str) -> int:
    found = re.search(r"Queued \*\*#(\d+)\*\*", content)
    assert found, content
    return int(found.group(1))


async def sent_jobs(record: Path, count: int) -> list[dict]:
    """The jobs the fake trainer got, once it got ``count``."""
    for _ in range(200):
        lines = record.read_text().splitlines() if record.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the trainer got {len(lines)} jobs, not {count}")


async def nothing_changed(w: World, member: int) -> None:
    assert (await w.services.stamina.balance(member)).balance == FULL
    assert await repo.list_jobs(w.services.conn, kind="generate") == []


def test_three_loras_and_a_sampler_reach_the_trainer_at_the_estimated_cost(settings, tmp_path, monkeypatch):
    record = tmp_path / "sent.jsonl"
    monkeypatch.setenv("FAKE_SERVE_RECORD", str(record))

    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            me = w.alice.user_id
            loras = [await add_lora(w, me, name) for name in ("chara", "style", "detail")]
            inter = await w.server.send_autocomplete(
                w.guild, w.alice, "generate", {"lora2": "st"}, focused="lora2"
            )
            await inter.wait_response()
            assert [c["value"] for c in inter.choices] == ["style"]
            options = {"prompt": "tkchar, smile", "lora": "chara", "weight": 0.8, "lora2": "style",
                       "lora3": "detail", "weight3": 0.3, "sampler": "dpmpp_2m_karras", "steps": 2, "size": "64"}  # fmt: skip
            estimate = await w.services.generation.estimate(
                me, GenerateRequest("tkchar, smile", loras=(("chara", 0.8), ("style", 1.0), ("detail", 0.3)),
                                    sampler="dpmpp_2m_karras", steps=2, size="64"),
            )  # fmt: skip
            reply = await w.reply(await w.slash(w.alice, "generate", options))
            job = await finished(w.services.conn, queued_id(reply.content))
            assert job.state == "done", job.error
            assert job.cost == estimate.cost and f"for {estimate.cost} stamina" in reply.content
            assert [r.delta for r in await stamina_repo.job_ledger(w.services.conn, job.id)] == [
                -estimate.cost
            ]

            (sent,) = await sent_jobs(record, 1)
            assert sent["sampler"] == "dpmpp_2m_karras" and sent["steps"] == 2
            assert [ref["weight"] for ref in sent["loras"]] == [0.8, 1.0, 0.3]
            assert sent.pop("lora_sha256") == [sha256(lora.path) for lora in loras]
            assert all(Path(ref["path"]).is_relative_to(job.folder) for ref in sent["loras"])  # its own links
            assert parse_job(sent, GenerateJob).loras[2].weight == 0.3  # the trainer's contract takes it

            # the single-LoRA usage as before: lora + weight, nothing else
            reply = await w.reply(
                await w.slash(w.alice, "generate", {"prompt": "tkchar", "lora": "chara", "weight": 0.7})
            )
            single = await repo.get_job(w.services.conn, queued_id(reply.content))
            assert [ref["weight"] for ref in single.spec["options"]["loras"]] == [0.7]
            assert "sampler" not in single.spec["options"]

    run(scenario())


def test_bad_lora_picks_are_refused_with_a_clear_message_and_charge_nothing(settings):
    async def scenario():
        async with bot_world(settings) as w:
            me = w.alice.user_id
            for name in ("a", "b", "c", "d"):
                await add_lora(w, me, name)
            await add_lora(w, me, "xl", base="tiny-sdxl")
            for options, message in [
                ({"lora": "a", "lora2": "nope"}, "❌ you have no LoRA named 'nope' and none is shared"),
                ({"lora": "a", "weight2": 0.5}, "❌ weight2 is set but lora2 is empty"),
                ({"lora": "a", "lora2": "a"}, "❌ 'a' is picked twice"),
                ({"lora": "a", "lora3": "xl"}, "❌ LoRA 'xl' was trained on tiny-sdxl (SDXL): it does not fit tiny-sd15"),
                ({"lora": "a", "weight": 0.5, "sampler": "euler_a", "base_model": "tiny-flux"}, "❌ LoRA 'a' was trained"),
                ({"base_model": "tiny-flux", "sampler": "euler_a"}, "❌ sampler does not apply to Flux.1"),
            ]:  # fmt: skip
                reply = await w.reply(await w.slash(w.alice, "generate", {"prompt": "tk", **options}))
                assert reply.ephemeral and reply.content.startswith(message), (options, reply.content)
            # Discord's client sends no weight outside 0-2 and has no fourth LoRA
            for options in ({"lora": "a", "weight2": 2.5, "lora2": "b"}, {"lora4": "d"}):
                with pytest.raises(ValueError):
                    await w.server.send_interaction(w.guild, w.alice, "generate", {"prompt": "tk", **options})
            # the service says the same to any caller
            for request, message in [
                (GenerateRequest("tk", lora="a", loras=(("b", 1.0), ("c", 1.0), ("d", 1.0))), "at most 3 LoRAs go together \\(got 4\\)"),
                (GenerateRequest("tk", lora="a", loras=(("b", 2.5),)), "the weight of 'b' is 2.5: a LoRA weight goes from -2 to 2"),
                (GenerateRequest("tk", lora="a", weight=float("nan")), "the weight of 'a' is nan"),
                (GenerateRequest("tk", base_model="tiny-sd15", sampler="fancy"), "sampler"),
            ]:  # fmt: skip
                with pytest.raises(QueueError, match=message):
                    await w.services.generation.submit(me, request)
            await nothing_changed(w, me)
            assert len(list(settings.jobs_dir().glob("*"))) == 0  # no job folder left behind

    run(scenario())


@pytest.mark.slow
def test_the_real_trainer_renders_two_loras_with_a_sampler(tmp_path, tiny_sd15):
    """The tiny model through the bot's generation lane: two LoRAs at their weights, DPM++ 2M Karras."""
    out = tmp_path / "trained"
    train = base_job(tiny_sd15, write_dataset(tmp_path / "data", count=2), out, output_name="l", repeats=2)
    assert train_in_process(train)[1] == 0
    settings = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15}, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings, queue=True) as w:
            for name in ("chara", "style"):
                await add_lora(w, w.alice.user_id, name, data=(out / "l.safetensors").read_bytes())
            options = {"prompt": "tkchar", "lora": "chara", "weight": 0.9, "lora2": "style", "weight2": 0.5,
                       "sampler": "dpmpp_2m_karras", "steps": 2, "size": "64"}  # fmt: skip
            job_id = queued_id((await w.reply(await w.slash(w.alice, "generate", options))).content)
            job = await finished(w.services.conn, job_id)
            assert job.state == "done" and job.refunded == 0, job.error
            assert len(await repo.files(w.services.conn, job_id)) == 1
            assert job.spec["options"]["sampler"] == "dpmpp_2m_karras"

    run(scenario())
