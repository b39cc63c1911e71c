"""What every part of the dataset service shares: the connection, settings, the lookup of a
member's dataset by name, per-dataset locks and where the images live."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from db import datasets as repo

from ..registry import ModelRegistry
from ..settings import Settings
from .rules import ServiceError, dataset_name
from .taggers import TaggerProvider


class ServiceBase:
    def __init__(
        self, conn: aiosqlite.Connection, settings: Settings, registry: ModelRegistry, taggers: TaggerProvider
    ):
        self.conn = conn
        self.settings = settings
        self.registry = registry
        self.taggers = taggers
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, owner_id: int, name: str) -> repo.DatasetRow:
        dataset = await repo.get_dataset(self.conn, owner_id, dataset_name(name))
        if dataset is None:
            raise ServiceError(
                "you have no dataset named '{name}' (see your datasets with /dataset list)", name=name
            )
        return dataset

    def folder(self, dataset: repo.DatasetRow) -> Path:
        """Where the dataset's images live: by ids, never by a name a member typed."""
        return self.settings.data_dir / "datasets" / str(dataset.owner_id) / str(dataset.id)

    def image_path(self, dataset: repo.DatasetRow, image: repo.ImageRow) -> Path:
        return self.folder(dataset) / image.file_name

    def _lock(self, dataset_id: int) -> asyncio.Lock:
        """Uploads, re-tags, trigger changes and deletion of one dataset take turns (in this process)."""
        return self._locks.setdefault(dataset_id, asyncio.Lock())
