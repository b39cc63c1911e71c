"""Helpers for the stamina and queue tests: settings on a temp folder, a small dataset, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.settings import Settings, load_settings
from tests.test_dataset_service import picture

#: Fast training options for the tiny model (64 px, fp32, few steps).
FAST = {"repeats": 1, "epochs": 2, "resolution": 64, "mixed_precision": "no", "optimizer": "AdamW", "preview_steps": 2,
        "network_dim": 4, "network_alpha": 2}  # fmt: skip


def queue_settings(tmp_path: Path, models: dict[str, Path] | None = None, **overrides) -> Settings:
    """Settings on ``tmp_path/data``; ``models`` (key -> tiny model folder) becomes the registry."""
    registry = None
    if models:
        registry = tmp_path / "models.toml"
        family = {"sd15": "sd15", "sdxl": "sdxl"}
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
    check: Callable[[], Awaitable[bool]], timeout: float = 120, every: float = 0.1, what: str = "the condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
