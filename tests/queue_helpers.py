"""Helpers for the stamina and queue tests: settings on a temp folder, a small dataset, waiting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.loopback.waiting import wait_for
from bot.settings import Settings, load_settings
from db import jobs as repo
from tests.test_dataset_service import picture

#: Fast training options for the tiny model (64 px, fp32, few steps).
FAST = {"repeats": 1, "epochs": 2, "resolution": 64, "mixed_precision": "no", "optimizer": "AdamW", "preview_steps": 2,
        "network_dim": 4, "network_alpha": 2}  # fmt: skip


def queue_settings(tmp_path: Path, models: dict[str, Path] | None = None, **overrides) -> Settings:
    """Settings on ``tmp_path/data``; ``models`` (key -> tiny model folder) becomes the registry."""
    registry = None
    if models:
        registry = tmp_path / "models.toml"
        family = {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux"}
        registry.write_text(
            "".join(
                f'[models.{key}]\nsource = "{path}"\nfamily = "{family[key.rsplit("-", 1)[-1]]}"\n'
                for key, path in models.items()
            )
        )
    return load_settings(data_dir=tmp_path / "data", model_registry=registry, **overrides)


async def make_dataset(
    services, owner: int = 1, name: str = "chara", images: int = 4, base="tiny-sd15", size=256
):
    """A dataset of ``images`` distinct pictures, center-cropped to ``size``."""
    await services.datasets.create(owner, name, base, "tkchar", crop_mode="center", crop_size=str(size))
    files = [(f"p{i}.png", picture(i, ("red", "green", "blue")[i % 3])) for i in range(images)]
    report = await services.datasets.add_files(owner, name, files)
    assert len(report.added) == images, report
    return name


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 120,
    every: float = 0.1,
    what: str | None = None,
    progress: Callable[[], object] | None = None,
) -> None:
    """Poll ``check`` (plain or async) until it holds; WaitTimeout naming ``what`` (default: the
    check's name) after ``timeout`` (with ``progress``: after ``timeout`` without a change of it)."""
    await wait_for(check, timeout, what or getattr(check, "__name__", "a condition"), every, progress)


def job_progress(conn, job_id: int) -> Callable[[], Awaitable[object]]:
    """A job's progress for :func:`wait_until`: it changes with each event its process reports."""

    async def progress() -> object:
        job = await repo.get_job(conn, job_id)
        return job.state, job.attempts, job.step, job.epoch, job.last_event_at

    return progress


def record_calls(obj: Any, method: str) -> list[tuple[tuple, Any]]:
    """Record each finished call of ``obj.method`` (an async method) as (args, result), from now on.

    A test proves that something was *not* done by waiting until the code had its chance (the
    dispatcher looked at the queue, after the change) instead of sleeping and hoping it looked.
    """
    calls: list[tuple[tuple, Any]] = []
    original = getattr(obj, method)

    async def recorded(*args: Any) -> Any:
        result = await original(*args)
        calls.append((args, result))
        return result

    setattr(obj, method, recorded)
    return calls
