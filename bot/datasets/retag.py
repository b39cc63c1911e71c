"""Re-tagging: the tagger runs again on a dataset's stored images (all, or some) with another
threshold or tagger, and its captions replace the current ones in one undo step.

A re-tag replaces the member's own captions too (edited by hand, or from a zip), so the cog
asks first with :meth:`Retagging.plan_retag`, which counts them; ``keep_own`` leaves them as
they are. A re-tag of the whole dataset with a new tagger or threshold keeps them as the
dataset's settings, so later uploads are tagged the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from db import datasets as repo
from db.database import transaction

from . import ingest
from .base import ServiceBase
from .edits import RETAGGED
from .ingest import Progress
from .phrases import Phrase
from .rules import ServiceError, check_tagger, check_threshold
from .taggers import TaggerProvider

OPEN_CHUNK = 32  # images opened at once while re-tagging: memory stays bounded on a big dataset
Report = Callable[[int, int], None]


@dataclass(frozen=True)
class RetagPlan:
    dataset: str
    image_ids: tuple[int, ...] | None  # None: every image
    images: int  # how many would be re-tagged
    hand: int  # of them, captions the member edited by hand
    zip: int  # of them, captions that came with a zip
    tagger: str
    threshold: float
    saves_settings: bool  # the whole dataset with a new tagger or threshold: they become its settings

    @property
    def own(self) -> int:
        """The member's own captions (by hand or from a zip) that a full re-tag replaces."""
        return self.hand + self.zip


@dataclass(frozen=True)
class RetagResult:
    description: str  # a Phrase: said in the member's language
    tagged: int
    changed: int  # captions that came out different
    kept: int  # the member's own captions left alone (keep_own)
    unreadable: list[str]  # images whose file could not be read: their captions stay
    saved_settings: bool


class Retagging(ServiceBase):
    async def plan_retag(
        self,
        owner_id: int,
        name: str,
        image_ids: Sequence[int] | None = None,
        tagger: str | None = None,
        threshold: float | None = None,
    ) -> RetagPlan:
        """What a re-tag would do, checked (unknown images, tagger or threshold refused); changes nothing."""
        dataset = await self.get(owner_id, name)
        tagger, threshold = self._retag_settings(dataset, tagger, threshold)
        images = await self._retag_targets(dataset, image_ids)
        return RetagPlan(
            dataset.name, tuple(i.id for i in images) if image_ids is not None else None, len(images),
            sum(i.caption_source == "hand" for i in images), sum(i.caption_source == "zip" for i in images),
            tagger, threshold, _saves(dataset, image_ids, tagger, threshold),
        )  # fmt: skip

    async def retag(
        self,
        owner_id: int,
        name: str,
        image_ids: Sequence[int] | None = None,
        tagger: str | None = None,
        threshold: float | None = None,
        *,
        keep_own: bool = False,
        progress: Progress | None = None,
    ) -> RetagResult:
        """Tag the images again and store the captions (trigger first) in one undo step.

        ``progress("tagging", done, total)`` is called on the event loop.
        """
        dataset = await self.get(owner_id, name)
        tagger, threshold = self._retag_settings(dataset, tagger, threshold)
        notify = ingest.threadsafe(progress)
        report = (lambda done, total: notify("tagging", done, total)) if notify else None
        async with self._lock(dataset.id):  # not while an upload or a trigger change runs
            images = await self._retag_targets(dataset, image_ids)
            targets = [i for i in images if not keep_own or i.caption_source == "tagger"]
            if not targets:
                raise ServiceError("every chosen caption is your own and you kept them: nothing to re-tag")
            paths = [self.image_path(dataset, i) for i in targets]
            with tagger_errors():
                model = await asyncio.to_thread(self.taggers.get, tagger)
                results = await asyncio.to_thread(
                    tag_files, model, paths, threshold, dataset.character_threshold,
                    self.settings.tag_batch_size, report,
                )  # fmt: skip
            tagged = {i.id: r for i, r in zip(targets, results, strict=True) if r is not None}
            saves = _saves(dataset, image_ids, tagger, threshold)
            description = Phrase(RETAGGED, tagger=tagger, threshold=f"{threshold:g}")
            new = (tagger, threshold) if saves else None
            changed = await self._store_retag(dataset.id, tagged, description, keep_own, new)
        unreadable = [i.original_name for i, r in zip(targets, results, strict=True) if r is None]
        return RetagResult(description, len(tagged), changed, len(images) - len(targets), unreadable, saves)

    def _retag_settings(
        self, dataset: repo.DatasetRow, tagger: str | None, threshold: float | None
    ) -> tuple[str, float]:
        tagger = check_tagger(self.settings, tagger or dataset.tagger)
        return tagger, check_threshold(dataset.general_threshold if threshold is None else threshold)

    async def _retag_targets(
        self, dataset: repo.DatasetRow, image_ids: Sequence[int] | None
    ) -> list[repo.ImageRow]:
        images = await repo.list_images(self.conn, dataset.id)
        if not images:
            raise ServiceError("dataset '{name}' has no images yet: upload some first", name=dataset.name)
        if image_ids is None:
            return images
        if not image_ids:
            raise ServiceError("name at least one image")
        unknown = sorted(set(image_ids) - {i.id for i in images})
        if unknown:
            raise ServiceError(
                "no image {ids} in dataset '{name}' (the ids are on the image pages of /tags view); "
                "nothing was re-tagged",
                ids=", ".join(map(str, unknown)), name=dataset.name,
            )  # fmt: skip
        return [i for i in images if i.id in set(image_ids)]

    async def _store_retag(
        self, dataset_id: int, tagged: dict, description: str, keep_own: bool, new: tuple[str, float] | None
    ) -> int:
        """Captions from the tagger results, with the trigger as it is now, in one transaction; with
        ``keep_own``, not over a caption the member edited while the tagger ran. ``new``: the tagger
        and threshold that become the dataset's."""
        async with transaction(self.conn):
            current = await repo.get_dataset_by_id(self.conn, dataset_id)
            if current is None:
                raise ServiceError("the dataset was deleted during the re-tag")
            rows = [
                i
                for i in await repo.list_images(self.conn, dataset_id)
                if i.id in tagged and not (keep_own and i.caption_source != "tagger")
            ]
            captions = {i.id: ingest.tagged_caption(current, tagged[i.id]) for i in rows}
            changes = {
                i.id: (i.caption, captions[i.id][0])
                for i in rows
                if captions[i.id][0] != i.caption or i.caption_source != "tagger"
            }
            if changes:
                await repo.record_caption_edit(
                    self.conn, dataset_id, str(description), changes, source="tagger"
                )
            await repo.set_ratings(self.conn, dataset_id, {k: rating for k, (_c, rating) in captions.items()})
            if new is not None:
                await repo.update_dataset(self.conn, dataset_id, tagger=new[0], general_threshold=new[1])
        return sum(old != new for old, new in changes.values())


def _saves(dataset: repo.DatasetRow, image_ids: Sequence[int] | None, tagger: str, threshold: float) -> bool:
    return image_ids is None and (tagger, threshold) != (dataset.tagger, dataset.general_threshold)


@contextlib.contextmanager
def tagger_errors() -> Iterator[None]:
    """A tagger that cannot be loaded or run becomes a message for the member."""
    from trainer.tagger import TaggerError

    try:
        yield
    except TaggerError as exc:
        raise ServiceError("the tagger is not available ({why}); ask the operator", why=exc) from None


def tag_files(
    tagger, paths: list[Path], general: float, character: float, batch_size: int, report: Report | None
) -> list:
    """The tagger's result per image file (None where the file cannot be read), OPEN_CHUNK files at once."""
    from PIL import Image

    results: list = []
    for start in range(0, len(paths), OPEN_CHUNK):
        opened = []
        for path in paths[start : start + OPEN_CHUNK]:
            try:
                with Image.open(path) as image:
                    opened.append(image.convert("RGB"))
            except (OSError, ValueError):
                opened.append(None)
        readable = [image for image in opened if image is not None]
        done = len(results)
        step = (lambda n, _total, done=done: report(done + n, len(paths))) if report else None
        found = iter(tagger.predict(readable, general, character, batch_size, step) if readable else [])
        results += [None if image is None else next(found) for image in opened]
        if report:
            report(len(results), len(paths))
    return results


async def tag_images(
    taggers: TaggerProvider, source: str, images: list, general: float, character: float,
    batch_size: int, report: Report | None,
) -> list:  # fmt: skip
    """The tagger's result per (decoded) image, in order."""
    with tagger_errors():
        tagger = await asyncio.to_thread(taggers.get, source)
        return await asyncio.to_thread(tagger.predict, images, general, character, batch_size, report)


def parse_image_ids(text: str | None) -> list[int] | None:
    """Image ids as typed ("3, 5 8"); None for every image (nothing typed, or "all")."""
    if text is None or not text.strip() or text.strip().casefold() == "all":
        return None
    try:
        return list(dict.fromkeys(int(part) for part in text.replace(",", " ").split()))
    except ValueError:
        raise ServiceError(
            "'{text}' is not a list of image ids: type ids such as 3, 5, 8 (on the image pages "
            "of /tags view), or leave it empty for every image",
            text=text[:40],
        ) from None
