"""Settings from the environment (``LORABOT_*``) and ``.env``, validated at start-up.

Nothing is read at import time: call :func:`load_settings` where the process starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SettingsError(RuntimeError):
    """Settings that cannot work; one line per problem."""


class Tier(BaseModel):
    """A stamina tier: members with one of ``roles`` (Discord role ids or names) get these terms."""

    roles: list[str] = Field(default_factory=list)
    allowance: int = Field(ge=0, le=1_000_000)
    priority: int = Field(0, ge=0, le=100, description="higher runs first in the queue")
    max_queued: int | None = Field(
        None, ge=1, le=100, description="jobs waiting or running; default max_queued_jobs"
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _role_ids_as_text(cls, value):
        return [str(v) for v in value] if isinstance(value, list) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORABOT_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

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

    # Stamina -------------------------------------------------------------------------------------
    daily_stamina: int = Field(150, ge=0, le=1_000_000, description="everyone's daily allowance")
    max_queued_jobs: int = Field(2, ge=1, le=100, description="jobs one member may have waiting or running")
    reset_hour: int = Field(0, ge=0, le=23, description="local hour of the daily stamina reset")
    reset_timezone: str = Field("UTC", description="IANA time zone of reset_hour, e.g. Asia/Tokyo")
    tiers: dict[str, Tier] = Field(
        default_factory=dict,
        description='JSON, e.g. {"pro": {"roles": ["Pro"], "allowance": 300, "priority": 10}}',
    )
    # Costs: stamina = steps x batch x (resolution / 512)^2 x rate, rounded half up (see bot/queue/costs.py).
    # Each family's default rates are its row of the family table (trainer/contract/families.py).
    step_costs: dict[str, float] = Field(
        default_factory=dict,
        description='stamina per 512-px image-step, per family, e.g. {"sdxl": 0.2243}; default: the family table',
    )
    image_costs: dict[str, float] = Field(
        default_factory=dict,
        description='stamina per generated image at the family\'s default size, e.g. {"sdxl": 2}',
    )

    # Queue and workers -----------------------------------------------------------------------------
    devices: list[str] = Field(
        default_factory=lambda: ["cpu"],
        description='one worker each: CUDA device ids like ["0", "1"], or "cpu"',
    )
    generate_alongside_training: bool = Field(
        True, description="a device renders /generate while it trains (needs the memory for both)"
    )
    hang_timeout_s: float = Field(1800, ge=1, description="a trainer silent this long is killed and resumed")
    max_attempts: int = Field(
        3, ge=1, le=20, description="starts of one job (crash recovery) before it fails"
    )
    trainer_command: str = Field(
        "",
        description="how to start the trainer, e.g. '/opt/trainer-venv/bin/python -m trainer'; default: this Python",
    )
    steps_per_s: dict[str, float] = Field(
        default_factory=dict,
        description='ETA before a speed is measured (512 px, batch 1), per family, e.g. {"sdxl": 1.0}',
    )

    # Discord ---------------------------------------------------------------------------------------
    discord_token: SecretStr | None = Field(None, description="the bot's token (Developer Portal > Bot)")
    guild_ids: list[int] = Field(
        default_factory=list,
        description="guilds to sync the slash commands to at start (instant); empty: global (up to an hour)",
    )
    operator_permission: str = Field(
        "manage_guild", description="the guild permission that makes a member an operator of the bot"
    )
    progress_interval_s: float = Field(
        5.0, ge=0.1, le=600, description="at most one edit of a job's progress message per this many seconds"
    )
    command_cooldown_s: float = Field(
        2.0, ge=0, le=600, description="a member's commands of one kind, at most one per this many seconds"
    )

    # Download links for files over Discord's upload limit ----------------------------------------------
    http_bind: str = Field("127.0.0.1:8765", description="host:port of the bot's small file server")
    public_url: str = Field(
        "",
        description="how members reach that server, e.g. https://lora.example.org; default http://HTTP_BIND",
    )
    link_lifetime_s: int = Field(3600, ge=60, le=7 * 86400, description="a download link works this long")
    link_secret: SecretStr | None = Field(
        None, description="signs download links; default: a random one kept in DATA_DIR/link-secret"
    )

    @field_validator("data_dir", "database", "model_registry")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Stored job and LoRA paths must not depend on the folder the bot was started from."""
        if value is None or str(value) == ":memory:":
            return value
        return value.expanduser().absolute()

    @field_validator("trainer_command")
    @classmethod
    def _splits(cls, value: str) -> str:
        import shlex

        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split into arguments: {exc}") from None
        return value

    @field_validator("reset_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}': use an IANA name like Europe/Paris") from None
        return value

    @field_validator("devices")
    @classmethod
    def _device_names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('name at least one device, e.g. ["cpu"] or ["0"]')
        for device in value:
            if device != "cpu" and not re.fullmatch(r"\d+(,\d+)*", device):
                raise ValueError(f"'{device}' is neither 'cpu' nor CUDA device ids like '0' or '0,1'")
        if len(set(value)) != len(value):
            raise ValueError("a device is listed twice")
        return value

    @field_validator("tagger", "extra_taggers")
    @classmethod
    def _tagger_source(cls, value):
        for source in [value] if isinstance(value, str) else value:
            if source != "tiny" and not _HUB_ID.match(source) and not source.startswith(("/", ".")):
                raise ValueError(f"'{source}' is not 'tiny', a folder path or an owner/name hub id")
        return value

    @field_validator("http_bind")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"'{value}' is not host:port, e.g. 127.0.0.1:8765 or 0.0.0.0:8765")
        return value

    @field_validator("public_url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"'{value}' is not an http(s) URL like https://lora.example.org")
        return value

    @field_validator("link_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("use at least 16 characters (e.g. the output of: openssl rand -hex 32)")
        return value

    @field_validator("operator_permission")
    @classmethod
    def _known_permission(cls, value: str) -> str:
        import discord

        if value not in discord.Permissions.VALID_FLAGS:
            raise ValueError(f"'{value}' is not a Discord permission name, e.g. manage_guild")
        return value

    @field_validator("step_costs", "image_costs", "steps_per_s")
    @classmethod
    def _per_family(cls, value: dict[str, float], info) -> dict[str, float]:
        from trainer.contract.families import FAMILIES

        for family, rate in value.items():
            if family not in FAMILIES:
                raise ValueError(f"'{family}' is not a model family: one of {', '.join(FAMILIES)}")
            low_ok = rate > 0 if info.field_name == "steps_per_s" else rate >= 0
            if not low_ok or rate > 1000:
                raise ValueError(f"{family}: {rate:g} is out of range (0 to 1000)")
        return value

    def step_cost(self, family: str) -> float:
        """Stamina per 512-px image-step of ``family`` (the setting, else the family table's)."""
        from trainer.contract.families import family_info

        return self.step_costs.get(family, family_info(family).step_cost)

    def image_cost(self, family: str) -> float:
        from trainer.contract.families import family_info

        return self.image_costs.get(family, family_info(family).image_cost)

    def default_steps_per_s(self, family: str) -> float:
        from trainer.contract.families import family_info

        return self.steps_per_s.get(family, family_info(family).steps_per_s)

    def base_url(self) -> str:
        """The public root of the file server, without a trailing slash."""
        return (self.public_url or f"http://{self.http_bind}").rstrip("/")

    def tagger_choices(self) -> list[str]:
        return list(dict.fromkeys([self.tagger, *self.extra_taggers]))

    def trainer_argv(self) -> list[str] | None:
        """The trainer command as arguments (None: ``python -m trainer`` with this interpreter)."""
        import shlex

        return shlex.split(self.trainer_command) or None

    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

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


_RENAMED = re.compile(r"^LORABOT_(STEP_COST|IMAGE_COST|STEPS_PER_S)_([A-Z0-9]+)$", re.IGNORECASE)
#: what ``_env_file`` means when not given: the class's ``env_file`` (None: no file)
_DEFAULT_ENV_FILE = object()


def renamed_settings(env_file: object = _DEFAULT_ENV_FILE) -> list[str]:
    """Per-family rates set the old way (``LORABOT_STEP_COST_SDXL``): one line each with the new
    form, so they are refused rather than silently ignored (a server would charge the default rate).

    Found as pydantic-settings would read them: in the environment and in ``env_file`` (a path or
    several, as ``Settings(_env_file=...)`` takes; default the class's ``.env``), parsed by
    python-dotenv (``export`` lines, quotes, comments), names in any case."""
    if env_file is _DEFAULT_ENV_FILE:
        env_file = Settings.model_config.get("env_file")
    names = list(os.environ)
    for path in [env_file] if isinstance(env_file, (str, os.PathLike)) else env_file or []:
        names += _env_file_names(Path(path).expanduser())
    problems = []
    for name in sorted(set(names)):
        if m := _RENAMED.match(name):
            kind = m.group(1).upper()
            plural = {"STEP_COST": "STEP_COSTS", "IMAGE_COST": "IMAGE_COSTS"}.get(kind, kind)
            problems.append(
                f"{name} is now LORABOT_{plural}='{{\"{m.group(2).lower()}\": ...}}' (JSON, one entry per family)"
            )
    return problems


def _env_file_names(path: Path) -> list[str]:
    """The names an env file sets, as pydantic-settings reads it (python-dotenv, UTF-8)."""
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    return list(dotenv_values(path, encoding=Settings.model_config.get("env_file_encoding") or "utf-8"))


def load_settings(**overrides) -> Settings:
    """The settings from the environment, the env file (``_env_file`` overrides ``.env``) and
    ``overrides``; :class:`SettingsError` with one line per problem."""
    if problems := renamed_settings(overrides.get("_env_file", _DEFAULT_ENV_FILE)):
        raise SettingsError("; ".join(problems))
    try:
        return Settings(**overrides)
    except (ValidationError, ValueError) as exc:
        raise SettingsError("; ".join(settings_problems(exc))) from None


def settings_problems(exc: Exception) -> list[str]:
    """One line per bad setting, for a pydantic ValidationError or pydantic-settings' parse error
    (a list or table setting that is not JSON)."""
    if isinstance(exc, ValidationError):
        return [f"LORABOT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
    match = re.search(r'field "(\w+)"', str(exc))
    name = f"LORABOT_{match.group(1).upper()}" if match else "a setting"
    return [
        f'{name} is not valid JSON: lists and tables are JSON, e.g. LORABOT_DEVICES=["cpu"] '
        "or LORABOT_GUILD_IDS=[123456789012345678]"
    ]
