"""The member's LoRA library, and the LoRAs members share with the server. Plain values in and out.

A saved LoRA is the member's own copy of an epoch file (``DATA_DIR/library/<owner>/``), so
deleting the job's folder never breaks /generate. Its owner may share it with the server: every
member can then generate with it and download it, and only the owner can rename, delete or
unshare it. A member names a LoRA by a *reference*: the name of one of their own, or
``name@owner_id`` for one another member shares (what the autocomplete offers); a bare name that
is not one of theirs finds the one shared LoRA of that name.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from db import library as repo
from db.database import transaction

from ..errors import MemberError
from ..i18n import N_, Messages, messages
from .service import QueueError, QueueService

_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
_SHARED_REF = re.compile(r"^(?P<name>[^@]+)@(?P<owner>\d{1,20})$")
MAX_OWNER_NAME = 40


@dataclass(frozen=True)
class UsableLora:
    """A LoRA a member may generate with: one of their own, or one another member shares."""

    lora: repo.LoraRow
    ref: str  # what names it for this member (see the module's doc)
    mine: bool


def lora_ref(lora: repo.LoraRow, member_id: int) -> str:
    """How ``member_id`` names ``lora``: its name when it is theirs, ``name@owner_id`` otherwise."""
    return lora.name if lora.owner_id == member_id else f"{lora.name}@{lora.owner_id}"


def owner_label(lora: repo.LoraRow, t: Messages | None = None) -> str:
    """Who shares ``lora``: the name they had when they shared it (else their id), for a list."""
    t = t or messages(None)
    return lora.owner_name or t("member {id}", id=lora.owner_id)


def _owner(lora: repo.LoraRow) -> str | MemberError:
    """:func:`owner_label` as a value of a member error (translated where it is said)."""
    return lora.owner_name or MemberError("member {id}", id=lora.owner_id)


class LibraryService:
    """Save epochs into a member's library; list, find, rename, delete, share and unshare them."""

    def __init__(self, queue: QueueService):
        self.queue = queue
        self.conn = queue.conn

    def folder(self, owner_id: int) -> Path:
        return self.queue.settings.data_dir / "library" / str(owner_id)

    async def save(self, owner_id: int, job_id: int, epoch: int, name: str | None = None) -> repo.LoraRow:
        job = await self.queue.job(owner_id, job_id)
        path = Path(await self.queue.epoch_file(owner_id, job.id, epoch))
        name = _checked_name(name or f"{job.title}-e{epoch}")
        if await repo.get_lora(self.conn, owner_id, name) is not None:
            raise _taken(name)
        target = self.folder(owner_id) / f"{uuid.uuid4().hex}.safetensors"
        await asyncio.to_thread(_copy, path, target)
        try:
            async with transaction(self.conn):
                return await repo.insert_lora(
                    self.conn, owner_id, name, str(target), job.base_model, job.family, job.id, epoch,
                    job.spec.get("trigger", ""),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            target.unlink(missing_ok=True)
            raise _taken(name) from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    async def list(self, owner_id: int) -> list[repo.LoraRow]:
        """The member's own LoRAs, by name."""
        return await repo.list_loras(self.conn, owner_id)

    async def shared_by_others(self, member_id: int) -> list[repo.LoraRow]:
        """The LoRAs other members share with the server, by name."""
        return await repo.shared_loras(self.conn, except_owner=member_id)

    async def usable(self, member_id: int) -> list[UsableLora]:
        """What the member may generate with or download: their own LoRAs, then those others share."""
        own = [UsableLora(r, r.name, True) for r in await self.list(member_id)]
        shared = [
            UsableLora(r, lora_ref(r, member_id), False) for r in await self.shared_by_others(member_id)
        ]
        return own + shared

    async def get(self, owner_id: int, name: str) -> repo.LoraRow:
        """One of the member's own LoRAs, by name."""
        lora = await repo.get_lora(self.conn, owner_id, name.strip())
        if lora is None:
            raise QueueError("you have no LoRA named '{name}' (save one from /epochs)", name=name)
        return lora

    async def find(self, member_id: int, ref: str) -> repo.LoraRow:
        """The LoRA ``ref`` names for the member (their own, or one shared with the server)."""
        name, owner = _split(ref)
        if owner is not None:
            lora = await repo.get_lora(self.conn, owner, name)
            if lora is not None and (lora.owner_id == member_id or lora.shared):
                return lora
            raise _unknown(name)
        lora = await repo.get_lora(self.conn, member_id, name)
        if lora is not None:
            return lora
        shared = await repo.shared_loras(self.conn, name=name, except_owner=member_id)
        if len(shared) == 1:
            return shared[0]
        if shared:
            owners = ", ".join(owner_label(r) for r in shared)
            raise QueueError(
                "{count} members share a LoRA named '{name}' ({owners}): pick the one you mean "
                "from the list the lora option offers",
                count=len(shared), name=name, owners=owners,
            )  # fmt: skip
        raise _unknown(name)

    async def owned(self, member_id: int, ref: str, action: str) -> repo.LoraRow:
        """The member's own LoRA named ``ref``; for another member's shared LoRA, a refusal that says
        only its owner may ``action`` it."""
        name, owner = _split(ref)
        if owner in (None, member_id):
            lora = await repo.get_lora(self.conn, member_id, name)
            if lora is not None:
                return lora
        others = [
            r
            for r in await repo.shared_loras(self.conn, name=name, except_owner=member_id)
            if owner is None or r.owner_id == owner
        ]
        if others:
            raise QueueError(
                "'{name}' is {owner}'s LoRA, shared with the server: only its owner can {action} it (you can "
                "generate with it and download it). Nothing was changed.",
                name=others[0].name, owner=_owner(others[0]), action=MemberError(action),
            )  # fmt: skip
        raise QueueError("you have no LoRA named '{name}' (see /lora list)", name=name)

    async def rename(self, owner_id: int, ref: str, new_name: str) -> repo.LoraRow:
        lora = await self.owned(owner_id, ref, N_("rename"))
        name = _checked_name(new_name)
        taken = await repo.get_lora(self.conn, owner_id, name)
        if taken is not None and taken.id != lora.id:
            raise _taken(name)
        try:
            async with transaction(self.conn):
                renamed = await repo.rename_lora(self.conn, lora.id, name)
        except sqlite3.IntegrityError:
            raise _taken(name) from None
        if renamed is None:
            raise _gone(lora.name)
        return renamed

    async def delete(self, owner_id: int, ref: str) -> None:
        lora = await self.owned(owner_id, ref, N_("delete"))
        async with transaction(self.conn):
            await repo.delete_lora(self.conn, lora.id)
        Path(lora.path).unlink(missing_ok=True)

    async def share(self, owner_id: int, ref: str, owner_name: str) -> repo.LoraRow:
        """Share one of the member's LoRAs with the server, shown with ``owner_name`` (their name)."""
        lora = await self.owned(owner_id, ref, N_("share"))
        if lora.shared:
            raise QueueError(
                "'{name}' is already shared with the server (/lora unshare stops that)", name=lora.name
            )
        label = " ".join(owner_name.split())[:MAX_OWNER_NAME]
        async with transaction(self.conn):
            shared = await repo.set_shared(self.conn, lora.id, self.queue.clock(), label)
        return _still(shared, lora)

    async def unshare(self, owner_id: int, ref: str) -> repo.LoraRow:
        """Stop sharing: others can no longer pick it (their renders already queued still finish)."""
        lora = await self.owned(owner_id, ref, N_("unshare"))
        if not lora.shared:
            raise QueueError("'{name}' is not shared (only you can use it)", name=lora.name)
        async with transaction(self.conn):
            private = await repo.set_shared(self.conn, lora.id, None, lora.owner_name)
        return _still(private, lora)


def _split(ref: str) -> tuple[str, int | None]:
    """(name, owner id) of ``name@owner_id``; (name, None) of a plain name."""
    ref = ref.strip()
    match = _SHARED_REF.match(ref)
    if match is None:
        return ref, None
    return match.group("name").strip(), int(match.group("owner"))


def _checked_name(name: str) -> str:
    name = name.strip()
    if not _LORA_NAME.match(name):
        raise QueueError("a LoRA name is 1-40 letters, digits, spaces, '_', '-' or '.', starting with one")
    return name


def _taken(name: str) -> QueueError:
    return QueueError("you already have a LoRA named '{name}': pick another name", name=name)


def _unknown(name: str) -> QueueError:
    return QueueError(
        "you have no LoRA named '{name}' and none is shared under that name (see /lora list; save one from /epochs)",
        name=name,
    )


def _gone(name: str) -> QueueError:
    return QueueError("you have no LoRA named '{name}' any more (see /lora list)", name=name)


def _still(row: repo.LoraRow | None, before: repo.LoraRow) -> repo.LoraRow:
    if row is None:  # deleted meanwhile
        raise _gone(before.name)
    return row


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
