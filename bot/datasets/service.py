"""Datasets as a member sees them: create, upload, tag, edit tags, export. Plain values in and out.

The cogs and the operator CLI call this; Discord objects never reach it. Every
method checks that the dataset belongs to the caller (another member's dataset is
"not found", the same as a missing one). A bad request raises :class:`ServiceError`
with a short message that says what to do, and changes nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from db import datasets as repo
from db.database import DatabaseFull, is_disk_full, transaction
from trainer.contract.families import family_info

from ..errors import MemberError
from ..registry import ModelRegistry
from ..settings import Settings
from . import captions as cap
from . import ingest
from .images import CROP_MODES, DecodedImage, parse_size
from .ingest import BatchReport, Progress
from .taggers import TaggerProvider

__all__ = ["BatchReport", "DatasetInfo", "DatasetService", "DiskFull", "EditResult", "ServiceError"]
NAME_LENGTH = 40
_NAME_EXTRA = frozenset(" _.-\u200c\u200d")  # and the zero-width (non-)joiners some scripts write
SWEEP_AGE_S = 3600


def dataset_name(text: str) -> str:
    """A typed name as stored: stripped and in Unicode NFC, so "été" typed either way is one name."""
    return unicodedata.normalize("NFC", text.strip())


def valid_name(name: str) -> bool:
    """Letters and digits of any script (with their combining marks and joiners), spaces, '_', '-'
    and '.', starting with a letter or digit. Names never reach the disk: folders are named by ids."""
    if not 0 < len(name) <= NAME_LENGTH or unicodedata.category(name[0])[0] not in "LN":
        return False
    return all(c in _NAME_EXTRA or unicodedata.category(c)[0] in "LMN" for c in name)


class ServiceError(MemberError):
    """A request that cannot be done; the message is for the member."""


class DiskFull(ServiceError):
    """The server's disk (or the database file) is full: the request stored nothing."""

    def __init__(self, message: str = "the server ran out of disk space"):
        super().__init__(message)


@contextmanager
def _out_of_space(outcome: str) -> Iterator[None]:
    """A full disk (ENOSPC, SQLITE_FULL) inside the block becomes :class:`DiskFull`, saying ``outcome``."""
    try:
        yield
    except (OSError, sqlite3.OperationalError, DatabaseFull) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(f"the server ran out of disk space; {outcome}. Tell the operator") from exc


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
        self._locks: dict[int, asyncio.Lock] = {}

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
        name, trigger, tagger = dataset_name(name), trigger.strip(), tagger or self.settings.tagger
        self._check_new(name, trigger, crop_mode, tagger)
        try:
            family = self.registry.family(base_model)
        except (ValueError, RuntimeError) as exc:  # unknown key, or a model whose family cannot be read
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
                    crop_mode=crop_mode, crop_width=width, crop_height=height, tagger=tagger,
                    general_threshold=gth, character_threshold=cth,
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise ServiceError(f"you already have a dataset named '{name}': pick another name") from None

    def _check_new(self, name: str, trigger: str, crop_mode: str, tagger: str) -> None:
        if not valid_name(name):
            raise ServiceError(
                f"a dataset name is 1-{NAME_LENGTH} letters (any script), digits, spaces, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        if not trigger or "," in trigger or len(trigger) > 64 or not trigger.isprintable():
            raise ServiceError(
                "the trigger word must be one tag: not empty, no commas or line breaks, at most 64 characters"
            )
        if crop_mode not in CROP_MODES:
            raise ServiceError(f"crop mode must be one of {', '.join(CROP_MODES)}")
        choices = self.settings.tagger_choices()
        if tagger not in choices:  # members pick from the operator's list, never a path or repo of their own
            raise ServiceError(f"unknown tagger '{tagger}': choose one of {', '.join(choices)}")

    @staticmethod
    def _crop_size(text: str | None, family: str) -> tuple[int, int]:
        if text is None:
            side = family_info(family).default_side
            return side, side
        try:
            return parse_size(text)
        except ValueError as exc:
            raise ServiceError(str(exc)) from None

    async def get(self, owner_id: int, name: str) -> repo.DatasetRow:
        dataset = await repo.get_dataset(self.conn, owner_id, dataset_name(name))
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
        async with self._lock(dataset.id):  # never while an upload to it is being stored
            async with transaction(self.conn):
                await repo.delete_dataset(self.conn, dataset.id)
            await asyncio.to_thread(shutil.rmtree, self.folder(dataset), True)

    def folder(self, dataset: repo.DatasetRow) -> Path:
        """Where the dataset's images live: by ids, never by a name a member typed."""
        return self.settings.data_dir / "datasets" / str(dataset.owner_id) / str(dataset.id)

    def _lock(self, dataset_id: int) -> asyncio.Lock:
        return self._locks.setdefault(dataset_id, asyncio.Lock())

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
        with _out_of_space("nothing was added"):
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
                    raise ServiceError(f"dataset '{dataset.name}' was deleted during the upload") from None
        report.added += added
        report.skipped += refused
        return report

    async def _captions(
        self, dataset: repo.DatasetRow, images: list[DecodedImage], progress: Progress | None
    ) -> list[tuple[str, str | None]]:
        """(caption, rating JSON) per image: a zip's caption as given (trigger first), else the tagger's."""
        out: list[tuple[str, str | None]] = [(ingest.caption_for(dataset, img), None) for img in images]
        untagged = [i for i, img in enumerate(images) if img.caption is None]
        if not untagged:
            return out
        from trainer.tagger import TaggerError

        report = (lambda done, total: progress("tagging", done, total)) if progress else None
        try:
            tagger = await asyncio.to_thread(self.taggers.get, dataset.tagger)
            results = await asyncio.to_thread(
                tagger.predict, [images[i].image for i in untagged], dataset.general_threshold,
                dataset.character_threshold, self.settings.tag_batch_size, report,
            )  # fmt: skip
        except TaggerError as exc:
            raise ServiceError(f"the tagger is not available ({exc}); ask the operator") from None
        for index, result in zip(untagged, results, strict=True):
            out[index] = ingest.tagged_caption(dataset, result)
        return out

    async def images(self, owner_id: int, name: str) -> list[repo.ImageRow]:
        dataset = await self.get(owner_id, name)
        return await repo.list_images(self.conn, dataset.id)

    def image_path(self, dataset: repo.DatasetRow, image: repo.ImageRow) -> Path:
        return self.folder(dataset) / image.file_name

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
                    ids = ", ".join(map(str, unknown))
                    raise ServiceError(f"no image {ids} in dataset '{dataset.name}'; nothing was removed")
                names = await repo.delete_images(self.conn, dataset.id, sorted(set(image_ids)))
            for file_name in names:
                (self.folder(dataset) / file_name).unlink(missing_ok=True)
        return len(names)

    async def sweep(self, dataset: repo.DatasetRow, min_age_s: float = SWEEP_AGE_S) -> int:
        """Remove files an interrupted ingest left behind (temp files, files without a row)."""
        known = {i.file_name for i in await repo.list_images(self.conn, dataset.id)}
        return await asyncio.to_thread(ingest.sweep_files, self.folder(dataset), known, min_age_s)

    # Tags -----------------------------------------------------------------------------------------

    async def tag_table(self, owner_id: int, name: str) -> list[cap.TagCount]:
        dataset = await self.get(owner_id, name)
        captions = [i.caption for i in await repo.list_images(self.conn, dataset.id)]
        return cap.tag_table(captions, first=dataset.trigger_word)

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
        edit = lambda c: cap.remove_tags(c, set(wanted), dataset.trigger_word)  # noqa: E731
        return await self._apply(dataset, images, edit, f"remove {', '.join(wanted)}")

    async def add_tags(
        self, owner_id: int, name: str, tags: list[str], image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        wanted = _clean_tags(tags)
        images = await self._edit_targets(dataset, image_id)
        edit = lambda c: cap.add_tags(c, wanted, dataset.trigger_word)  # noqa: E731
        return await self._apply(dataset, images, edit, f"add {', '.join(wanted)}")

    async def replace_tag(
        self, owner_id: int, name: str, old: str, new: str, image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        olds, news = _clean_tags([old]), _clean_tags([new])
        if len(olds) != 1 or len(news) != 1:
            raise ServiceError("replace takes one tag and one new tag (no commas)")
        old, new = olds[0], news[0]
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
        """Apply ``edit`` to the captions as they are inside the transaction: no lost updates."""
        wanted = {i.id for i in images}
        async with transaction(self.conn):
            current = [i for i in await repo.list_images(self.conn, dataset.id) if i.id in wanted]
            changes = {i.id: (i.caption, new) for i in current if (new := edit(i.caption)) != i.caption}
            if changes:
                await repo.record_caption_edit(self.conn, dataset.id, description, changes)
        return EditResult(description, len(changes))

    # Export ---------------------------------------------------------------------------------------

    async def export(self, owner_id: int, name: str, out_dir: str | Path) -> Path:
        """The folder ``python -m trainer train`` reads: NNNN.png + NNNN.txt per image, in upload order."""
        dataset = await self.get(owner_id, name)
        images = await repo.list_images(self.conn, dataset.id)
        if not images:
            raise ServiceError(f"dataset '{dataset.name}' has no images yet: upload some first")
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ServiceError(f"{out} is not an empty folder: export into a new folder")
        try:
            await asyncio.to_thread(_export_files, self.folder(dataset), out, images)
        except OSError as exc:
            raise ServiceError(f"cannot write to {out}: {exc.strerror or exc}") from None
        return out


def _clean_tags(tags: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(t.strip() for tag in tags for t in tag.split(",") if t.strip()))
    if not cleaned:
        raise ServiceError("name at least one tag")
    return cleaned


def _export_files(source: Path, out: Path, images: list[repo.ImageRow]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, start=1):
        target = out / f"{index:04d}.png"
        shutil.copyfile(source / image.file_name, target)
        target.with_suffix(".txt").write_text(image.caption + "\n", encoding="utf-8")
