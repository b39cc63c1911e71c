"""Which files a trainer process may point the bot at: only its own job's output.

A trainer event names files the bot later posts in a channel or sends with a Download button or
a link. The process is not trusted: an event naming ``/etc/passwd``, another member's job, or a
symlink out of the job's folder must not get that file sent. :func:`trusted_job_file` resolves a
reported path (symlinks and ``..`` included) and accepts it only as a regular file inside
``<job folder>/output``, where the trainer writes epochs, previews and generated images.

Check again when sending, and send the path it returns (the resolved one): the file may have
changed since the event was recorded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

OUTPUT = "output"  # the job's output folder: the trainer's ``output_dir``


def trusted_file(root: str | os.PathLike[str], path: str | os.PathLike[str] | None) -> Path | None:
    """``path`` resolved, if it is absolute and resolves to a regular file inside ``root``
    (resolved too); None otherwise (outside, a directory, a device, missing, unreadable)."""
    if path is None:
        return None
    try:
        text = os.fspath(path)
        if not os.path.isabs(text):
            return None
        real_root = Path(os.path.realpath(root))
        real = Path(os.path.realpath(text))
        if real == real_root or not real.is_relative_to(real_root):
            return None
        mode = os.stat(real).st_mode
    except (OSError, ValueError, TypeError):  # ValueError: a NUL byte in the path
        return None
    return real if stat.S_ISREG(mode) else None


def output_folder(job_folder: str | os.PathLike[str]) -> Path:
    """Where the trainer writes a job's files."""
    return Path(job_folder) / OUTPUT


def trusted_job_file(
    job_folder: str | os.PathLike[str], path: str | os.PathLike[str] | None, suffix: str | None = None
) -> Path | None:
    """``path`` resolved, if it is a regular file in the job's output folder (ending with
    ``suffix`` when given, e.g. ``".png"``); None otherwise. ``job_folder`` is ``JobRow.folder``."""
    real = trusted_file(output_folder(job_folder), path)
    if real is None or (suffix is not None and real.suffix.lower() != suffix):
        return None
    return real
