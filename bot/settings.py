"""Settings from the environment (``LORABOT_*``) and ``.env``, validated at start-up.

Nothing is read at import time: call :func:`load_settings` where the process starts.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SettingsError(RuntimeError):
    """Settings that cannot work; one line per problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORABOT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="datasets, models, jobs and the database live here")
    database: Path | None = Field(None, description="SQLite file; default DATA_DIR/lorabot.sqlite3")
    model_registry: Path | None = Field(
        None, description="TOML file of base models; default: the built-in tiny-sd15 and tiny-sdxl"
    )
    tagger: str = Field("tiny", description="'tiny', a local WD14 folder, or a hub repo id (downloaded once)")
    extra_taggers: list[str] = Field(
        default_factory=list,
        description="more taggers members may choose for a dataset (same forms as tagger)",
    )
    general_threshold: float = Field(0.35, gt=0, lt=1)
    character_threshold: float = Field(0.85, gt=0, lt=1)
    tag_batch_size: int = Field(8, ge=1, le=256)
    max_images_per_dataset: int = Field(200, ge=1, le=100_000)
    max_file_mb: float = Field(50, gt=0, le=4096, description="one uploaded file (image or zip)")
    max_pixels: int = Field(40_000_000, ge=1, le=1_000_000_000, description="width x height of one image")
    max_zip_entries: int = Field(1000, ge=1, le=100_000)
    max_zip_total_mb: float = Field(500, gt=0, le=65536, description="uncompressed bytes of one zip")

    @field_validator("tagger", "extra_taggers")
    @classmethod
    def _tagger_source(cls, value):
        for source in [value] if isinstance(value, str) else value:
            if source != "tiny" and not _HUB_ID.match(source) and not source.startswith(("/", ".")):
                raise ValueError(f"'{source}' is not 'tiny', a folder path or an owner/name hub id")
        return value

    def tagger_choices(self) -> list[str]:
        return list(dict.fromkeys([self.tagger, *self.extra_taggers]))

    def database_path(self) -> Path:
        return self.database or self.data_dir / "lorabot.sqlite3"

    def limits(self):
        from .datasets.images import Limits

        return Limits(
            max_file_bytes=int(self.max_file_mb * 2**20),
            max_pixels=self.max_pixels,
            max_zip_entries=self.max_zip_entries,
            max_zip_total_bytes=int(self.max_zip_total_mb * 2**20),
        )


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"LORABOT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("; ".join(lines)) from None
