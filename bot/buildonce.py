"""Build a folder once, atomically: several processes may ask for the same tiny model at once."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def build_folder_once(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """Make ``target`` with ``build(folder)`` unless ``target/marker`` exists.

    The folder is built under a temp name beside it and renamed into place, so nobody ever sees
    a half-built one; when two builders race, the first rename wins and the other's copy is dropped.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / marker).is_file():  # a leftover of a crashed build: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
