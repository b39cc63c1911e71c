"""transcript.html from small synthetic data: escaped, Discord-like, and drawn by a real browser."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bot.demo.transcript import markdown, write_transcript

CHROMIUM = Path("/usr/bin/chromium")
MAGENTA = (255, 0, 255)
BOT = {"1": "LoRA Bot", "2": "newcomer"}


def _grid_png() -> bytes:
    """A stand-in grid: a white label strip with text over three distinct magenta cells."""
    img = Image.new("RGB", (300, 130), "white")
    draw = ImageDraw.Draw(img)
    draw.text((6, 4), "weight 0.7   weight 0.8   weight 1", fill="black")
    for c in range(3):
        draw.rectangle((c * 100, 30, c * 100 + 99, 129), fill=MAGENTA)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _entries() -> list[dict]:
    grid = _grid_png()
    return [
        {"kind": "action", "user": "newcomer", "command": "/generate",
         "options": [{"name": "prompt", "value": "tkmascot <script>alert(1)</script>"},
                     {"name": "compare_weights", "value": "0.7,0.8,1.0"}]},
        {"kind": "message", "author": "LoRA Bot", "content": "⏳ Queued **#2**: see `/queue`", "ephemeral": True,
         "embeds": [], "attachments": [], "reply_to": "/generate", "names": BOT,
         "components": [{"type": 1, "components": [
             {"type": 2, "style": 1, "label": "Start", "custom_id": "a"},
             {"type": 2, "style": 4, "label": "Cancel", "custom_id": "b", "disabled": True}]}]},
        {"kind": "message", "author": "LoRA Bot", "content": "<@2> #2 · done <t:1700000000:f>", "names": BOT,
         "embeds": [{"title": "Job #1 · epoch 2/2", "color": 0x57F287, "image": {"url": "attachment://grid.png"},
                     "fields": [{"name": "Step", "value": "14/14", "inline": True}],
                     "footer": {"text": "tiny-sd15 · 64 px"}}],
         "attachments": [{"filename": "grid.png", "data": grid, "content_type": "image/png"}],
         "components": [], "edited": True},
    ]  # fmt: skip


def test_text_is_escaped_and_markdown_rendered(tmp_path):
    html_text = markdown("**bold** `a<b>` <@2> <t:1700000000:f>\n```\n<x>\n```", BOT)
    assert "<b>bold</b>" in html_text and "<code>a&lt;b&gt;</code>" in html_text
    assert "@newcomer" in html_text and "2023-11-14" in html_text and "<pre>&lt;x&gt;</pre>" in html_text
    page_path = tmp_path / "transcript.html"
    written = write_transcript(_entries(), page_path)
    page = page_path.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Only you can see this" in page and "disabled" in page and 'name="viewport"' in page
    assert any(p.suffix == ".png" for p in written)


def _screenshot(page: Path, out: Path, width: int) -> Image.Image:
    profile = out.parent / f"profile-{width}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={width},1200",
           page.as_uri()]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    shutil.rmtree(profile, ignore_errors=True)
    assert out.is_file(), "chromium wrote no screenshot"
    return Image.open(out).convert("RGB")


def _magenta_box(shot: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the grid's magenta cells in the screenshot."""
    mask = Image.eval(shot.split()[1], lambda g: 255 if g < 40 else 0)
    red, blue = (Image.eval(b, lambda v: 255 if v > 215 else 0) for b in (shot.split()[0], shot.split()[2]))
    both = Image.composite(
        mask, Image.new("L", shot.size, 0), Image.composite(red, Image.new("L", shot.size), blue)
    )
    return both.getbbox()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
@pytest.mark.parametrize("width", [900, 390])
def test_browser_draws_the_grid_in_a_dark_page(tmp_path, width):
    page = tmp_path / "transcript.html"
    write_transcript(_entries(), page)
    shot = _screenshot(page, tmp_path / f"shot-{width}.png", width)
    box = _magenta_box(shot)
    assert box is not None, "the grid image is not drawn"
    left, top, right, bottom = box
    assert right - left >= min(280, width - 140) * 0.9 and bottom - top >= 60, box
    assert right <= width, "the grid overflows the page"
    background = shot.getpixel((width - 3, shot.height - 3))
    assert max(background) < 70, f"not a dark theme: {background}"
    strip = shot.crop((left, max(0, top - 25), right, top))
    assert strip.convert("L").getextrema()[1] > 240, "the grid's white label strip is missing"
