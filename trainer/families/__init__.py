"""Model families: one module each (``trainer/families/<key>.py``, its ``FAMILY``), one row each in
:data:`trainer.contract.families.FAMILIES`. Adding a family adds those two and nothing else here."""

from __future__ import annotations

import importlib

from ..contract.families import FAMILIES, family_info
from .base import ModelFamily

__all__ = ["ModelFamily", "all_families", "get_family"]


def get_family(key: str) -> ModelFamily:
    """The module of the family ``key`` (a row of the contract's table)."""
    family_info(key)  # an unknown key is a clear error, not an ImportError
    family = importlib.import_module(f"{__name__}.{key}").FAMILY
    if family.key != key:
        raise RuntimeError(f"trainer/families/{key}.py declares family {family.key!r}")
    return family


def all_families() -> list[ModelFamily]:
    """Every family of the table, in the table's order (detection tries them in that order)."""
    return [get_family(key) for key in FAMILIES]
