"""The dataset's limits hold across processes: the image limit, exact and near duplicates.

Two OS processes upload into one dataset. Each checks its batch against the same snapshot (a barrier
holds both before storing), so only the checks inside the write transaction can keep the limits.
Also flat pictures: two flat pictures are duplicates only when their colors are.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import traceback
from pathlib import Path

from PIL import Image

from bot.datasets.images import Limits, decode_image, expand_upload, flat_color, is_near_duplicate
from bot.services import open_services
from bot.settings import Settings, load_settings

from .test_dataset_service import new_dataset, picture, with_services

LIMIT = 12
DEADLINE_S = 180.0  # every wait on a child process; generous for a loaded machine


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def resized(data: bytes, size: tuple[int, int]) -> bytes:
    return png(Image.open(io.BytesIO(data)).resize(size, Image.Resampling.LANCZOS))


# Two processes ------------------------------------------------------------------------------------


def _child(data_dir: str, files: list[tuple[str, bytes]], barrier, results) -> None:
    """One process's upload; the report (or the error) goes to ``results``."""
    try:
        added, skipped = asyncio.run(_child_upload(Path(data_dir), files, barrier))
        results.put(("ok", added, skipped))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))


async def _child_upload(data_dir: Path, files: list[tuple[str, bytes]], barrier):
    from bot.datasets import ingest

    Settings.model_config["env_file"] = None  # as the tests' fixture: never the operator's .env
    real_store = ingest.store

    async def store_after_the_other_checked(*args, **kwargs):
        await asyncio.to_thread(barrier.wait, DEADLINE_S)  # both batches checked against one snapshot
        return await real_store(*args, **kwargs)

    ingest.store = store_after_the_other_checked
    settings = load_settings(data_dir=data_dir, max_images_per_dataset=LIMIT)
    async with open_services(settings) as services:
        report = await services.datasets.add_files(1, "chara", files)
    return report.added, [(s.name, s.reason) for s in report.skipped]


def run_two_uploads(data_dir: Path, batches: list[list[tuple[str, bytes]]]) -> list[tuple[list, list]]:
    """Upload each batch from its own process at the same time: [(added, [(name, reason)])] per batch."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(batches)), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(data_dir), b, barrier, results)) for b in batches]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=DEADLINE_S) for _ in procs]
        for proc in procs:
            proc.join(DEADLINE_S)
            assert proc.exitcode == 0, f"an upload process ended with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    errors = [detail for kind, detail, _ in outcomes if kind == "error"]
    assert not errors, errors[0]
    by_batch = {}
    for _, added, skipped in outcomes:
        names = set(added) | {n for n, _ in skipped}
        index = next(i for i, batch in enumerate(batches) if names <= {n for n, _ in batch})
        by_batch[index] = (added, skipped)
    return [by_batch[i] for i in range(len(batches))]


def prepare(tmp_path: Path) -> Path:
    """A dataset 'chara' of member 1 with a tagger ready (built once here, not by both children)."""
    data_dir = tmp_path / "data"

    async def body(svc):
        await new_dataset(svc)
        await asyncio.to_thread(svc.taggers.tiny_path)

    with_services(tmp_path, body, max_images_per_dataset=LIMIT)
    return data_dir


def stored(tmp_path: Path):
    async def body(svc):
        ds = await svc.get(1, "chara")
        images = await svc.images(1, "chara")
        files = sorted(p.name for p in svc.folder(ds).iterdir())
        return images, files

    return with_services(tmp_path, body, max_images_per_dataset=LIMIT)


def test_two_processes_never_pass_the_image_limit(tmp_path):
    data_dir = prepare(tmp_path)
    batches = [[(f"{who}{i}.png", picture(seed + i)) for i in range(10)] for who, seed in (("x", 100), ("y", 200))]
    reports = run_two_uploads(data_dir, batches)
    images, files = stored(tmp_path)
    assert len(images) == LIMIT
    assert sum(len(added) for added, _ in reports) == LIMIT
    refused = [reason for _, skipped in reports for _, reason in skipped]
    assert len(refused) == 2 * 10 - LIMIT
    assert all(f"the dataset is full ({LIMIT} images)" in reason for reason in refused), refused
    assert files == sorted(i.file_name for i in images)  # no file of a refused image is left


def test_the_same_picture_from_two_processes_is_kept_once_and_the_rest_of_both_batches_stays(tmp_path):
    data_dir = prepare(tmp_path)
    same, own = picture(7), picture(8)
    batches = [
        [("same-x.png", same), ("own.png", own), ("x1.png", picture(1)), ("x2.png", picture(2))],
        [("same-y.png", same), ("own-small.png", resized(own, (80, 80))), ("y1.png", picture(3))],
    ]
    reports = run_two_uploads(data_dir, batches)
    images, files = stored(tmp_path)
    skipped = dict(s for _, batch in reports for s in batch)
    assert len(skipped) == 2 and len(images) == 5, (reports, images)
    loser = next(i for i, (_, batch) in enumerate(reports) if batch)
    assert set(reports[loser][0]) == ({"x1.png", "x2.png"} if loser == 0 else {"y1.png"})
    twin = next(i for i in images if i.original_name.startswith("same"))
    duplicate = skipped["same-y.png" if loser else "same-x.png"]
    assert f"a duplicate of image {twin.id} ({twin.original_name})" in duplicate
    near = skipped["own-small.png" if loser else "own.png"]
    assert "near-duplicate" in near
    assert files == sorted(i.file_name for i in images)


# A duplicate found by the unique index at commit time ---------------------------------------------


def test_a_duplicate_found_at_commit_is_skipped_with_its_reason_and_the_rest_is_kept(tmp_path):
    """The unique index has the last word: a row it refuses is reported, the others are stored."""
    from bot.datasets import ingest

    async def body(svc):
        ds = await new_dataset(svc)
        await svc.add_files(1, "chara", [("first.png", picture(1))])
        (first,) = await svc.images(1, "chara")
        batch = [img for name, data in (("again.png", picture(1)), ("new.png", picture(2)))
                 for img in expand_upload(name, data, Limits())[0]]  # fmt: skip
        # as if "again.png" had been checked against a dataset that already held it and missed it
        added, refused = await ingest.store(
            svc.conn, ds, svc.folder(ds), batch, [("tkchar", None)] * 2, LIMIT, frozenset({first.id})
        )
        assert added == ["new.png"]
        assert [(s.name, s.reason) for s in refused] == [
            ("again.png", f"a duplicate of image {first.id} (first.png), already in the dataset")
        ]
        images = await svc.images(1, "chara")
        assert [i.original_name for i in images] == ["first.png", "new.png"]
        assert sorted(p.name for p in svc.folder(ds).iterdir()) == sorted(i.file_name for i in images)

    with_services(tmp_path, body)


def test_the_limit_is_counted_inside_the_transaction(tmp_path):
    """Images stored after the batch was checked take its room: what no longer fits is refused."""
    from bot.datasets import ingest

    async def body(svc):
        ds = await new_dataset(svc)
        checked = [img for i in range(3) for img in expand_upload(f"b{i}.png", picture(i), Limits())[0]]
        await svc.add_files(1, "chara", [(f"a{i}.png", picture(10 + i)) for i in range(2)])  # meanwhile
        added, refused = await ingest.store(svc.conn, ds, svc.folder(ds), checked, [("tkchar", None)] * 3, 3)
        assert added == ["b0.png"] and [s.name for s in refused] == ["b1.png", "b2.png"]
        assert all("the dataset is full (3 images)" in s.reason for s in refused)
        assert len(list(svc.folder(ds).iterdir())) == 3

    with_services(tmp_path, body)


# Flat pictures ------------------------------------------------------------------------------------


def decoded_hash(image: Image.Image, fmt: str = "PNG") -> int:
    result = decode_image("x", png(image, fmt), Limits())
    assert not hasattr(result, "reason"), result
    return result.phash


def test_flat_pictures_are_duplicates_only_of_the_same_color():
    red_dot = decoded_hash(Image.new("RGB", (1, 1), "red"))
    clear = decoded_hash(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))  # transparent: composited on white
    assert flat_color(red_dot) == (255, 0, 0) and flat_color(clear) == (255, 255, 255)
    assert not is_near_duplicate(red_dot, clear)
    red_square = decoded_hash(Image.new("RGB", (300, 200), "red"))
    assert is_near_duplicate(red_dot, red_square)  # the same flat red at another size
    assert is_near_duplicate(red_square, decoded_hash(Image.new("RGB", (300, 200), "red"), "JPEG"))
    assert not is_near_duplicate(red_dot, decoded_hash(Image.new("RGB", (8, 8), (200, 0, 0))))
    white = decoded_hash(Image.new("RGB", (64, 64), "white"))
    assert is_near_duplicate(clear, white)  # transparent pixels are white, however they are stored
    assert is_near_duplicate(clear, decoded_hash(Image.new("LA", (16, 16), (0, 0))))
    drawing = decode_image("p", picture(3), Limits()).phash
    assert flat_color(drawing) is None
    assert not is_near_duplicate(drawing, red_dot) and not is_near_duplicate(drawing, white)


def test_an_upload_keeps_flat_pictures_of_different_colors_and_one_of_each_color(tmp_path):
    async def body(svc):
        await new_dataset(svc)
        files = [
            ("dot.png", png(Image.new("RGB", (1, 1), "red"))),
            ("clear.png", png(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))),
            ("red.png", png(Image.new("RGB", (40, 30), "red"))),
            ("drawing.png", picture(4)),
            ("drawing-small.png", resized(picture(4), (64, 64))),
        ]
        report = await svc.add_files(1, "chara", files)
        assert sorted(report.added) == ["clear.png", "dot.png", "drawing.png"]
        reasons = {s.name: s.reason for s in report.skipped}
        assert "looks the same as dot.png (near-duplicate)" in reasons["red.png"]
        assert "looks the same as drawing.png (near-duplicate)" in reasons["drawing-small.png"]
        again = await svc.add_files(1, "chara", [("red-again.png", png(Image.new("RGB", (9, 9), "red")))])
        assert again.added == [] and "near-duplicate" in again.skipped[0].reason

    with_services(tmp_path, body)
