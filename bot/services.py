"""Building the services from settings: one place, used by the bot, the CLI and the tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from db.database import Database, open_database

from .datasets.service import DatasetService
from .datasets.taggers import TaggerProvider
from .queue.bus import EventBus
from .queue.dispatcher import Dispatcher
from .queue.generation import GenerationService, LibraryService
from .queue.notify import NotifyService
from .queue.presets import PresetService
from .queue.runner import Runner
from .queue.service import QueueService
from .queue.stamina import StaminaService
from .queue.workers import GenerationLane, LocalTrainerWorker
from .registry import ModelRegistry
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    conn: Database  # the writer and its readers: pass it wherever a repository wants a connection
    registry: ModelRegistry
    datasets: DatasetService
    stamina: StaminaService
    queue: QueueService
    library: LibraryService
    generation: GenerationService
    bus: EventBus
    presets: PresetService
    notify: NotifyService


@asynccontextmanager
async def open_services(
    settings: Settings, clock: Callable[[], float] = time.time
) -> AsyncIterator[Services]:
    registry = ModelRegistry.load(settings.model_registry, settings.data_dir)
    async with open_database(settings.database_path()) as conn:
        datasets = DatasetService(conn, settings, registry, TaggerProvider(settings))
        stamina = StaminaService(conn, settings, clock)
        bus = EventBus()
        queue = QueueService(conn, settings, registry, datasets, stamina, clock, bus)
        library = LibraryService(queue)
        try:
            yield Services(
                settings,
                conn,
                registry,
                datasets,
                stamina,
                queue,
                library,
                GenerationService(queue, library),
                bus,
                PresetService(conn, clock, queue),
                NotifyService(conn, clock),
            )
        finally:
            await bus.close()


def make_dispatcher(services: Services, trainer_command: list[str] | None = None) -> Dispatcher:
    """A dispatcher with one local training worker and one generation lane per configured device."""
    s = services.settings
    trainer_command = trainer_command or s.trainer_argv()
    runners: list[Runner] = [LocalTrainerWorker(d, s.hang_timeout_s, trainer_command) for d in s.devices]
    runners += [
        GenerationLane(d, s.hang_timeout_s, s.data_dir / "logs" / f"generate-{d}.log", trainer_command)
        for d in s.devices
    ]
    dispatcher = Dispatcher(
        services.conn, s, services.registry, services.bus, runners, services.queue.clock, services.stamina
    )
    services.queue.on_change = dispatcher.wake
    return dispatcher


@asynccontextmanager
async def running_queue(
    services: Services, trainer_command: list[str] | None = None
) -> AsyncIterator[Dispatcher]:
    """Start the dispatcher and the daily-reset scheduler; stop both on the way out."""
    from .queue.schedule import start_reset_scheduler

    dispatcher = make_dispatcher(services, trainer_command)
    cluster = await join_cluster(services.settings, services.registry)
    dispatcher.remote = cluster
    await dispatcher.start()
    if cluster is not None:
        cluster.on_size = lambda gpus: setattr(services.queue, "cluster_gpus", gpus)
        await cluster.start(dispatcher)
    scheduler = start_reset_scheduler(services.stamina)
    try:
        yield dispatcher
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.shield(dispatcher.stop())
        if cluster is not None:
            await asyncio.shield(cluster.close())
        services.queue.on_change = None


async def join_cluster(settings: Settings, registry: ModelRegistry):
    """The Ray cluster of ``LORABOT_RAY_ADDRESS``, connected; None when unset, or when it cannot be
    reached (one line in the log: the local devices keep working)."""
    if not settings.ray_address:
        return None
    from .cluster.pool import ClusterUnreachable, RayCluster

    cluster = RayCluster(settings, registry)
    try:
        await cluster.connect()
    except ClusterUnreachable as exc:
        log.error("%s; the queue runs on this host's devices only", exc)
        return None
    return cluster
