"""A dataset's settings changed after it was made: its name, trigger word, threshold, tagger and
crop. A new trigger rewrites every caption (and the captions the undo history keeps) so the new
trigger is first and the old one gone; the other settings apply to the images uploaded from now
on (a re-tag applies a new threshold or tagger to the images already in). Every value is checked
before anything is written, and all is written in one transaction: a bad value changes nothing."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from db import datasets as repo
from db.database import transaction

from ..i18n import N_
from . import captions as cap
from .base import ServiceBase
from .rules import (
    ServiceError,
    check_crop_mode,
    check_name,
    check_tagger,
    check_threshold,
    check_trigger,
    parse_crop,
)

NOTHING = N_("say what to change: a new name, trigger, threshold, tagger, crop mode or crop size")


@dataclass(frozen=True)
class SettingsChange:
    before: repo.DatasetRow
    after: repo.DatasetRow
    rewritten: int  # captions rewritten for a new trigger word
    images: int  # images in the dataset

    @property
    def changed(self) -> list[str]:
        """The settings (column names) that changed."""
        return [k for k in repo.EDITABLE if getattr(self.before, k) != getattr(self.after, k)]


class DatasetChanges(ServiceBase):
    async def update(
        self,
        owner_id: int,
        name: str,
        *,
        new_name: str | None = None,
        trigger: str | None = None,
        threshold: float | None = None,
        tagger: str | None = None,
        crop_mode: str | None = None,
        crop_size: str | None = None,
    ) -> SettingsChange:
        """Change the settings given (None: keep); refuses a bad value or a name in use, changing nothing."""
        dataset = await self.get(owner_id, name)
        asked = (new_name, trigger, threshold, tagger, crop_mode, crop_size)
        if all(value is None for value in asked):
            raise ServiceError(NOTHING)
        fields = self._new_settings(dataset, new_name, trigger, threshold, tagger, crop_mode, crop_size)
        if not fields:
            raise ServiceError("'{name}' has those settings already: nothing was changed", name=dataset.name)
        async with self._lock(dataset.id):  # a new trigger never meets an upload or re-tag half done
            try:
                async with transaction(self.conn):
                    before = await repo.get_dataset_by_id(self.conn, dataset.id)
                    if before is None:
                        raise ServiceError("dataset '{name}' was just deleted", name=dataset.name)
                    after = await repo.update_dataset(self.conn, dataset.id, **fields)
                    rewritten = 0
                    if after.trigger_word != before.trigger_word:
                        rewritten = await self._swap_trigger(
                            dataset.id, before.trigger_word, after.trigger_word
                        )
            except sqlite3.IntegrityError:
                raise ServiceError(
                    "you already have a dataset named '{name}': pick another name; nothing was changed",
                    name=fields["name"],
                ) from None
        return SettingsChange(before, after, rewritten, await repo.count_images(self.conn, dataset.id))

    def _new_settings(
        self,
        dataset: repo.DatasetRow,
        new_name: str | None,
        trigger: str | None,
        threshold: float | None,
        tagger: str | None,
        crop_mode: str | None,
        crop_size: str | None,
    ) -> dict[str, object]:
        """The checked new values that differ from the dataset's (a bad one raises)."""
        wanted: dict[str, object] = {}
        if new_name is not None:
            wanted["name"] = check_name(new_name.strip())
        if trigger is not None:
            wanted["trigger_word"] = check_trigger(trigger.strip())
        if threshold is not None:
            wanted["general_threshold"] = check_threshold(threshold)
        if tagger is not None:
            wanted["tagger"] = check_tagger(self.settings, tagger)
        if crop_mode is not None:
            wanted["crop_mode"] = check_crop_mode(crop_mode)
        if crop_size is not None:
            wanted["crop_width"], wanted["crop_height"] = parse_crop(crop_size)
        return {k: v for k, v in wanted.items() if getattr(dataset, k) != v}

    async def _swap_trigger(self, dataset_id: int, old: str, new: str) -> int:
        """Every caption, and every old caption undo would bring back, gets ``new`` first and loses ``old``."""
        images = await repo.list_images(self.conn, dataset_id)
        captions = {i.id: c for i in images if (c := cap.swap_trigger(i.caption, old, new)) != i.caption}
        await repo.rewrite_captions(self.conn, dataset_id, captions)
        history = [
            (edit_id, image_id, c)
            for edit_id, image_id, caption in await repo.history_captions(self.conn, dataset_id)
            if (c := cap.swap_trigger(caption, old, new)) != caption
        ]
        await repo.rewrite_history_captions(self.conn, history)
        return len(captions)
