"""A LoRA shared with the server, through the loopback Discord and the real discord.py client:
another member picks it (marked with the owner's name), generates with it and downloads it, cannot
rename, delete or unshare it; once unshared they cannot use it. Also migration 0006."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.app import link_resolver
from bot.links import LinkClaims
from bot.queue.generation import GenerateRequest
from bot.queue.service import QueueError
from db.database import connect, migrate, migrations
from tests.bot_harness import World, bot_world, first_id
from tests.queue_helpers import queue_settings
from tests.test_dispatcher import finished
from tests.test_generate_loras import FAKE, MODELS, add_lora, queued_id, run, sent_jobs, sha256


@pytest.fixture
def settings(tmp_path):
    return queue_settings(tmp_path, MODELS, command_cooldown_s=0)


async def choices(w: World, member, command: str, option: str, typed: str = "") -> list[tuple[str, str]]:
    inter = await w.server.send_autocomplete(w.guild, member, command, {option: typed}, focused=option)
    await inter.wait_response()
    return [(c["name"], c["value"]) for c in inter.choices]


async def says(w: World, member, command: str, options: dict) -> str:
    reply = await w.reply(await w.slash(member, command, options))
    assert reply.ephemeral
    return reply.content


def test_a_shared_lora_is_usable_and_downloadable_by_others_and_only_its_owner_changes_it(
    settings, tmp_path, monkeypatch
):
    record = tmp_path / "sent.jsonl"
    monkeypatch.setenv("FAKE_SERVE_RECORD", str(record))

    async def scenario():
        async with bot_world(settings, queue=True, trainer_command=FAKE) as w:
            style = await add_lora(w, w.alice.user_id, "style")
            await _alice_shares(w)
            await _bob_generates_and_downloads(w, style, record)
            await _bob_cannot_change_it(w, style)
            await _alice_unshares(w)

    run(scenario())


async def _alice_shares(w: World) -> None:
    ref = f"style@{w.alice.user_id}"
    assert await choices(w, w.bob, "generate", "lora") == []
    assert (await says(w, w.alice, "lora share", {"name": "style"})).startswith("🔗 **style** is shared")
    again = await says(w, w.alice, "lora share", {"name": "style"})
    assert again.startswith("❌ 'style' is already shared")
    assert await choices(w, w.bob, "generate", "lora2", "sty") == [
        ("style (tiny-sd15) · shared by alice", ref)
    ]
    assert await choices(w, w.alice, "generate", "lora") == [("style (tiny-sd15) · shared", "style")]
    listing = await w.reply(await w.slash(w.bob, "lora list"))
    (field,) = listing.embeds[0]["fields"]
    assert "style" in field["value"] and "alice" in field["value"]


async def _bob_generates_and_downloads(w: World, style, record: Path) -> None:
    """Bob generates with it beside his own (picked from the list, or by its bare name) and downloads it."""
    bob, ref = w.bob.user_id, f"style@{w.alice.user_id}"
    mine = await add_lora(w, bob, "mine")
    options = {"prompt": "tk", "lora": "mine", "lora2": ref, "weight2": 0.6}
    job = await finished(w.services.conn, queued_id(await says(w, w.bob, "generate", options)))
    assert job.state == "done" and job.owner_id == bob, job.error
    (sent,) = await sent_jobs(record, 1)
    assert sent["lora_sha256"] == [sha256(mine.path), sha256(style.path)]
    assert [lora["weight"] for lora in sent["loras"]] == [1.0, 0.6]
    by_name = await w.services.generation.estimate(bob, GenerateRequest("tk", lora="style"))
    assert by_name.base_model == "tiny-sd15"
    got = await w.reply(await w.slash(w.bob, "lora download", {"name": ref}))
    assert [f.filename for f in got.files] == ["style.safetensors"]
    assert got.files[0].data == Path(style.path).read_bytes()
    resolve = link_resolver(w.services)  # a link, for a file over the upload limit
    assert await resolve(LinkClaims(bob, "lora", ref, "style.safetensors", 0)) == Path(style.path)


async def _bob_cannot_change_it(w: World, style) -> None:
    """Not bob's to change: each refusal is clear and changes nothing."""
    ref = f"style@{w.alice.user_id}"
    for command, options, action in [
        ("lora delete", {"name": ref}, "delete"),
        ("lora delete", {"name": "style"}, "delete"),
        ("lora rename", {"name": ref, "new_name": "mine now"}, "rename"),
        ("lora unshare", {"name": ref}, "unshare"),
        ("lora share", {"name": ref}, "share"),
    ]:
        content = await says(w, w.bob, command, options)
        expected = f"❌ 'style' is alice's LoRA, shared with the server: only its owner can {action} it"
        assert content.startswith(expected), content
    assert await choices(w, w.bob, "lora delete", "name") == [("mine (tiny-sd15)", "mine")]
    assert [r.name for r in await w.services.library.list(w.alice.user_id)] == ["style"]
    assert Path(style.path).is_file() and (await w.services.library.get(w.alice.user_id, "style")).shared


async def _alice_unshares(w: World) -> None:
    """Bob can no longer pick it, generate with it or download it; nothing is charged."""
    bob, ref = w.bob.user_id, f"style@{w.alice.user_id}"
    assert (await says(w, w.alice, "lora unshare", {"name": "style"})).startswith(
        "🔒 **style** is yours alone"
    )
    assert await choices(w, w.bob, "generate", "lora") == [("mine (tiny-sd15)", "mine")]
    before = (await w.services.stamina.balance(bob)).balance
    for options in ({"prompt": "tk", "lora": ref}, {"prompt": "tk", "lora": "mine", "lora2": "style"}):
        assert (await says(w, w.bob, "generate", options)).startswith("❌ you have no LoRA named 'style'")
    assert (await says(w, w.bob, "lora download", {"name": ref})).startswith(
        "❌ you have no LoRA named 'style'"
    )
    resolve = link_resolver(w.services)
    assert await resolve(LinkClaims(bob, "lora", ref, "style.safetensors", 0)) is None
    assert (await w.services.stamina.balance(bob)).balance == before
    assert len(await w.services.queue.list_jobs(bob, kind="generate", limit=10)) == 1


def test_owner_rename_delete_and_same_names_shared_by_two_members(settings):
    async def scenario():
        async with bot_world(settings) as w:
            alice, bob, olga = w.alice.user_id, w.bob.user_id, w.olga.user_id
            await add_lora(w, alice, "style")
            await add_lora(w, olga, "style")
            for owner in (alice, olga):
                await w.services.library.share(owner, "style", "alice" if owner == alice else "olga")
            assert [v for _, v in await choices(w, w.bob, "generate", "lora")] == [
                f"style@{alice}",
                f"style@{olga}",
            ]
            with pytest.raises(QueueError, match="2 members share a LoRA named 'style' \\(alice, olga\\)"):
                await w.services.generation.estimate(bob, GenerateRequest("tk", lora="style"))

            # a queued render keeps its LoRA when the owner renames or deletes it
            job = await w.services.generation.submit(bob, GenerateRequest("tk", lora=f"style@{olga}"))
            assert (
                await says(w, w.olga, "lora rename", {"name": "style", "new_name": "ink"})
            ) == "✏️ Renamed to **ink**."
            assert [v for _, v in await choices(w, w.bob, "generate", "lora")] == [
                f"ink@{olga}",
                f"style@{alice}",
            ]
            ask = await w.reply(await w.slash(w.olga, "lora delete", {"name": "ink"}))
            assert "It is shared: the others lose it too." in ask.content
            await w.click(ask, w.olga, first_id(ask, label="Delete"))
            assert await w.services.library.list(olga) == []
            (lora,) = job.spec["options"]["loras"]
            assert Path(lora["path"]).is_file()  # the job's own hard link
            assert await w.services.generation.estimate(
                bob, GenerateRequest("tk", lora="style")
            )  # alice's now
            assert (
                await says(w, w.alice, "lora rename", {"name": "style", "new_name": "bad/name"})
            ).startswith("❌ a LoRA name is 1-40 letters")

    run(scenario())


def test_migration_0006_keeps_saved_loras_private(tmp_path):
    """A LoRA saved before sharing existed stays private, with no owner name."""
    db = tmp_path / "bot.sqlite3"
    with sqlite3.connect(db) as conn:  # a database at version 5 with a saved LoRA
        for version, path in migrations()[:5]:
            conn.executescript(path.read_text())
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO loras (owner_id, name, path, base_model, family, created_at)"
            " VALUES (1, 'style', '/x.safetensors', 'sdxl', 'sdxl', 0)"
        )

    async def migrated() -> int:
        conn = await connect(db)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    assert asyncio.run(migrated()) >= 6
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, shared_at, owner_name FROM loras").fetchall() == [
            ("style", None, "")
        ]
