"""Datasets as a member sees them: create, upload, tag, edit tags, export. Plain values in and out.

The cogs and the operator CLI call this; Discord objects never reach it. Every
method checks that the dataset belongs to the caller (another member's dataset is
"not found", the same as a missing one). A bad request raises :class:`ServiceError`
with a short message that says what to do, and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from db import datasets as repo
from db.database import transaction

from ..registry import ModelRegistry, RegistryError
from ..settings import Settings
from . import captions as cap
from .images import (
    CROP_MODES,
    NEAR_DUPLICATE_DISTANCE,
    DecodedImage,
    Skipped,
    crop_image,
    encode_png,
    expand_upload,
    hamming,
    parse_size,
)
from .taggers import TaggerProvider

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
_FILE_INDEX = re.compile(r"^(\d+)\.png$")


class ServiceError(Exception):
    """A request that cannot be done; the message is for the member."""


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


@dataclass(frozen=True)
class DatasetInfo:
    dataset: repo.DatasetRow
    images: int
    tags: int
    undo_steps: int
    folder: Path


@dataclass(frozen=True)
class EditResult:
    description: str
    changed: int


class DatasetService:
    def __init__(
        self, conn: aiosqlite.Connection, settings: Settings, registry: ModelRegistry, taggers: TaggerProvider
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.taggers = taggers
        self._ingest_locks: dict[int, asyncio.Lock] = {}

    # Datasets -------------------------------------------------------------------------------------

    async def create(
        self,
        owner_id: int,
        name: str,
        base_model: str,
        trigger: str,
        crop_mode: str = "none",
        crop_size: str | None = None,
        tagger: str | None = None,
        general_threshold: float | None = None,
        character_threshold: float | None = None,
    ) -> repo.DatasetRow:
        name, trigger = name.strip(), trigger.strip()
        if not _NAME.match(name):
            raise ServiceError(
                "a dataset name is 1-40 letters, digits, spaces, '_', '-' or '.', starting with a letter or digit"
            )
        if not trigger or "," in trigger or len(trigger) > 64:
            raise ServiceError(
                "the trigger word must be one tag: not empty, no commas, at most 64 characters"
            )
        if crop_mode not in CROP_MODES:
            raise ServiceError(f"crop mode must be one of {', '.join(CROP_MODES)}")
        try:
            family = self.registry.family(base_model)
        except (RegistryError, ValueError) as exc:
            raise ServiceError(str(exc)) from None
        width, height = self._crop_size(crop_size, family)
        gth = general_threshold if general_threshold is not None else self.settings.general_threshold
        cth = character_threshold if character_threshold is not None else self.settings.character_threshold
        for label, value in (("threshold", gth), ("character threshold", cth)):
            if not 0 < value < 1:
                raise ServiceError(f"the {label} must be between 0 and 1 (e.g. 0.35), not {value}")
        try:
            async with transaction(self.conn):
                return await repo.insert_dataset(
                    self.conn, owner_id=owner_id, name=name, base_model=base_model, trigger_word=trigger,
                    crop_mode=crop_mode, crop_width=width, crop_height=height, tagger=tagger or self.settings.tagger,
                    general_threshold=gth, character_threshold=cth,
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise ServiceError(f"you already have a dataset named '{name}': pick another name") from None

    @staticmethod
    def _crop_size(text: str | None, family: str) -> tuple[int, int]:
        if text is None:
            return (512, 512) if family == "sd15" else (1024, 1024)
        try:
            return parse_size(text)
        except ValueError as exc:
            raise ServiceError(str(exc)) from None

    async def get(self, owner_id: int, name: str) -> repo.DatasetRow:
        dataset = await repo.get_dataset(self.conn, owner_id, name.strip())
        if dataset is None:
            raise ServiceError(f"you have no dataset named '{name}' (see your datasets with /dataset list)")
        return dataset

    async def list(self, owner_id: int) -> list[tuple[repo.DatasetRow, int]]:
        return await repo.list_datasets(self.conn, owner_id)

    async def info(self, owner_id: int, name: str) -> DatasetInfo:
        dataset = await self.get(owner_id, name)
        images = await repo.list_images(self.conn, dataset.id)
        tags = cap.tag_table([i.caption for i in images])
        undo = await repo.count_edits(self.conn, dataset.id)
        return DatasetInfo(dataset, len(images), len(tags), undo, self.folder(dataset))

    async def delete(self, owner_id: int, name: str) -> None:
        dataset = await self.get(owner_id, name)
        async with transaction(self.conn):
            await repo.delete_dataset(self.conn, dataset.id)
        await asyncio.to_thread(shutil.rmtree, self.folder(dataset), True)

    def folder(self, dataset: repo.DatasetRow) -> Path:
        """Where the dataset's images live: by ids, never by a name a member typed."""
        return self.settings.data_dir / "datasets" / str(dataset.owner_id) / str(dataset.id)

    # Upload ---------------------------------------------------------------------------------------

    async def add_files(
        self, owner_id: int, name: str, files: list[tuple[str, bytes]], progress: Progress | None = None
    ) -> BatchReport:
        """Ingest uploads (images or zips): check, de-duplicate, crop, tag, store. One transaction."""
        dataset = await self.get(owner_id, name)
        report = BatchReport()
        upscaled: set[int] = set()
        decoded = await asyncio.to_thread(self._decode, dataset, files, report, upscaled, progress)
        # One ingest per dataset at a time: file numbering and duplicate checks see a settled dataset.
        async with self._ingest_locks.setdefault(dataset.id, asyncio.Lock()):
            await self.sweep(dataset)
            existing = await repo.list_images(self.conn, dataset.id)
            accepted = self._deduplicate(decoded, existing, report)
            size = f"{dataset.crop_width}x{dataset.crop_height}"
            report.warnings += [
                f"{img.name} is smaller than {size} and was upscaled: a larger picture trains better"
                for img in accepted
                if id(img) in upscaled
            ]
            captions = await self._captions(dataset, accepted, progress)
            await self._store(dataset, existing, accepted, captions, report)
        return report

    def _decode(
        self,
        dataset: repo.DatasetRow,
        files: list[tuple[str, bytes]],
        report: BatchReport,
        upscaled: set[int],
        progress: Progress | None,
    ) -> list[DecodedImage]:
        """Decode and check every upload, cropping each image as soon as it is decoded (bounded memory)."""
        limits = self.settings.limits()
        size = (dataset.crop_width, dataset.crop_height)

        def crop(image: DecodedImage) -> None:
            image.image, enlarged = crop_image(image.image, dataset.crop_mode, size)
            if enlarged:
                upscaled.add(id(image))

        decoded: list[DecodedImage] = []
        for index, (file_name, data) in enumerate(files, start=1):
            images, skipped = expand_upload(file_name, data, limits, crop)
            decoded += images
            report.skipped += skipped
            if progress:
                progress("checking files", index, len(files))
        return decoded

    def _deduplicate(
        self, decoded: list[DecodedImage], existing: list[repo.ImageRow], report: BatchReport
    ) -> list[DecodedImage]:
        room = self.settings.max_images_per_dataset - len(existing)
        seen_sha = {i.sha256: i.original_name for i in existing}
        seen_hash = [(i.phash, i.original_name) for i in existing]
        accepted = []
        for image in decoded:
            if image.sha256 in seen_sha:
                report.skipped.append(
                    Skipped(image.name, f"the same picture as {seen_sha[image.sha256]}, already in")
                )
                continue
            near = next((n for h, n in seen_hash if hamming(h, image.phash) <= NEAR_DUPLICATE_DISTANCE), None)
            if near is not None:
                report.skipped.append(
                    Skipped(image.name, f"looks the same as {near} (near-duplicate); keep one")
                )
                continue
            if len(accepted) >= room:
                limit = self.settings.max_images_per_dataset
                report.skipped.append(
                    Skipped(image.name, f"the dataset is full ({limit} images): remove some first")
                )
                continue
            seen_sha[image.sha256] = image.name
            seen_hash.append((image.phash, image.name))
            accepted.append(image)
        return accepted

    async def _captions(
        self, dataset: repo.DatasetRow, images: list[DecodedImage], progress: Progress | None
    ) -> list[tuple[str, str | None]]:
        """(caption, rating JSON) per image: a zip's caption as given, else the tagger's tags."""
        untagged = [i for i, img in enumerate(images) if img.caption is None]
        out: list[tuple[str, str | None]] = [(img.caption or "", None) for img in images]
        if not untagged:
            return out
        tagger = await asyncio.to_thread(self.taggers.get, dataset.tagger)
        results = await asyncio.to_thread(
            tagger.predict,
            [images[i].image for i in untagged],
            dataset.general_threshold,
            dataset.character_threshold,
            self.settings.tag_batch_size,
            (lambda done, total: progress("tagging", done, total)) if progress else None,
        )
        for index, result in zip(untagged, results, strict=True):
            caption = cap.build_caption(
                dataset.trigger_word, [t for t, _ in result.character], [t for t, _ in result.general]
            )
            out[index] = (caption, json.dumps({k: round(v, 4) for k, v in result.rating.items()}))
        return out

    async def _store(
        self,
        dataset: repo.DatasetRow,
        existing: list[repo.ImageRow],
        images: list[DecodedImage],
        captions: list[tuple[str, str | None]],
        report: BatchReport,
    ) -> None:
        """Files first (temp name, then rename), rows in one transaction; on failure neither stays."""
        if not images:
            return
        folder = self.folder(dataset)
        start = 1 + max(
            (int(m.group(1)) for i in existing if (m := _FILE_INDEX.match(i.file_name))), default=0
        )
        names = [f"{start + n:04d}.png" for n in range(len(images))]
        written: list[Path] = []
        try:
            written = await asyncio.to_thread(_write_pngs, folder, names, images)
            rows = [
                repo.NewImage(
                    fn, img.name, img.sha256, img.phash, img.image.width, img.image.height, c, rating
                )
                for fn, img, (c, rating) in zip(names, images, captions, strict=True)
            ]
            async with transaction(self.conn):
                await repo.insert_images(self.conn, dataset.id, rows)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        report.added += [img.name for img in images]

    async def sweep(self, dataset: repo.DatasetRow, min_age_s: float = 3600) -> int:
        """Remove files an interrupted ingest left behind (temp files, files without a row).

        Only files older than ``min_age_s``: another process may be between its rename and its commit.
        """
        folder = self.folder(dataset)
        if not folder.is_dir():
            return 0
        known = {i.file_name for i in await repo.list_images(self.conn, dataset.id)}
        cutoff = time.time() - min_age_s
        stale = [
            p for p in folder.iterdir() if p.is_file() and p.name not in known and p.stat().st_mtime < cutoff
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    # Tags -----------------------------------------------------------------------------------------

    async def tag_table(self, owner_id: int, name: str) -> list[cap.TagCount]:
        dataset = await self.get(owner_id, name)
        captions = [i.caption for i in await repo.list_images(self.conn, dataset.id)]
        return cap.tag_table(captions, first=dataset.trigger_word)

    async def images(self, owner_id: int, name: str) -> list[repo.ImageRow]:
        dataset = await self.get(owner_id, name)
        return await repo.list_images(self.conn, dataset.id)

    def image_path(self, dataset: repo.DatasetRow, image: repo.ImageRow) -> Path:
        return self.folder(dataset) / image.file_name

    async def remove_tags(
        self, owner_id: int, name: str, tags: list[str], image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        wanted = _clean_tags(tags)
        if dataset.trigger_word in wanted:
            raise ServiceError(f"'{dataset.trigger_word}' is the trigger word and stays on every image")
        images = await self._edit_targets(dataset, image_id)
        present = {t for i in images for t in cap.split_tags(i.caption)}
        unknown = [t for t in wanted if t not in present]
        if unknown:
            raise ServiceError(
                f"no such tag here: {', '.join(unknown)} (see /tags view); nothing was changed"
            )
        return await self._apply(
            dataset,
            images,
            lambda c: cap.remove_tags(c, set(wanted), dataset.trigger_word),
            f"remove {', '.join(wanted)}",
        )

    async def add_tags(
        self, owner_id: int, name: str, tags: list[str], image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        wanted = _clean_tags(tags)
        images = await self._edit_targets(dataset, image_id)
        return await self._apply(
            dataset,
            images,
            lambda c: cap.add_tags(c, wanted, dataset.trigger_word),
            f"add {', '.join(wanted)}",
        )

    async def replace_tag(
        self, owner_id: int, name: str, old: str, new: str, image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        (old,), (new,) = _clean_tags([old]), _clean_tags([new])
        if old == dataset.trigger_word:
            raise ServiceError(
                f"'{old}' is the trigger word; to change it, create the dataset with another trigger"
            )
        images = await self._edit_targets(dataset, image_id)
        if not any(old in cap.split_tags(i.caption) for i in images):
            raise ServiceError(f"no such tag here: {old}; nothing was changed")
        return await self._apply(
            dataset, images, lambda c: cap.replace_tag(c, old, new), f"replace {old} with {new}"
        )

    async def undo(self, owner_id: int, name: str) -> EditResult:
        dataset = await self.get(owner_id, name)
        async with transaction(self.conn):
            undone = await repo.undo_last_edit(self.conn, dataset.id)
        if undone is None:
            raise ServiceError("there is no tag edit to undo")
        return EditResult(f"undid: {undone[0]}", undone[1])

    async def _edit_targets(self, dataset: repo.DatasetRow, image_id: int | None) -> list[repo.ImageRow]:
        images = await repo.list_images(self.conn, dataset.id)
        if image_id is None:
            return images
        chosen = [i for i in images if i.id == image_id]
        if not chosen:
            raise ServiceError(f"image {image_id} is not in dataset '{dataset.name}'")
        return chosen

    async def _apply(
        self,
        dataset: repo.DatasetRow,
        images: list[repo.ImageRow],
        edit: Callable[[str], str],
        description: str,
    ) -> EditResult:
        changes = {i.id: (i.caption, new) for i in images if (new := edit(i.caption)) != i.caption}
        if changes:
            async with transaction(self.conn):
                await repo.record_caption_edit(self.conn, dataset.id, description, changes)
        return EditResult(description, len(changes))

    # Export ---------------------------------------------------------------------------------------

    async def export(self, owner_id: int, name: str, out_dir: str | Path) -> Path:
        """The folder ``python -m trainer train`` reads: NNNN.png + NNNN.txt per image."""
        dataset = await self.get(owner_id, name)
        images = await repo.list_images(self.conn, dataset.id)
        if not images:
            raise ServiceError(f"dataset '{dataset.name}' has no images yet: upload some first")
        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            raise ServiceError(f"{out} is not empty: export into a new folder")
        await asyncio.to_thread(_export_files, self.folder(dataset), out, images)
        return out


def _clean_tags(tags: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(t.strip() for tag in tags for t in tag.split(",") if t.strip()))
    if not cleaned:
        raise ServiceError("name at least one tag")
    return cleaned


def _write_pngs(folder: Path, names: list[str], images: list[DecodedImage]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    temps = []
    try:
        for file_name, image in zip(names, images, strict=True):
            tmp = folder / f".{file_name}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(encode_png(image.image))
                fh.flush()
                os.fsync(fh.fileno())
            temps.append(tmp)
        final = []
        for tmp, file_name in zip(temps, names, strict=True):
            os.replace(tmp, folder / file_name)
            final.append(folder / file_name)
        return final
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        for file_name in names:
            (folder / file_name).unlink(missing_ok=True)
        raise


def _export_files(source: Path, out: Path, images: list[repo.ImageRow]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copyfile(source / image.file_name, out / image.file_name)
        (out / image.file_name).with_suffix(".txt").write_text(image.caption + "\n", encoding="utf-8")
