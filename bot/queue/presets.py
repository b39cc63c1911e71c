"""Saved training presets, "like:<job>", and the layering of every source of /train options.

A /train command takes options from four places, later ones winning:
preset < like:<job> < the advanced ``key=value`` text < the slash options typed this time.
:meth:`PresetService.resolve_train_options` merges them and checks the result against the
contract, so the cog makes one call and shows one error listing every problem.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiosqlite

from db import presets as repo
from db.database import transaction

from .options import (
    OPTIONS,
    OptionsError,
    merge_options,
    option_problems,
    parse_option_lines,
    validate_options,
)
from .service import BOT_KEYS, QueueError, job_number

if TYPE_CHECKING:
    from .service import QueueService

__all__ = ["MAX_PRESETS", "PresetService"]

MAX_PRESETS = 25  # one select menu's worth
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")


class PresetService:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        clock: Callable[[], float] = time.time,
        queue: QueueService | None = None,
    ):
        self.conn = conn
        self.clock = clock
        self.queue = queue  # for like:<job> in resolve_train_options

    async def save(
        self, owner_id: int, name: str, options: Mapping[str, Any] | str, *, replace: bool = True
    ) -> repo.PresetRow:
        """Save (or, with ``replace``, overwrite) a preset; ``options`` is a dict or ``key=value`` text.

        The options are checked on their own, the rules between them included.
        """
        name = name.strip()
        if not _NAME.match(name):
            raise QueueError(
                "a preset name is 1-40 letters, digits, spaces, '_', '-' or '.', starting with a letter or digit"
            )
        options = parse_option_lines(options) if isinstance(options, str) else merge_options(options)
        if not options:
            raise QueueError("a preset needs at least one option (e.g. epochs=12, optimizer=Prodigy)")
        validate_options(options)
        async with transaction(self.conn):
            existing = await repo.get_preset(self.conn, owner_id, name)
            if existing is not None and not replace:
                raise QueueError(
                    "you already have a preset named '{name}': pick another name", name=existing.name
                )
            if existing is None and await repo.count_presets(self.conn, owner_id) >= MAX_PRESETS:
                raise QueueError(
                    "you already have {count} presets, the most you can keep: delete one first",
                    count=MAX_PRESETS,
                )
            return await repo.save_preset(self.conn, owner_id, name, options, self.clock())

    async def get(self, owner_id: int, name: str) -> repo.PresetRow:
        preset = await repo.get_preset(self.conn, owner_id, name.strip())
        if preset is None:
            raise QueueError(
                "you have no preset named '{name}' (see your presets with /preset list)", name=name
            )
        return preset

    async def list(self, owner_id: int) -> list[repo.PresetRow]:
        return await repo.list_presets(self.conn, owner_id)

    async def delete(self, owner_id: int, name: str) -> None:
        async with transaction(self.conn):
            if not await repo.delete_preset(self.conn, owner_id, name.strip()):
                raise QueueError(
                    "you have no preset named '{name}' (see your presets with /preset list)", name=name
                )

    async def options_like(
        self, queue_service: QueueService, owner_id: int, job_id: int | str, *, keep_seed: bool = False
    ) -> dict[str, Any]:
        """The member options of one of the caller's training jobs, to train "like" it.

        The bot's own keys are left out, and so is the seed unless ``keep_seed`` (a new job
        usually wants a new seed; keeping it reproduces the earlier run).
        """
        job = await queue_service.job(owner_id, job_id)  # another member's job: "you have no job #N"
        if job.kind != "train":
            raise QueueError("job #{job} renders images, it trains nothing: pick a training job", job=job.id)
        options = job.spec.get("options") or {}
        drop = set(BOT_KEYS) | ({"seed"} if not keep_seed else set())
        return {k: v for k, v in options.items() if k in OPTIONS and k not in drop}

    async def resolve_train_options(
        self,
        owner_id: int,
        *,
        preset: str | None = None,
        like: int | str | None = None,
        advanced_text: str | None = None,
        explicit: Mapping[str, Any] | None = None,
        keep_seed: bool = False,
    ) -> dict[str, Any]:
        """The options of a /train call: preset < like:<job> < advanced text < slash options.

        ``None`` in ``explicit`` means "not given". The merged options are checked against the
        contract (rules between options included); every problem comes back in one
        :class:`OptionsError`. ``like`` is a job id (``12`` or ``"#12"``).
        """
        layers: list[Mapping[str, Any]] = []
        if preset:
            layers.append((await self.get(owner_id, preset)).options)
        if like is not None and like != "":
            if self.queue is None:
                raise RuntimeError("PresetService needs the QueueService for like:<job>")
            layers.append(
                await self.options_like(self.queue, owner_id, job_number(like), keep_seed=keep_seed)
            )
        problems: list[Any] = []  # English lines and member errors
        if advanced_text and advanced_text.strip():
            try:
                layers.append(parse_option_lines(advanced_text))
            except OptionsError as exc:
                problems += exc.parts  # as member errors: said in the member's language
        explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
        problems += option_problems(explicit, rules=False)
        if problems:
            raise OptionsError(problems)
        merged = merge_options(*layers, explicit)
        validate_options(merged)
        return merged
