"""Captions by hand, through the dataset service: one caption typed as text, re-tags that say
which of the member's own captions they replace, settings and names changed, a zip's captions
with the trigger first. Real files and database; the database checked afterwards."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

import pytest

from bot.datasets import captions as cap
from bot.datasets.retag import parse_image_ids
from bot.datasets.service import ServiceError
from db.database import MIGRATIONS_DIR, connect, migrate
from tests.test_dataset_service import make_zip, new_dataset, picture, with_services


def test_trigger_first_and_swap_trigger():
    assert cap.trigger_first("1girl, tk, smile", "tk") == "tk, 1girl, smile"  # moved to the front
    assert cap.trigger_first("1girl,  smile ,", "tk") == "tk, 1girl, smile"  # added
    assert cap.trigger_first("1girl\nsmile, 1girl\r\n", "tk") == "tk, 1girl, smile"  # lines, repeats
    assert cap.trigger_first("", "tk") == "tk"
    assert cap.swap_trigger("old, 1girl, new, smile", "old", "new") == "new, 1girl, smile"
    assert cap.swap_trigger("1girl, old", "old", "new") == "new, 1girl"
    assert cap.add_tags("1girl, tk", ["smile"], "tk") == "tk, 1girl, smile"


async def _sources(svc, owner=1, name="chara") -> dict[str, str]:
    return {i.original_name: i.caption_source for i in await svc.images(owner, name)}


async def _captions(svc, owner=1, name="chara") -> dict[str, str]:
    return {i.original_name: i.caption for i in await svc.images(owner, name)}


def test_zip_captions_get_the_trigger_first(tmp_path):
    zipped = make_zip(
        {
            "elsewhere.png": picture(1),
            "elsewhere.txt": "1girl, tkchar, smile",
            "absent.png": picture(2, "green"),
            "absent.txt": "1girl\nsmile\n",
            "first.png": picture(3, "blue"),
            "first.txt": "tkchar, 1girl, tkchar",
            "tagged.png": picture(4),
        }
    )

    async def body(svc):
        await new_dataset(svc)
        await svc.add_files(1, "chara", [("set.zip", zipped)])
        captions = await _captions(svc)
        assert captions["elsewhere.png"] == "tkchar, 1girl, smile"
        assert captions["absent.png"] == "tkchar, 1girl, smile"
        assert captions["first.png"] == "tkchar, 1girl"
        assert captions["tagged.png"].startswith("tkchar, ")
        assert await _sources(svc) == {
            "elsewhere.png": "zip", "absent.png": "zip", "first.png": "zip", "tagged.png": "tagger",
        }  # fmt: skip

    with_services(tmp_path, body)


def test_a_caption_typed_by_hand(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2, "green"))])
        a, b = await svc.images(1, "chara")
        saved = await svc.set_caption(1, "chara", a.id, "1girl, tkchar, red dress\nsmile", expected=a.caption)
        assert saved.changed and saved.trigger_moved
        assert saved.caption == "tkchar, 1girl, red dress, smile"
        assert (await _captions(svc))["a.png"] == saved.caption
        assert await _sources(svc) == {"a.png": "hand", "b.png": "tagger"}
        same = await svc.set_caption(1, "chara", a.id, saved.caption)
        assert not same.changed and not same.trigger_moved
        before = await _captions(svc)
        refusals = [
            ("  , ,\n ", None, "needs at least one tag"),
            ("x" * (cap.MAX_CAPTION_CHARS + 1), None, "over the 2000 limit"),
            ("tkchar, smile", a.caption, "changed since you opened it"),  # the caption the form started from
        ]
        for text, expected, message in refusals:
            with pytest.raises(ServiceError, match=message):
                await svc.set_caption(1, "chara", a.id, text, expected=expected)
        with pytest.raises(ServiceError, match="image 999 is not in dataset"):
            await svc.set_caption(1, "chara", 999, "tkchar, smile")
        with pytest.raises(ServiceError, match="no dataset named"):
            await svc.set_caption(2, "chara", a.id, "tkchar, smile")  # another member's image
        assert await _captions(svc) == before
        assert (await svc.undo(1, "chara")).description == f"undid: caption of image {a.id}"
        assert (await _captions(svc))["a.png"] == a.caption
        assert await _sources(svc) == {"a.png": "tagger", "b.png": "tagger"}  # the source comes back too

    with_services(tmp_path, body)


def test_retag_counts_and_replaces_the_members_own_captions(tmp_path):
    zipped = make_zip({"z.png": picture(9, "blue"), "z.txt": "my own words"})

    async def body(svc):
        await new_dataset(svc)
        files = [(f"r{i}.png", picture(20 + i)) for i in range(3)] + [("set.zip", zipped)]
        await svc.add_files(1, "chara", files)
        images = {i.original_name: i for i in await svc.images(1, "chara")}
        tagged = images["r0.png"].caption
        assert "solo" in tagged and "1girl" in tagged  # 0.5 and 0.73 pass the default 0.35
        await svc.set_caption(1, "chara", images["r0.png"].id, "tkchar, my pose")
        await svc.remove_tags(1, "chara", ["solo"], image_id=images["r1.png"].id)
        plan = await svc.plan_retag(1, "chara")
        assert (plan.images, plan.hand, plan.zip, plan.own) == (4, 2, 1, 3)
        info = await svc.info(1, "chara")
        assert (info.hand, info.zip) == (2, 1)
        assert (plan.tagger, plan.threshold, plan.saves_settings, plan.image_ids) == (
            "tiny",
            0.35,
            False,
            None,
        )
        assert (await svc.plan_retag(1, "chara", threshold=0.8)).saves_settings
        some = await svc.plan_retag(1, "chara", [images["r0.png"].id, images["r2.png"].id], threshold=0.8)
        assert (some.images, some.hand, some.zip, some.saves_settings) == (2, 1, 0, False)

        kept = await svc.retag(1, "chara", keep_own=True)
        assert (kept.tagged, kept.changed, kept.kept) == (1, 0, 3)
        assert (await _captions(svc))["r0.png"] == "tkchar, my pose"

        stages: list[tuple[str, int, int]] = []
        result = await svc.retag(1, "chara", threshold=0.8, progress=lambda *a: stages.append(a))
        await asyncio.sleep(0)  # progress arrives through the event loop
        assert (result.tagged, result.changed, result.kept, result.unreadable) == (4, 4, 0, [])
        assert result.saved_settings and stages[-1] == ("tagging", 4, 4)
        captions = await _captions(svc)
        for name in ("r0.png", "r1.png"):  # 1girl (0.73) and solo (0.5) are under 0.8 now
            tags = cap.split_tags(captions[name])
            assert tags[0] == "tkchar" and "red_background" in tags and not {"1girl", "solo"} & set(tags)
        assert captions["z.png"].startswith("tkchar, ") and "my own words" not in captions["z.png"]
        assert set((await _sources(svc)).values()) == {"tagger"}
        assert (await svc.plan_retag(1, "chara")).own == 0
        dataset = await svc.get(1, "chara")
        assert (dataset.tagger, dataset.general_threshold) == ("tiny", 0.8)  # kept for later uploads

        await svc.undo(1, "chara")  # the re-tag is one undo step: the member's own captions come back
        captions = await _captions(svc)
        assert captions["r0.png"] == "tkchar, my pose" and captions["z.png"] == "tkchar, my own words"
        assert await _sources(svc) == {"r0.png": "hand", "r1.png": "hand", "r2.png": "tagger", "z.png": "zip"}

    with_services(tmp_path, body)


def test_retag_refusals_change_nothing(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        with pytest.raises(ServiceError, match="has no images yet"):
            await svc.plan_retag(1, "chara")
        await svc.add_files(1, "chara", [("a.png", picture(1))])
        (a,) = await svc.images(1, "chara")
        await svc.set_caption(1, "chara", a.id, "tkchar, mine")
        before = await _captions(svc)
        for kwargs, message in [
            ({"image_ids": [a.id, 999]}, "no image 999 in dataset"),
            ({"image_ids": []}, "name at least one image"),
            ({"threshold": 1.5}, "threshold must be between 0 and 1"),
            ({"tagger": "/etc"}, "unknown tagger '/etc'"),
        ]:
            for call in (svc.plan_retag, svc.retag):
                with pytest.raises(ServiceError, match=message):
                    await call(1, "chara", **kwargs)
        with pytest.raises(ServiceError, match="every chosen caption is your own"):
            await svc.retag(1, "chara", keep_own=True)
        assert await _captions(svc) == before and await svc.info(1, "chara")
        assert (await svc.get(1, "chara")).general_threshold == 0.35

    with_services(tmp_path, body)


def test_parse_image_ids():
    assert parse_image_ids(None) is None and parse_image_ids(" all ") is None and parse_image_ids("") is None
    assert parse_image_ids("3, 5 8,3") == [3, 5, 8]
    with pytest.raises(ServiceError, match="not a list of image ids"):
        parse_image_ids("3, five")


def test_settings_and_rename(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        await svc.create(1, "other", "tiny-sd15", "tk")
        await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2, "green"))])
        a, b = await svc.images(1, "chara")
        await svc.set_caption(1, "chara", a.id, "tkchar, 1girl, newword, smile")
        await svc.remove_tags(1, "chara", ["solo"])  # an undo step that keeps captions with the old trigger
        change = await svc.update(
            1,
            "chara",
            new_name="Hero 2",
            trigger=" newword ",
            threshold=0.5,
            crop_mode="focus",
            crop_size="640x768",
        )
        assert sorted(change.changed) == sorted(
            ["name", "trigger_word", "general_threshold", "crop_mode", "crop_width", "crop_height"]
        )
        assert (change.rewritten, change.images, change.before.name) == (2, 2, "chara")
        d = await svc.get(1, "hero 2")
        assert (d.name, d.trigger_word, d.general_threshold, d.crop_mode, d.crop_width, d.crop_height) == (
            "Hero 2", "newword", 0.5, "focus", 640, 768,
        )  # fmt: skip
        captions = await _captions(svc, name="Hero 2")
        assert captions["a.png"] == "newword, 1girl, smile"  # moved first, no repeat, the old one gone
        assert captions["b.png"].startswith("newword, ") and "tkchar" not in captions["b.png"]
        assert (await svc.tag_table(1, "Hero 2"))[0].tag == "newword"
        await svc.undo(1, "Hero 2")  # the old captions undo brings back have the new trigger too
        captions = await _captions(svc, name="Hero 2")
        assert "tkchar" not in " ".join(captions.values()) and "solo" in captions["b.png"]
        assert all(c.startswith("newword, ") for c in captions.values())
        with pytest.raises(ServiceError, match="no dataset named 'chara'"):
            await svc.get(1, "chara")
        await svc.update(1, "hero 2", new_name="hero 2")  # only the case changes: not a clash with itself
        assert [d.name for d, _ in await svc.list(1)] == ["hero 2", "other"]

    with_services(tmp_path, body)


def test_bad_settings_change_nothing(tmp_path):
    async def body(svc):
        ds = await new_dataset(svc)
        await svc.create(1, "other", "tiny-sd15", "tk")
        await svc.add_files(1, "chara", [("a.png", picture(1))])
        before = (await svc.get(1, "chara"), await _captions(svc))
        refusals = [
            ({}, "say what to change"),
            ({"new_name": "OTHER", "trigger": "zz"}, "already have a dataset named 'OTHER'"),
            ({"new_name": "../x"}, "a dataset name is"),
            ({"trigger": "a, b", "new_name": "fine"}, "trigger word must be one tag"),
            ({"threshold": 0.0}, "threshold must be between 0 and 1"),
            ({"crop_mode": "zoom"}, "crop mode must be one of"),
            ({"trigger": "zz", "crop_size": "huge"}, "WIDTHxHEIGHT|size"),
            ({"tagger": "/etc"}, "unknown tagger"),
            ({"trigger": "tkchar", "threshold": 0.35}, "has those settings already"),
        ]
        for kwargs, message in refusals:
            with pytest.raises(ServiceError, match=message):
                await svc.update(1, "chara", **kwargs)
        assert (await svc.get(1, "chara"), await _captions(svc)) == before
        assert before[0].id == ds.id

    with_services(tmp_path, body)


def test_migration_marks_zip_and_edited_captions(tmp_path):
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-5]_*.sql")):
        shutil.copy(path, old)
    db = tmp_path / "bot.sqlite3"

    async def to(directory) -> int:
        conn = await connect(db)
        try:
            return await migrate(conn, directory)
        finally:
            await conn.close()

    assert asyncio.run(to(old)) == 5
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO datasets (id, owner_id, name, base_model, trigger_word, crop_mode, crop_width,"
            " crop_height, tagger, general_threshold, character_threshold) VALUES (1, 1, 'd', 'm', 'tk',"
            " 'none', 512, 512, 'tiny', 0.35, 0.85)"
        )
        for image_id, rating in ((1, '{"general": 0.9}'), (2, None), (3, '{"general": 0.9}')):
            conn.execute(
                "INSERT INTO dataset_images (id, dataset_id, file_name, original_name, sha256, phash, width,"
                " height, caption, rating) VALUES (?, 1, ?, ?, ?, 0, 8, 8, 'tk, a', ?)",
                (image_id, f"{image_id}.png", f"{image_id}.png", f"s{image_id}", rating),
            )
        conn.execute("INSERT INTO caption_edits (id, dataset_id, description) VALUES (1, 1, 'remove b')")
        conn.execute(
            "INSERT INTO caption_edit_items (edit_id, image_id, old_caption) VALUES (1, 3, 'tk, a, b')"
        )
    assert asyncio.run(to(MIGRATIONS_DIR)) >= 6
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, caption_source FROM dataset_images ORDER BY id").fetchall()
        assert rows == [(1, "tagger"), (2, "zip"), (3, "hand")]
        assert conn.execute("SELECT old_source FROM caption_edit_items").fetchall() == [(None,)]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE dataset_images SET caption_source = 'guess' WHERE id = 1")
