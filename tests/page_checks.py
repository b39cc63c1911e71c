"""Headless Chromium and fontconfig for the tests that look at a page as a phone shows it.

Drawing a page at a given width (in a frame: headless Chromium lays a window out at least 500 px
wide), which characters of a page no installed font has (they would be drawn as boxes), and the
pixel measures the glyph checks use.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image, ImageChops

from bot.demo.style import CSS

CHROMIUM = Path("/usr/bin/chromium")


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` with ``args``; returns what it printed on stdout."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args, page.as_uri()]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=120, check=False, text=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return done.stdout


def framed(page: Path, width: int, height: int) -> Path:
    """A page showing ``page`` in a frame ``width`` px wide: headless Chromium lays a window out at
    least 500 px wide (a narrower --window-size only crops the picture); a frame is as narrow as
    asked. A message the framed page posts is written into the host's <pre id="measured">."""
    host = page.with_name(f"frame-{width}-{page.name}")
    host.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe src="{page.name}" style="display:block;'
                    f'border:0;width:{width}px;height:{height}px"></iframe><script>addEventListener("message", e => '
                    '{const out = document.createElement("pre"); out.id = "measured"; out.textContent = e.data; '
                    "document.body.appendChild(out)})</script></body></html>", encoding="utf-8")  # fmt: skip
    return host


def screenshot(page: Path, out: Path, width: int, height: int = 1200) -> Image.Image:
    """``page`` as Chromium draws it ``width`` px wide."""
    size = f"--window-size={max(width, 500)},{height}"
    chromium(framed(page, width, height), out.parent / f"profile-{width}", f"--screenshot={out}", size)
    assert out.is_file(), "chromium wrote no screenshot"
    return Image.open(out).convert("RGB").crop((0, 0, width, height))


class VisibleText(HTMLParser):
    """The text a page shows: its text nodes outside <style>/<script>/<head>, and its CSS ``content``."""

    def __init__(self) -> None:
        super().__init__()
        self.text, self._hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("style", "script", "title")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def visible_characters(page: str) -> set[str]:
    parser = VisibleText()
    parser.feed(page)
    text = "".join(parser.text) + "".join(re.findall(r'content:"([^"]*)"', CSS))
    return {
        c
        for c in html.unescape(text)
        if not c.isspace() and unicodedata.category(c) not in ("Cf", "Mn", "Cc")
    }


def fc_list(*args: str) -> str:
    done = subprocess.run(["fc-list", *args], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout


@functools.cache
def font_charsets() -> dict[str, list[tuple[int, int]]]:
    """Each installed font file -> its code point ranges (fontconfig's charset)."""
    fonts = {}
    for line in fc_list("--format", "%{file}\t%{charset}\n").splitlines():
        file, _, charset = line.partition("\t")
        ranges = []
        for part in charset.split():
            low, _, high = part.partition("-")
            ranges.append((int(low, 16), int(high or low, 16)))
        fonts[file] = ranges
    return fonts


def uncovered(chars: set[str]) -> set[str]:
    """The characters no installed font has a glyph for (they would be drawn as boxes)."""
    ranges = [r for rs in font_charsets().values() for r in rs]
    return {c for c in chars if not any(low <= ord(c) <= high for low, high in ranges)}


def missing_fonts() -> str | None:
    """Why the page cannot be drawn without boxes here (None: it can)."""
    if shutil.which("fc-list") is None:
        return "fontconfig's fc-list is absent"
    if not fc_list(":lang=ja", "family").strip():
        return "no Japanese font installed (apt-get install fonts-ipafont-gothic; .ci/run does)"
    if not fc_list(":color=true", "family").strip():
        return "no colour emoji font installed (apt-get install fonts-noto-color-emoji; .ci/run does)"
    return None


def ink(band: Image.Image) -> Image.Image:
    """The band's text as a mask (anything well away from the page's background)."""
    background = Image.new("RGB", band.size, band.getpixel((band.width - 2, 2)))
    return ImageChops.difference(band, background).convert("L").point(lambda v: 255 if v > 40 else 0)


def count(mask: Image.Image) -> int:
    return mask.convert("L").histogram()[255]


def unlike(a: Image.Image, b: Image.Image) -> float:
    """How unlike two inked bands are: the share of their ink pixels that only one of them has."""
    a_ink, b_ink = ink(a).convert("1"), ink(b).convert("1")
    return count(ImageChops.logical_xor(a_ink, b_ink)) / max(1, count(ImageChops.logical_or(a_ink, b_ink)))


def colourful(band: Image.Image) -> int:
    """Pixels of a strong colour (emoji are; text and boxes are grey)."""
    r, g, b = band.split()
    high, low = ImageChops.lighter(ImageChops.lighter(r, g), b), ImageChops.darker(ImageChops.darker(r, g), b)
    return count(ImageChops.subtract(high, low).point(lambda v: 255 if v > 80 else 0))
