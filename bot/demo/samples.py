"""The demo's dataset: our own drawings of a mascot (a round yellow creature) on varied backgrounds."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

#: Background name -> colour; the tiny tagger reads the dominant colour.
BACKGROUNDS = {
    "sky": (110, 170, 235),
    "grass": (90, 170, 80),
    "sunset": (235, 120, 70),
    "night": (30, 35, 80),
    "pink": (235, 150, 190),
    "sand": (220, 200, 140),
    "teal": (40, 150, 150),
}


def mascot_png(index: int, size: int = 256) -> bytes:
    """One drawing (PNG bytes): the mascot at a varied place and size on a varied background."""
    name = list(BACKGROUNDS)[index % len(BACKGROUNDS)]
    img = Image.new("RGB", (size, size), BACKGROUNDS[name])
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, size * 3 // 4, size, size), fill=tuple(max(0, c - 40) for c in BACKGROUNDS[name]))
    r = size // 4 + (index % 3) * size // 24
    cx, cy = size // 2 + (index - 3) * size // 24, size // 2 + (index % 2) * size // 16
    for ex in (-1, 1):  # ears
        draw.polygon([(cx + ex * r // 2, cy - r + 6), (cx + ex * r, cy - r - r // 3), (cx + ex * r, cy - r // 3)],
                     fill=(250, 215, 40), outline=(60, 40, 0))  # fmt: skip
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 215, 40), outline=(60, 40, 0), width=3)
    eye = max(3, r // 9)
    for dx in (-r // 3, r // 3):
        draw.ellipse((cx + dx - eye, cy - r // 3 - eye, cx + dx + eye, cy - r // 3 + eye), fill=(20, 20, 20))
    for dx in (-r // 2, r // 2):  # cheeks
        draw.ellipse((cx + dx - eye, cy + 2, cx + dx + eye, cy + 2 + eye), fill=(240, 110, 90))
    draw.arc((cx - r // 2, cy - r // 4, cx + r // 2, cy + r // 2), 20, 160, fill=(120, 30, 20), width=4)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def sample_files(count: int = 7, size: int = 256) -> dict[str, tuple[str, bytes]]:
    """``count`` drawings as /upload options: ``file1`` -> (filename, bytes)."""
    names = list(BACKGROUNDS)
    return {
        f"file{i + 1}": (f"mascot_{names[i % len(names)]}.png", mascot_png(i, size)) for i in range(count)
    }
