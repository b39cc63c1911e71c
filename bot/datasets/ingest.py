"""The upload pipeline of one batch: decode and check, de-duplicate, crop, tag, store.

Safety and bounded memory come from the order of work: every image is checked
against the dataset (exact and near duplicates, room left) and cropped the moment
it is decoded, so a zip of big pictures or a batch far over the dataset's limit
never sits in memory at full size. Files get unique names (no clash with another
process adding to the same dataset), are written under a temp name and renamed,
and their rows are inserted in one transaction that first re-checks that the
dataset still exists and still belongs to the uploader.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from db import datasets as repo
from db.database import transaction

from . import captions as cap
from .images import (
    NEAR_DUPLICATE_DISTANCE,
    DecodedImage,
    Limits,
    Skipped,
    crop_image,
    encode_png,
    expand_upload,
    hamming,
)

Progress = Callable[[str, int, int], None]


class DatasetGone(Exception):
    """The dataset was deleted while its upload was being processed."""


@dataclass
class BatchReport:
    added: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"added {len(self.added)}, skipped {len(self.skipped)}"]
        lines += [f"  skipped {s.name}: {s.reason}" for s in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class Intake:
    """Decides on each image as it is decoded (runs in a worker thread)."""

    dataset: repo.DatasetRow
    existing: list[repo.ImageRow]
    room: int
    report: BatchReport
    accepted: list[DecodedImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen_sha = {i.sha256: i.original_name for i in self.existing}
        self.seen_hash = [(i.phash, i.original_name) for i in self.existing]

    def take(self, image: DecodedImage) -> None:
        reason = self._refusal(image)
        if reason is not None:
            self.report.skipped.append(Skipped(image.name, reason))
            image.image = image.image.resize((1, 1))  # release the pixels now; the image is not kept
            return
        size = (self.dataset.crop_width, self.dataset.crop_height)
        image.image, upscaled = crop_image(image.image, self.dataset.crop_mode, size)
        if upscaled:
            self.report.warnings.append(
                f"{image.name} is smaller than {size[0]}x{size[1]} and was upscaled: a larger picture trains better"
            )
        self.seen_sha[image.sha256] = image.name
        self.seen_hash.append((image.phash, image.name))
        self.accepted.append(image)

    def _refusal(self, image: DecodedImage) -> str | None:
        if image.sha256 in self.seen_sha:
            return f"the same picture as {self.seen_sha[image.sha256]}, already in"
        near = next(
            (n for h, n in self.seen_hash if hamming(h, image.phash) <= NEAR_DUPLICATE_DISTANCE), None
        )
        if near is not None:
            return f"looks the same as {near} (near-duplicate); keep one"
        if len(self.accepted) >= self.room:
            limit = len(self.existing) + self.room
            return f"the dataset is full ({limit} images): remove some with /dataset remove-images first"
        return None


def decode_batch(
    files: list[tuple[str, bytes]], limits: Limits, intake: Intake, progress: Progress | None
) -> None:
    for index, (file_name, data) in enumerate(files, start=1):
        _, skipped = expand_upload(file_name, data, limits, intake.take)
        intake.report.skipped += skipped
        if progress:
            progress("checking files", index, len(files))


def caption_for(dataset: repo.DatasetRow, image: DecodedImage) -> str:
    """A zip's caption as given, with the trigger word put first when it is missing."""
    tags = cap.split_tags(image.caption or "")
    if dataset.trigger_word not in tags:
        tags.insert(0, dataset.trigger_word)
    return cap.join_tags(tags)


def tagged_caption(dataset: repo.DatasetRow, result) -> tuple[str, str]:
    caption = cap.build_caption(
        dataset.trigger_word, [t for t, _ in result.character], [t for t, _ in result.general]
    )
    return caption, json.dumps({k: round(v, 4) for k, v in result.rating.items()})


async def store(
    conn: aiosqlite.Connection,
    dataset: repo.DatasetRow,
    folder: Path,
    images: list[DecodedImage],
    captions: list[tuple[str, str | None]],
) -> None:
    """Files first (unique temp name, then rename), rows in one transaction.

    On an error the transaction rolled back, so this call's files are removed. On cancellation
    the commit may still land, so the files stay; :func:`sweep` removes any that end up unused.
    """
    names = [f"{uuid.uuid4().hex[:16]}.png" for _ in images]
    written = await asyncio.to_thread(write_pngs, folder, names, images)
    rows = [
        repo.NewImage(fn, img.name, img.sha256, img.phash, img.image.width, img.image.height, c, rating)
        for fn, img, (c, rating) in zip(names, images, captions, strict=True)
    ]
    try:
        async with transaction(conn):
            current = await repo.get_dataset_by_id(conn, dataset.id)
            if current is None or current.owner_id != dataset.owner_id:
                raise DatasetGone
            await repo.insert_images(conn, dataset.id, rows)
    except Exception:
        await asyncio.to_thread(_unlink_all, written)
        raise


def write_pngs(folder: Path, names: list[str], images: list[DecodedImage]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    try:
        for file_name, image in zip(names, images, strict=True):
            tmp = folder / f".{file_name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with open(tmp, "xb") as fh:
                    fh.write(encode_png(image.image))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, folder / file_name)
            finally:
                tmp.unlink(missing_ok=True)
            done.append(folder / file_name)
        return done
    except BaseException:
        _unlink_all(done)
        raise


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def stale_files(folder: Path, known: set[str], min_age_s: float) -> list[Path]:
    """Files of an interrupted ingest: not in the database and older than ``min_age_s``."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - min_age_s
    return [p for p in folder.iterdir() if p.is_file() and p.name not in known and p.stat().st_mtime < cutoff]


def sweep_files(folder: Path, known: set[str], min_age_s: float) -> int:
    stale = stale_files(folder, known, min_age_s)
    _unlink_all(stale)
    return len(stale)


def threadsafe(progress: Progress | None) -> Progress | None:
    """Progress callbacks run on the event loop even when the work reports from a worker thread."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()
    return lambda stage, done, total: loop.call_soon_threadsafe(progress, stage, done, total)
