"""The dataset service end to end: real files in, folder and database checked afterwards."""

from __future__ import annotations

import asyncio
import io
import random
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bot.datasets.service import ServiceError
from bot.services import open_services
from bot.settings import load_settings

COLORS = {"red": (230, 20, 20), "green": (20, 210, 40), "blue": (20, 30, 230)}


def picture(seed: int, color: str = "red", size=(96, 96), fmt: str = "PNG") -> bytes:
    """A distinct picture (seeded shapes) dominated by one color; the tiny tagger reads the color."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, COLORS[color])
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.randrange(size[0] - 20), rng.randrange(size[1] - 20)
        shade = rng.choice([(0, 0, 0), (255, 255, 255)])
        draw.rectangle((x, y, x + rng.randrange(6, 20), y + rng.randrange(6, 20)), fill=shade)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def with_services(tmp_path: Path, body, **settings):
    async def go():
        async with open_services(load_settings(data_dir=tmp_path / "data", **settings)) as services:
            return await body(services.datasets)

    return asyncio.run(go())


async def new_dataset(svc, owner=1, name="chara", **kw):
    return await svc.create(owner, name, "tiny-sd15", "tkchar", **kw)


def test_create_list_info_delete_and_ownership(tmp_path):
    async def body(svc):
        ds = await new_dataset(svc)
        assert (ds.crop_width, ds.crop_height, ds.crop_mode, ds.tagger) == (512, 512, "none", "tiny")
        xl = await svc.create(1, "xl", "tiny-sdxl", "tk", crop_mode="center", crop_size="832x1216")
        assert (xl.crop_width, xl.crop_height) == (832, 1216)
        with pytest.raises(ServiceError, match="already have a dataset named"):
            await new_dataset(svc, name="CHARA")
        with pytest.raises(ServiceError, match="unknown base model 'sd9'"):
            await svc.create(1, "x", "sd9", "tk")
        with pytest.raises(ServiceError, match="trigger word must be one tag"):
            await svc.create(1, "x", "tiny-sd15", "a, b")
        with pytest.raises(ServiceError, match="dataset name"):
            await svc.create(1, "../x", "tiny-sd15", "tk")
        with pytest.raises(ServiceError, match="threshold must be between 0 and 1"):
            await svc.create(1, "x", "tiny-sd15", "tk", general_threshold=1.5)
        await new_dataset(svc, owner=2)  # the same name for another member
        with pytest.raises(ServiceError, match="no dataset named"):
            await svc.info(2, "xl")  # member 2 cannot see member 1's dataset
        assert [d.name for d, _ in await svc.list(1)] == ["chara", "xl"]
        await svc.delete(1, "xl")
        assert [d.name for d, _ in await svc.list(1)] == ["chara"]
        assert (await svc.info(2, "chara")).images == 0

    with_services(tmp_path, body)


def test_upload_batch_reports_and_stores_exactly_what_it_should(tmp_path):
    jpeg_copy = picture(1, fmt="JPEG")  # the same picture as img1.png, re-encoded: a near-duplicate
    files = [
        ("img1.png", picture(1)),
        ("img2.webp", picture(2, "green", fmt="WEBP")),
        ("again.png", picture(1)),  # exact duplicate
        ("img1.jpg", jpeg_copy),
        ("notes.png", b"this is text, not a picture"),
        (
            "set.zip",
            make_zip(
                {
                    "a.png": picture(3, "blue"),
                    "a.txt": "tkchar, my own caption",
                    "b.bmp": picture(4, fmt="BMP"),
                }
            ),
        ),
    ]

    async def body(svc):
        ds = await new_dataset(svc, character_threshold=0.5)
        stages = []
        report = await svc.add_files(1, "chara", files, lambda stage, done, total: stages.append(stage))
        assert sorted(report.added) == ["a.png", "b.bmp", "img1.png", "img2.webp"]
        reasons = {s.name: s.reason for s in report.skipped}
        assert set(reasons) == {"again.png", "img1.jpg", "notes.png"}
        assert "same picture" in reasons["again.png"] and "near-duplicate" in reasons["img1.jpg"]
        assert report.summary().startswith("added 4, skipped 3")
        assert "tagging" in stages
        assert report.warnings == []  # crop mode none never upscales
        folder = svc.folder(ds)
        images = {i.original_name: i for i in await svc.images(1, "chara")}
        assert sorted(p.name for p in folder.iterdir()) == sorted(i.file_name for i in images.values())
        assert len(images) == 4
        assert images["a.png"].caption == "tkchar, my own caption"  # a zip caption is kept as given
        red = images["img1.png"].caption.split(", ")
        assert red[0] == "tkchar" and "red_background" in red and "kasane_teto" in red
        assert red.index("kasane_teto") < red.index(
            "red_background"
        )  # characters, then general by confidence
        assert "green_background" in images["img2.webp"].caption
        for image in images.values():
            assert Image.open(folder / image.file_name).format == "PNG"

        again = await svc.add_files(1, "chara", [("img2-again.webp", picture(2, "green", fmt="WEBP"))])
        assert (
            again.added == [] and "same picture" in again.skipped[0].reason
        )  # duplicates across batches too

    with_services(tmp_path, body)


def test_dataset_limit_and_crop_warnings(tmp_path):
    async def body(svc):
        await svc.create(1, "small", "tiny-sd15", "tk", crop_mode="center", crop_size="512x512")
        files = [(f"p{i}.png", picture(10 + i)) for i in range(4)]
        report = await svc.add_files(1, "small", files)
        assert len(report.added) == 3 and "dataset is full (3 images)" in report.skipped[0].reason
        assert len(report.warnings) == 3 and all("upscaled" in w for w in report.warnings)
        sizes = {
            Image.open(svc.image_path(await svc.get(1, "small"), i)).size
            for i in await svc.images(1, "small")
        }
        assert sizes == {(512, 512)}

    with_services(tmp_path, body, max_images_per_dataset=3)


def test_failed_ingest_leaves_no_file_and_no_row(tmp_path, monkeypatch):
    from db import datasets as repo

    async def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    async def body(svc):
        ds = await new_dataset(svc)
        monkeypatch.setattr(repo, "insert_images", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2))])
        assert list(svc.folder(ds).iterdir()) == []
        assert await svc.images(1, "chara") == []

    with_services(tmp_path, body)


def test_tag_table_edits_undo_and_export(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        await svc.add_files(1, "chara", [(f"r{i}.png", picture(20 + i, "red")) for i in range(3)] +
                            [(f"g{i}.png", picture(30 + i, "green")) for i in range(2)])  # fmt: skip
        images = await svc.images(1, "chara")
        table = await svc.tag_table(1, "chara")
        expected = Counter(t for i in images for t in set(i.caption.split(", ")))
        assert {t.tag: t.count for t in table} == dict(expected)
        assert table[0].tag == "tkchar" and table[0].share == 1.0
        before = [i.caption for i in images]

        removed = await svc.remove_tags(1, "chara", ["red_background", "solo"])
        assert removed.changed == 5 or removed.changed == 3
        assert not any("red_background" in i.caption for i in await svc.images(1, "chara"))
        await svc.add_tags(1, "chara", ["smile"], image_id=images[0].id)
        await svc.replace_tag(1, "chara", "green_background", "grass")
        with pytest.raises(ServiceError, match="trigger word"):
            await svc.remove_tags(1, "chara", ["tkchar"])
        with pytest.raises(ServiceError, match="no such tag here: nope"):
            await svc.remove_tags(1, "chara", ["nope", "1girl"])
        assert "1girl" in (await svc.images(1, "chara"))[0].caption  # nothing changed by the refused edit
        for _ in range(3):
            await svc.undo(1, "chara")
        assert [i.caption for i in await svc.images(1, "chara")] == before
        with pytest.raises(ServiceError, match="no tag edit to undo"):
            await svc.undo(1, "chara")

        out = await svc.export(1, "chara", tmp_path / "export")
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted([f"{n:04d}.{e}" for n in range(1, 6) for e in ("png", "txt")])
        assert (out / "0001.txt").read_text().strip() == before[0]
        with pytest.raises(ServiceError, match="not an empty folder"):
            await svc.export(1, "chara", out)
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(ServiceError, match="not an empty folder"):
            await svc.export(1, "chara", tmp_path / "a-file")

    with_services(tmp_path, body)


def test_exported_folder_is_what_the_trainer_reads(tmp_path):
    from trainer.data import scan_dataset

    async def body(svc):
        await new_dataset(svc)
        await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2, "blue"))])
        return await svc.export(1, "chara", tmp_path / "export")

    items = scan_dataset(with_services(tmp_path, body))
    assert len(items) == 2 and all(i.caption.startswith("tkchar, ") for i in items)


def test_hostile_batch_writes_only_the_good_images(tmp_path):
    """Every kind of bad upload in one batch: each skipped with its reason, the data folder holds
    exactly the good images, and nothing is written anywhere else."""
    from .test_images import encode, png_with_header_size
    from .test_images import make_zip as zip_entries
    from .test_images import picture as drawing

    link = zipfile.ZipInfo("link.png")
    link.external_attr = 0o120777 << 16
    good = encode(drawing(5), "PNG")
    bomb = io.BytesIO()
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("b.bmp", "w") as entry,
    ):
        for _ in range(40):
            entry.write(bytes(2**20))
    cmyk = encode(drawing(6).convert("CMYK"), "JPEG")
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rotated = drawing(7)
    exif = rotated.getexif()
    exif[0x0112] = 6
    files = [
        ("good.png", good),
        ("cmyk.jpg", cmyk),
        ("clear.png", encode(rgba, "PNG")),
        ("rotated.jpg", encode(rotated, "JPEG", exif=exif.tobytes())),
        ("dot.png", encode(Image.new("RGB", (1, 1), "red"), "PNG")),
        ("bomb.png", png_with_header_size(20000, 20000)),
        ("text.png", b"hello, I am not a picture"),
        ("cut.png", good[: len(good) // 2]),
        ("zipbomb.zip", bomb.getvalue()),
        (
            "slip.zip",
            zip_entries({"../evil.png": good, "/abs.png": good, "inner.zip": zip_entries({"x.png": good})}),
        ),
        ("link.zip", zip_entries([(link, b"/etc/passwd")])),
        ("empty.zip", zip_entries({})),
    ]
    before = {p for p in tmp_path.rglob("*")}

    async def body(svc):
        ds = await new_dataset(svc)
        report = await svc.add_files(1, "chara", files)
        return ds, report, svc.folder(ds), await svc.images(1, "chara")

    ds, report, folder, images = with_services(tmp_path, body, max_pixels=50_000_000, max_zip_total_mb=20)
    assert sorted(report.added) == ["clear.png", "cmyk.jpg", "dot.png", "good.png", "rotated.jpg"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert "megapixel" in reasons["bomb.png"] and "not an image" in reasons["text.png"]
    assert "damaged or cut off" in reasons["cut.png"] and "limit for one zip" in reasons["zipbomb.zip"]
    assert "unsafe path" in reasons["slip.zip/../evil.png"] and "unsafe path" in reasons["slip.zip//abs.png"]
    assert (
        "zips inside zips" in reasons["slip.zip/inner.zip"]
        and "symbolic link" in reasons["link.zip/link.png"]
    )
    assert "no images" in reasons["empty.zip"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(i.file_name for i in images)
    created = {p.relative_to(tmp_path).as_posix() for p in set(tmp_path.rglob("*")) - before if p.is_file()}
    db_files = {f for f in created if f.startswith("data/lorabot.sqlite3")}
    tagger = {f for f in created if f.startswith("data/models/tiny-tagger/")}
    images_written = created - db_files - tagger
    assert images_written == {f"data/datasets/1/{ds.id}/{i.file_name}" for i in images}
    assert len(images) == 5
    by_name = {i.original_name: i for i in images}
    assert (by_name["rotated.jpg"].width, by_name["rotated.jpg"].height) == (
        192,
        256,
    )  # EXIF rotation applied
    assert Image.open(folder / by_name["clear.png"].file_name).getpixel((0, 0)) == (255, 255, 255)


def test_remove_images_and_input_checks(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        zipped = make_zip({"z.png": picture(9), "z.txt": "1girl, smile"})
        await svc.add_files(1, "chara", [("a.png", picture(1)), ("b.png", picture(2)), ("z.zip", zipped)])
        images = await svc.images(1, "chara")
        assert next(i for i in images if i.original_name == "z.png").caption == "tkchar, 1girl, smile"
        with pytest.raises(ServiceError, match="no image 999"):
            await svc.remove_images(1, "chara", [images[0].id, 999])
        assert len(await svc.images(1, "chara")) == 3  # nothing removed
        assert await svc.remove_images(1, "chara", [images[0].id]) == 1
        assert not svc.image_path(await svc.get(1, "chara"), images[0]).exists()
        with pytest.raises(ServiceError, match="no image"):
            await svc.remove_images(1, "chara", [images[0].id])  # already gone
        with pytest.raises(ServiceError, match="one tag and one new tag"):
            await svc.replace_tag(1, "chara", "1girl", "a,b")
        with pytest.raises(ServiceError, match="line breaks"):
            await svc.create(1, "x", "tiny-sd15", "a\nb")
        with pytest.raises(ServiceError, match="unknown tagger '/etc'"):
            await svc.create(1, "x", "tiny-sd15", "tk", tagger="/etc")

    with_services(tmp_path, body)
