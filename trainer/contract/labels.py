"""The words a grid image carries (column, row and title labels), in the member's language.

The bot fills them from its catalogs; the trainer draws them, or the English defaults when no
installed font can draw them (``trainer.fonts.drawn_words``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A grid label template's placeholder per key: the only ``{...}`` a template may hold.
GRID_LABEL_PLACEHOLDERS = {"weight": "{weight}", "seed": "{seed}", "epoch": "{epoch}"}
MAX_GRID_LABEL = 40


def _grid_label(text: str, placeholder: str | None = None) -> str:
    """A grid label (template): one line of 1-40 characters, its placeholder once, no other braces."""
    rest = text.replace(placeholder, "", 1) if placeholder else text
    if placeholder and placeholder not in text:
        raise ValueError(f"must contain {placeholder}")
    if "{" in rest or "}" in rest:
        raise ValueError(f"may hold no braces but {placeholder}" if placeholder else "may hold no braces")
    if not text.strip() or not text.isprintable():
        raise ValueError("must be printable text on one line")
    return text


class GridLabels(BaseModel):
    """The words drawn on a grid, in the member's language (the defaults are the English ones).

    ``weight`` and ``seed`` are templates of a column or row label (``{weight}``: the weight as
    ``0.8``, ``{seed}``: the seed), ``epoch`` the one in a training job's preview title
    (``{epoch}``: its number); ``rows`` names compare_loras' rows in order (their ``label``
    otherwise). The trainer draws the English labels when no installed font draws these.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    weight: str = Field("weight {weight}", max_length=MAX_GRID_LABEL)
    seed: str = Field("seed {seed}", max_length=MAX_GRID_LABEL)
    epoch: str = Field("epoch {epoch}", max_length=MAX_GRID_LABEL)
    rows: list[Annotated[str, Field(max_length=MAX_GRID_LABEL)]] | None = Field(
        None, min_length=1, max_length=8, description="compare_loras' rows, in order"
    )

    @field_validator("weight", "seed", "epoch")
    @classmethod
    def _template(cls, v: str, info) -> str:
        return _grid_label(v, GRID_LABEL_PLACEHOLDERS[info.field_name])

    @field_validator("rows")
    @classmethod
    def _rows(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else [_grid_label(row) for row in v]
