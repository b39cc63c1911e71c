"""Files the trainer hands to members: epoch files, the final copy, previews, generated images.

Each is written under a temporary name and renamed into place (a reader never sees half a file),
with one mode, :data:`DELIVERED_MODE` (0644), whatever the umask: ``safetensors.save_file`` makes
its files 0600 while a plain copy follows the umask, and the bot (or an operator's web server)
may read them as another user.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

DELIVERED_MODE = 0o644


def temp_path(path: Path) -> Path:
    """The name a delivered file is written under before :func:`publish` renames it."""
    return path.with_name(path.name + ".tmp")


def publish(tmp: Path, path: Path) -> None:
    """Give the written ``tmp`` the delivered mode and rename it to ``path`` (atomically)."""
    os.chmod(tmp, DELIVERED_MODE)
    os.replace(tmp, path)


def save_image(image: Image.Image, path: Path) -> None:
    """Save ``image`` to ``path`` (format from its suffix, PNG when unknown) as a delivered file."""
    tmp = temp_path(path)
    image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    publish(tmp, path)
