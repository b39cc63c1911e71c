"""Building the services from settings: one place, used by the bot, the CLI and the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiosqlite

from db.database import open_database

from .datasets.service import DatasetService
from .datasets.taggers import TaggerProvider
from .registry import ModelRegistry
from .settings import Settings


@dataclass
class Services:
    settings: Settings
    conn: aiosqlite.Connection
    registry: ModelRegistry
    datasets: DatasetService


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    registry = ModelRegistry.load(settings.model_registry, settings.data_dir)
    async with open_database(settings.database_path()) as conn:
        datasets = DatasetService(conn, settings, registry, TaggerProvider(settings))
        yield Services(settings, conn, registry, datasets)
