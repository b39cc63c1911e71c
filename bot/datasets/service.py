"""Datasets as a member sees them: create, upload, tag, export. Plain values in and out.

Caption edits (:mod:`.edits`), re-tags (:mod:`.retag`) and changed settings (:mod:`.changes`)
are the bases of :class:`DatasetService`, on one shared :class:`~.base.ServiceBase`.

The cogs and the operator CLI call this; Discord objects never reach it. Every
method checks that the dataset belongs to the caller (another member's dataset is
"not found", the same as a missing one). A bad request raises :class:`ServiceError`
with a short message that says what to do, and changes nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from db import datasets as repo
from db.database import DatabaseFull, is_disk_full, transaction

from ..i18n import N_
from ..registry import RegistryError
from . import captions as cap
from . import ingest, rules
from .changes import DatasetChanges, SettingsChange
from .edits import CaptionEdits, CaptionSaved, EditResult
from .images import DecodedImage
from .ingest import BatchReport, Progress
from .retag import Retagging, RetagPlan, RetagResult, tag_images
from .rules import ServiceError, check_crop_mode, check_name, check_tagger, check_threshold, check_trigger

__all__ = [
    "BatchReport", "CaptionSaved", "DatasetInfo", "DatasetService", "DiskFull", "EditResult", "RetagPlan",
    "RetagResult", "ServiceError", "SettingsChange",
]  # fmt: skip
SWEEP_AGE_S = 3600


class DiskFull(ServiceError):
    """The server's disk (or the database file) is full: the request stored nothing."""

    def __init__(self, message: str = N_("the server ran out of disk space"), /, **values: object):
        super().__init__(message, **values)


@contextmanager
def _out_of_space(outcome: ServiceError) -> Iterator[None]:
    """A full disk (ENOSPC, SQLITE_FULL) inside the block becomes :class:`DiskFull`, saying ``outcome``."""
    try:
        yield
    except (OSError, sqlite3.OperationalError, DatabaseFull) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(
            N_("the server ran out of disk space; {outcome}. Tell the operator"), outcome=outcome
        ) from exc


@dataclass(frozen=True)
class DatasetInfo:
    dataset: repo.DatasetRow
    images: int
    tags: int
    undo_steps: int
    folder: Path
    hand: int = 0  # captions the member edited by hand
    zip: int = 0  # captions that came with a zip


class DatasetService(CaptionEdits, Retagging, DatasetChanges):
    """Datasets, their images and captions; caption edits, re-tags and settings come from the bases."""

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
        name, trigger, tagger = (
            check_name(name),
            check_trigger(trigger.strip()),
            tagger or self.settings.tagger,
        )
        check_crop_mode(crop_mode)
        check_tagger(self.settings, tagger)
        try:
            family = self.registry.family(base_model)
        except RegistryError as exc:  # unknown key, or a model whose family cannot be read
            raise ServiceError.of(exc) from None
        width, height = rules.crop_size(crop_size, family)
        gth = general_threshold if general_threshold is not None else self.settings.general_threshold
        cth = character_threshold if character_threshold is not None else self.settings.character_threshold
        check_threshold(gth)
        check_threshold(cth, character=True)
        try:
            async with transaction(self.conn):
                return await repo.insert_dataset(
                    self.conn, owner_id=owner_id, name=name, base_model=base_model, trigger_word=trigger,
                    crop_mode=crop_mode, crop_width=width, crop_height=height, tagger=tagger,
                    general_threshold=gth, character_threshold=cth,
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise ServiceError(
                "you already have a dataset named '{name}': pick another name", name=name
            ) from None

    async def list(self, owner_id: int) -> list[tuple[repo.DatasetRow, int]]:
        return await repo.list_datasets(self.conn, owner_id)

    async def info(self, owner_id: int, name: str) -> DatasetInfo:
        dataset = await self.get(owner_id, name)
        images = await repo.list_images(self.conn, dataset.id)
        tags = cap.tag_table([i.caption for i in images])
        undo = await repo.count_edits(self.conn, dataset.id)
        hand, zipped = (sum(i.caption_source == source for i in images) for source in ("hand", "zip"))
        return DatasetInfo(dataset, len(images), len(tags), undo, self.folder(dataset), hand, zipped)

    async def delete(self, owner_id: int, name: str) -> None:
        dataset = await self.get(owner_id, name)
        async with self._lock(dataset.id):  # never while an upload to it is being stored
            async with transaction(self.conn):
                await repo.delete_dataset(self.conn, dataset.id)
            await asyncio.to_thread(shutil.rmtree, self.folder(dataset), True)

    # Images ---------------------------------------------------------------------------------------

    async def add_files(
        self, owner_id: int, name: str, files: list[tuple[str, bytes]], progress: Progress | None = None
    ) -> BatchReport:
        """Ingest uploads (images or zips): check, de-duplicate, crop, tag, store in one transaction.

        ``progress(stage, done, total)`` is called on the event loop.
        """
        dataset = await self.get(owner_id, name)
        notify = ingest.threadsafe(progress)
        report = BatchReport()
        limit = self.settings.max_images_per_dataset
        with _out_of_space(ServiceError("nothing was added")):
            async with self._lock(dataset.id):  # this process's uploads to it take turns
                existing = await repo.list_images(self.conn, dataset.id)
                folder = self.folder(dataset)
                known = {i.file_name for i in existing}
                await asyncio.to_thread(ingest.sweep_files, folder, known, SWEEP_AGE_S)
                intake = ingest.Intake(dataset, existing, limit, report)
                await asyncio.to_thread(ingest.decode_batch, files, self.settings.limits(), intake, notify)
                captions = await self._captions(dataset, intake.accepted, notify)
                try:
                    added, refused = await ingest.store(
                        self.conn, dataset, folder, intake.accepted, captions, limit,
                        frozenset(i.id for i in existing),
                    )  # fmt: skip
                except ingest.DatasetGone:
                    raise ServiceError(
                        "dataset '{name}' was deleted during the upload", name=dataset.name
                    ) from None
        report.added += added
        report.skipped += refused
        return report

    async def _captions(
        self, dataset: repo.DatasetRow, images: list[DecodedImage], progress: Progress | None
    ) -> list[ingest.Caption]:
        """(caption, rating JSON, source) per image: a zip's caption (trigger first), else the tagger's."""
        out = [ingest.Caption(ingest.caption_for(dataset, img), None, "zip") for img in images]
        untagged = [i for i, img in enumerate(images) if img.caption is None]
        if not untagged:
            return out
        report = (lambda done, total: progress("tagging", done, total)) if progress else None
        results = await tag_images(
            self.taggers, dataset.tagger, [images[i].image for i in untagged], dataset.general_threshold,
            dataset.character_threshold, self.settings.tag_batch_size, report,
        )  # fmt: skip
        for index, result in zip(untagged, results, strict=True):
            out[index] = ingest.Caption(*ingest.tagged_caption(dataset, result), "tagger")
        return out

    async def images(self, owner_id: int, name: str) -> list[repo.ImageRow]:
        dataset = await self.get(owner_id, name)
        return await repo.list_images(self.conn, dataset.id)

    async def remove_images(self, owner_id: int, name: str, image_ids: list[int]) -> int:
        """Delete images (rows, then their files). An id not in the dataset changes nothing."""
        dataset = await self.get(owner_id, name)
        if not image_ids:
            raise ServiceError("name at least one image")
        async with self._lock(dataset.id):
            async with transaction(self.conn):
                known = {i.id for i in await repo.list_images(self.conn, dataset.id)}
                unknown = sorted(set(image_ids) - known)
                if unknown:
                    raise ServiceError(
                        "no image {ids} in dataset '{name}'; nothing was removed",
                        ids=", ".join(map(str, unknown)),
                        name=dataset.name,
                    )
                names = await repo.delete_images(self.conn, dataset.id, sorted(set(image_ids)))
            for file_name in names:
                (self.folder(dataset) / file_name).unlink(missing_ok=True)
        return len(names)

    async def sweep(self, dataset: repo.DatasetRow, min_age_s: float = SWEEP_AGE_S) -> int:
        """Remove files an interrupted ingest left behind (temp files, files without a row)."""
        known = {i.file_name for i in await repo.list_images(self.conn, dataset.id)}
        return await asyncio.to_thread(ingest.sweep_files, self.folder(dataset), known, min_age_s)

    # Export ---------------------------------------------------------------------------------------

    async def export(self, owner_id: int, name: str, out_dir: str | Path) -> Path:
        """The folder ``python -m trainer train`` reads: NNNN.png + NNNN.txt per image, in upload order."""
        dataset = await self.get(owner_id, name)
        images = await repo.list_images(self.conn, dataset.id)
        if not images:
            raise ServiceError("dataset '{name}' has no images yet: upload some first", name=dataset.name)
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ServiceError("{folder} is not an empty folder: export into a new folder", folder=out)
        try:
            await asyncio.to_thread(_export_files, self.folder(dataset), out, images)
        except OSError as exc:
            raise ServiceError(
                "cannot write to {folder}: {why}", folder=out, why=exc.strerror or exc
            ) from None
        return out


def _export_files(source: Path, out: Path, images: list[repo.ImageRow]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, start=1):
        target = out / f"{index:04d}.png"
        shutil.copyfile(source / image.file_name, target)
        target.with_suffix(".txt").write_text(image.caption + "\n", encoding="utf-8")
