"""Files between the bot's data folder and a cluster node, through Ray's object store.

No shared filesystem: a job's inputs (its dataset snapshot, its resume state, the LoRAs a
generation uses) travel to the node as one uncompressed tar; what the trainer saves comes back
file by file with the event that names it, as ``(relative path, bytes)``. The bot trusts no
relative path a node sends: :func:`safe_target` keeps it inside the job's ``output`` folder.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

#: The file kinds a node may send back (epoch files, the resume state, previews, images).
RETURNED_SUFFIXES = (".safetensors", ".png", ".pt", ".json")
MAX_RETURNED_BYTES = 8 * 2**30


def pack(members: Iterable[tuple[Path, str]]) -> bytes:
    """A tar of ``(file or folder on this host, name in the tar)``; missing ones are left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, name in members:
            if path.exists():
                tar.add(path, arcname=name)
    return buf.getvalue()


def unpack(data: bytes, into: Path) -> None:
    """Extract a :func:`pack` tar into ``into`` (tarfile's ``data`` filter: nothing lands outside)."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(into, filter="data")


class RefusedFile(ValueError):
    """A file a node sent that the bot does not write: ``str()`` says why."""


def safe_target(output_dir: Path, relative: str, size: int) -> Path:
    """Where a returned file goes: inside ``output_dir``, a known kind, a sane size."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in relative or "\x00" in relative:
        raise RefusedFile(f"{relative[:200]!r} is not a plain relative path")
    if not relative.endswith(RETURNED_SUFFIXES):
        raise RefusedFile(f"{relative[:200]!r} is not a file kind a job returns")
    if size > MAX_RETURNED_BYTES:
        raise RefusedFile(f"{relative[:200]!r} is {size} bytes")
    target = output_dir.joinpath(*parts)
    if not target.resolve().is_relative_to(output_dir.resolve()):
        raise RefusedFile(f"{relative[:200]!r} leaves the job's folder")
    return target


def write_returned(output_dir: Path, relative: str, data: bytes) -> Path:
    """Write one returned file atomically (a reader never sees half of it); its path here."""
    target = safe_target(output_dir, relative, len(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target
