"""Settings from the environment (``LORABOT_*``) and ``.env``, validated at start-up.

Nothing is read at import time: call :func:`load_settings` where the process starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .setting_names import DEFAULT_ENV_FILE, renamed_settings, unknown_settings

__all__ = [
    "Settings", "SettingsError", "Tier", "load_settings", "renamed_settings", "settings_problems", "unknown_settings",
]  # fmt: skip

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
    ray_address: str = Field(
        "",
        description="a Ray cluster to train and generate on too: 'auto' or the head's address"
        " (host:6379); empty: this host's devices only (pip install -e '.[ray]')",
    )
    ray_generate_gpus: float = Field(
        0.0,
        ge=0,
        le=1,
        description="the share of a GPU each cluster node's /generate process reserves"
        " (0: it shares the node's first GPU with training)",
    )
    devices: Annotated[list[str], NoDecode] = Field(
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
    guild_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="guilds to sync the slash commands to at start (instant), as [123, 456] or 123,456; "
        "empty: global (up to an hour)",
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

    @field_validator("guild_ids", "devices", mode="before")
    @classmethod
    def _bare_list(cls, value, info):
        """A JSON list, or what people type bare: guild ids ``123``, ``123,456`` or ``123 456``; one
        device ``cpu`` or ``0`` (``0,1`` bare is refused: one worker or two?)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return _json_list(text)
        items = [p for p in re.split(r"[\s,]+", text) if p]
        if info.field_name == "devices" and len(items) > 1:
            raise ValueError(
                f"'{value}' is ambiguous: write {json.dumps(items)} for one worker per GPU, "
                f"or {json.dumps([','.join(items)])} for one worker using them together"
            )
        if info.field_name == "guild_ids" and not all(p.isdigit() for p in items):
            raise ValueError(
                f"'{value}' is not guild ids: write [123456789012345678] or 123,456 (digits only)"
            )
        return items

    @field_validator("guild_ids")
    @classmethod
    def _positive_ids(cls, value: list[int]) -> list[int]:
        if any(i <= 0 or i >= 2**63 for i in value):
            raise ValueError("a guild id is a positive number such as 123456789012345678 (Copy Server ID)")
        return value

    @field_validator("devices")
    @classmethod
    def _device_names(cls, value: list[str], info) -> list[str]:
        if not value and not info.data.get("ray_address"):
            raise ValueError(
                'name at least one device, e.g. ["cpu"] or ["0"] (none only with LORABOT_RAY_ADDRESS)'
            )
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


def load_settings(**overrides) -> Settings:
    """The settings from the environment, the env file (``_env_file`` overrides ``.env``) and
    ``overrides``; :class:`SettingsError` with one line per problem."""
    if problems := unknown_settings(overrides.get("_env_file", DEFAULT_ENV_FILE)):
        raise SettingsError("; ".join(problems))
    try:
        return Settings(**overrides)
    except (ValidationError, ValueError) as exc:
        raise SettingsError("; ".join(settings_problems(exc))) from None


def settings_problems(exc: Exception) -> list[str]:
    """One line per bad setting, for a pydantic ValidationError or pydantic-settings' parse error
    (a list or table setting that is not JSON), each with what the setting takes and its default."""
    if isinstance(exc, ValidationError):
        return [_problem(e) for e in exc.errors()]
    match = re.search(r'field "(\w+)"', str(exc))
    name = f"LORABOT_{match.group(1).upper()}" if match else "a setting"
    return [
        f'{name} is not valid JSON: lists and tables are JSON, e.g. LORABOT_DEVICES=["cpu"] '
        "or LORABOT_GUILD_IDS=[123456789012345678]"
    ]


def _problem(error) -> str:
    """``LORABOT_NAME: what is wrong (got 'value') [what it takes, default X]``; a secret is never shown."""
    loc = error["loc"]
    name = f"LORABOT_{'_'.join(map(str, loc)).upper()}"
    message = error["msg"].removeprefix("Value error, ")
    field = Settings.model_fields.get(str(loc[0])) if loc else None
    if field is None:
        return f"{name}: {message}"
    given = error.get("input")
    secret = field.annotation in (SecretStr, SecretStr | None)
    if len(loc) == 1 and given is not None and not secret and str(given) not in message:
        message += f" (got {given!r})"
    about = [field.description] if field.description else []
    if "default" not in (field.description or ""):
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(default) if isinstance(default, (list, dict)) else default
        about.append("unset by default" if default is None else f"default {shown}")
    return f"{name}: {message} [{', '.join(about)}]"


def _json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"'{text}' is not a JSON list ({exc.msg})") from None
    if not isinstance(value, list):
        raise ValueError(f"'{text}' is not a list")
    return value
