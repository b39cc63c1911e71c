"""Fonts for the labels drawn on grid pictures: Pillow's default, or one with Japanese glyphs.

A member's words are drawn only in a font that has every glyph (checked against the font's
missing-glyph shape); otherwise the English words are drawn (:func:`drawn_words`), never boxes.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import ImageFont

from .contract.labels import GridLabels

log = logging.getLogger(__name__)


#: Fonts with Japanese glyphs at their Debian paths (fonts-ipafont-gothic, fonts-noto-cjk,
#: fonts-takao-gothic, fonts-vlgothic), tried after fontconfig's choice for ``:lang=ja``.
CJK_FONT_PATHS = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/takao-gothic/TakaoGothic.ttf",
    "/usr/share/fonts/truetype/vlgothic/VL-Gothic-Regular.ttf",
)
_MISSING = "\U0010fffd"  # a private-use code point no font has: drawn as the font's missing glyph


def _default_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@functools.cache
def cjk_font_file() -> str | None:
    """A font file with Japanese glyphs: fontconfig's match for ``:lang=ja`` (it names some font
    even when none has them: the glyphs are checked where it is used), else the first of
    :data:`CJK_FONT_PATHS` present; None when neither is there."""
    candidates = []
    if shutil.which("fc-match"):
        try:
            command = ["fc-match", "-f", "%{file}", ":lang=ja"]
            found = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            candidates.append(found.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return next((path for path in (*candidates, *CJK_FONT_PATHS) if path and Path(path).is_file()), None)


@functools.cache
def font_at(path: str | None, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font file at ``path`` (None: Pillow's default) at ``size`` px."""
    return _default_font(size) if path is None else ImageFont.truetype(path, size)


@functools.cache
def _draws(path: str | None, char: str) -> bool:
    """Whether the font at ``path`` has a glyph for ``char`` (its drawing is not the missing glyph)."""
    if char.isspace():
        return True
    font = font_at(path, 24)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow < 10.1's bitmap font: Latin-1
        return ord(char) < 256
    drawn, missing = font.getmask(char), font.getmask(_MISSING)
    if 0 in drawn.size:  # nothing drawn: no glyph (a space was answered above)
        return False
    return drawn.size != missing.size or bytes(drawn) != bytes(missing)


def _fonts() -> list[str | None]:
    """The fonts a grid may use, in order of preference: Pillow's default, then a CJK font."""
    cjk = cjk_font_file()
    return [None, cjk] if cjk else [None]


def font_for(texts: Sequence[str]) -> str | None | bool:
    """The font (a file; None: Pillow's default) that draws every character of ``texts``, or
    False when no font here draws them all (they would be drawn as boxes)."""
    chars = {c for text in texts for c in text}
    return next((path for path in _fonts() if all(_draws(path, c) for c in chars)), False)


def drawable(texts: Sequence[str]) -> bool:
    """Whether some font here draws every character of ``texts`` (:func:`font_for`)."""
    return font_for(texts) is not False


def drawn_words(words: GridLabels | None, labels: Callable[[GridLabels], Sequence[str]]) -> GridLabels:
    """The words a grid is labelled in: ``words`` (None: the English defaults) when some font here
    draws every label ``labels`` makes of them, else the English ones (a warning in the log):
    boxes say nothing."""
    if words is None:
        return GridLabels()
    drawn = list(labels(words))
    if drawable(drawn):
        return words
    log.warning("no installed font draws the grid's labels %s: drawn in English", drawn)
    return GridLabels()


def grid_font(labels: Sequence[str], title: str | None) -> str | None:
    """The font for the labels and the title; one for the labels alone when none draws the title
    too (a prompt may hold anything); else the default."""
    for texts in ([*labels, title or ""], labels):
        path = font_for(texts)
        if path is not False:
            return path
    return None
