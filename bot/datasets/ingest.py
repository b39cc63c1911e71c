"""The upload pipeline of one batch: decode and check, de-duplicate, crop, tag, store.

Safety and bounded memory come from the order of work: every image is checked
against the dataset (exact and near duplicates, room left) and cropped the moment
it is decoded, so a zip of big pictures or a batch far over the dataset's limit
never sits in memory at full size. Files get unique names (no clash with another
process adding to the same dataset), are written under a temp name and renamed,
and their rows are inserted in one write transaction that re-checks what another
process may have changed meanwhile: the dataset still there and the uploader's, the
room left and duplicates among the images stored since. An image refused there is
reported and its file removed; the rest of the batch is kept.
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
from typing import NamedTuple

import aiosqlite

from db import datasets as repo
from db.database import transaction

from ..i18n import N_
from . import captions as cap
from .images import (
    DecodedImage,
    Limits,
    Skipped,
    crop_image,
    encode_png,
    expand_upload,
    is_near_duplicate,
)
from .phrases import Phrase

Progress = Callable[[str, int, int], None]
DUPLICATE = Phrase(N_("a duplicate of an image already in the dataset"))


class Caption(NamedTuple):
    text: str
    rating: str | None  # the tagger's rating scores as JSON; None for a caption that came with a zip
    source: str  # 'tagger' or 'zip' (db.datasets.CAPTION_SOURCES)


class DatasetGone(Exception):
    """The dataset was deleted while its upload was being processed."""


@dataclass
class BatchReport:
    added: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # Phrases: said in the member's language

    def summary(self) -> str:
        lines = [f"added {len(self.added)}, skipped {len(self.skipped)}"]
        lines += [f"  skipped {s.name}: {s.reason}" for s in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class Intake:
    """Decides on each image as it is decoded (runs in a worker thread), against a snapshot of the
    dataset; :func:`store` checks again against what was stored after the snapshot."""

    dataset: repo.DatasetRow
    existing: list[repo.ImageRow]
    limit: int  # images the dataset may hold
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
            warning = N_("{name} is smaller than {size} and was upscaled: a larger picture trains better")
            self.report.warnings.append(Phrase(warning, name=image.name, size=f"{size[0]}x{size[1]}"))
        self.seen_sha[image.sha256] = image.name
        self.seen_hash.append((image.phash, image.name))
        self.accepted.append(image)

    def _refusal(self, image: DecodedImage) -> str | None:
        if image.sha256 in self.seen_sha:
            return Phrase(N_("the same picture as {name}, already in"), name=self.seen_sha[image.sha256])
        near = next((n for h, n in self.seen_hash if is_near_duplicate(h, image.phash)), None)
        if near is not None:
            return Phrase(N_("looks the same as {name} (near-duplicate); keep one"), name=near)
        if len(self.existing) + len(self.accepted) >= self.limit:
            return full_reason(self.limit)
        return None


def full_reason(limit: int) -> Phrase:
    return Phrase(
        N_(
            "the dataset is full ({limit} images): delete some first (Delete image, on their pages in /tags view)"
        ),
        limit=limit,
    )


def decode_batch(
    files: list[tuple[str, bytes]], limits: Limits, intake: Intake, progress: Progress | None
) -> None:
    for index, (file_name, data) in enumerate(files, start=1):
        _, skipped = expand_upload(file_name, data, limits, intake.take)
        intake.report.skipped += skipped
        if progress:
            progress("checking files", index, len(files))


def caption_for(dataset: repo.DatasetRow, image: DecodedImage) -> str:
    """A zip's caption with the trigger word first: moved to the front when it stands elsewhere,
    added when it is missing."""
    return cap.trigger_first(image.caption or "", dataset.trigger_word)


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
    captions: list[Caption],
    limit: int,
    known: frozenset[int] = frozenset(),
) -> tuple[list[str], list[Skipped]]:
    """Files first (unique temp name, then rename), then the rows in one write transaction; returns
    the names of the images stored and those refused there, with why (their files removed).

    ``known``: ids of the images ``images`` were already checked against. Inside the transaction,
    which no other writer (thread or process) can enter, the room left is counted and the images
    stored since are checked for exact and near duplicates. On an error the transaction rolled
    back, so this call's files are removed. On cancellation the commit may still land, so the
    files stay; :func:`sweep_files` removes any that end up unused.
    """
    names = [f"{uuid.uuid4().hex[:16]}.png" for _ in images]
    written = await asyncio.to_thread(write_pngs, folder, names, images)
    rows = [
        repo.NewImage(fn, img.name, img.sha256, img.phash, img.image.width, img.image.height, *caption)
        for fn, img, caption in zip(names, images, captions, strict=True)
    ]
    try:
        async with transaction(conn) as tx:  # reads and writes on the connection holding the lock
            current = await repo.get_dataset_by_id(tx, dataset.id)
            if current is None or current.owner_id != dataset.owner_id:
                raise DatasetGone
            refused = await _insert_checked(tx, dataset.id, rows, limit, known)
    except Exception:
        await asyncio.to_thread(_unlink_all, written)
        raise
    dropped = {row.file_name for row, _ in refused}
    await asyncio.to_thread(_unlink_all, [path for path in written if path.name in dropped])
    added = [row.original_name for row in rows if row.file_name not in dropped]
    return added, [Skipped(row.original_name, reason) for row, reason in refused]


async def _insert_checked(
    conn: aiosqlite.Connection, dataset_id: int, rows: list[repo.NewImage], limit: int, known: frozenset[int]
) -> list[tuple[repo.NewImage, str]]:
    """Insert what still fits and is new (call inside the transaction): the rows refused, with why."""
    stored = await repo.list_images(conn, dataset_id)
    count = len(stored)
    since = [i for i in stored if i.id not in known]  # stored after the batch was checked
    refused: list[tuple[repo.NewImage, str]] = []
    for row in rows:
        reason = _late_refusal(row, since, count, limit)
        if reason is None and (await repo.insert_images(conn, dataset_id, [row]))[0] is None:
            twin = await repo.image_by_sha256(
                conn, dataset_id, row.sha256
            )  # the unique index has the last word
            reason = _duplicate_reason(twin) if twin else DUPLICATE
        if reason is None:
            count += 1
        else:
            refused.append((row, reason))
    return refused


def _late_refusal(row: repo.NewImage, since: list[repo.ImageRow], count: int, limit: int) -> str | None:
    twin = next((i for i in since if i.sha256 == row.sha256), None)
    if twin is not None:
        return _duplicate_reason(twin)
    near = next((i for i in since if is_near_duplicate(i.phash, row.phash)), None)
    if near is not None:
        return Phrase(
            N_("looks the same as image {id} ({name}) (near-duplicate); keep one"),
            id=near.id,
            name=near.original_name,
        )
    if count >= limit:
        return full_reason(limit)
    return None


def _duplicate_reason(twin: repo.ImageRow) -> Phrase:
    return Phrase(
        N_("a duplicate of image {id} ({name}), already in the dataset"), id=twin.id, name=twin.original_name
    )


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
