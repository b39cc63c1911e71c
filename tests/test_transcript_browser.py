"""transcript.html from small synthetic data: escaped, Discord-like, and drawn by a real browser.

The Japanese page (issue 16) is checked three ways at a phone's 390 px: every character on it has an
installed font (fontconfig), Chromium draws its Japanese and emoji as glyphs and not as the boxes of
a missing glyph (pixels), and its option chips wrap whole, with nothing wider than the screen
(measured in the page by a script, read back with ``--dump-dom``).
"""

from __future__ import annotations

import html
import io
import json
import re
import unicodedata
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bot.demo.style import CSS
from bot.demo.transcript import markdown, write_transcript
from tests.page_checks import (
    CHROMIUM,
    chromium,
    colourful,
    framed,
    missing_fonts,
    screenshot,
    uncovered,
    unlike,
    visible_characters,
)

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
    shot = screenshot(page, tmp_path / f"shot-{width}.png", width)
    box = _magenta_box(shot)
    assert box is not None, "the grid image is not drawn"
    left, top, right, bottom = box
    assert right - left >= min(280, width - 140) * 0.9 and bottom - top >= 60, box
    assert right <= width, "the grid overflows the page"
    background = shot.getpixel((width - 3, shot.height - 3))
    assert max(background) < 70, f"not a dark theme: {background}"
    strip = shot.crop((left, max(0, top - 25), right, top))
    assert strip.convert("L").getextrema()[1] > 240, "the grid's white label strip is missing"


# --- The Japanese page at 390 px ----------------------------------------------------------------

PHONE = 390
LONG_OPTIONS = (
    "mixed_precision=no, optimizer=AdamW, preview_steps=2, network_dim=4, network_alpha=2, repeats=1"
)
EMOJI = "⏳✅👁️🎉🖱️🤖"


def _japanese_entries() -> list[dict]:
    """A Japanese member's conversation: Japanese text, emoji, and option chips long and short."""
    return [
        {"kind": "action", "user": "newcomer", "command": "/preset save",
         "options": [{"name": "name", "value": "はやい"}, {"name": "options", "value": LONG_OPTIONS}]},
        {"kind": "action", "user": "newcomer", "command": "/generate",
         "options": [{"name": "prompt", "value": "tkmascot、青い空の下で笑っている女の子、桜の花びら、やわらかい光、"
                                                  "水彩画風のイラスト、高品質、細部まで描き込まれた背景"},
                     {"name": "lora", "value": "mascot-e2"}, {"name": "weight", "value": "0.8"},
                     {"name": "compare_weights", "value": "0.7,0.8,1.0"}, {"name": "seed", "value": "1234"},
                     {"name": "negative", "value": "tkmascot_a_very_long_tag_without_any_space_in_it_at_all_0123"}]},
        {"kind": "message", "author": "LoRA Bot", "ephemeral": True, "reply_to": "/generate", "names": BOT,
         "content": "⏳ キューに追加しました: ジョブ **#2**(14 ステップ、スタミナ 3)。進み具合とプレビューはこの"
                    "チャンネルに届きます。`/queue` で確認できます。",
         "embeds": [], "attachments": [],
         "components": [{"type": 1, "components": [
             {"type": 2, "style": 1, "label": "開始(スタミナ 3)", "custom_id": "a"},
             {"type": 2, "style": 4, "label": "キャンセル", "custom_id": "b", "disabled": True}]},
             {"type": 1, "components": [{"type": 3, "custom_id": "c", "options": []}]}]},
        {"kind": "action", "user": "newcomer", "text": "「開始(スタミナ 3)」をクリック"},
        {"kind": "message", "author": "LoRA Bot", "names": BOT, "edited": True,
         "content": "✅ <@2> ジョブ #2(mascot)が完了しました 🎉 `/epochs job:2` でエポックを選んでください。",
         "embeds": [{"title": "ジョブ #2 · エポック 2/2", "color": 0x57F287,
                     "description": "損失 1.0842 · 学習率 0.0001 · リピート数 1",
                     "fields": [{"name": "ステップ", "value": "14/14", "inline": True},
                                {"name": "スタミナ", "value": "残り 97", "inline": True}]}],
         "attachments": [], "components": []},
    ]  # fmt: skip


def _japanese_page(tmp_path: Path) -> Path:
    page = tmp_path / "transcript.html"
    write_transcript(_japanese_entries(), page, title="LoRA ボットのデモ: #training", locale="ja")
    return page


def test_the_japanese_page_speaks_japanese(tmp_path):
    """The page's own words (Discord's, around the messages) follow the member's language."""
    page = _japanese_page(tmp_path).read_text(encoding="utf-8")
    assert '<html lang="ja">' in page
    for said in ("これはあなただけに表示されています", "メッセージを削除する", "を使用しました", "(編集済)",
                 "アプリ", "選択してください", "/生成", "プロンプト"):  # fmt: skip
        assert said in page, said
    for english in (
        "Only you can see this",
        "Dismiss message",
        "used ",
        "(edited)",
        ">APP<",
        "Make a selection",
    ):
        assert english not in page, english
    english_page = tmp_path / "en.html"
    write_transcript(_japanese_entries(), english_page)
    assert '<html lang="en">' in english_page.read_text(encoding="utf-8")


def test_every_character_of_the_japanese_page_has_a_font(tmp_path):
    if reason := missing_fonts():
        pytest.skip(reason)
    chars = visible_characters(_japanese_page(tmp_path).read_text(encoding="utf-8"))
    assert {"開", "ス", "⏳", "✅", "🎉", "👁", "🖱", "↱", "·"} <= chars
    missing = uncovered(chars)
    assert not missing, (
        f"no installed font draws {sorted(missing)} ({[f'U+{ord(c):04X}' for c in sorted(missing)]})"
    )


def _probe_rows(tmp_path: Path, rows: list[str]) -> list[Image.Image]:
    """``rows`` drawn by Chromium with the transcript's stylesheet in a Japanese page: one 64 px band
    each, light text on the dark page."""
    lines = "".join(
        f'<div style="height:64px;font-size:36px;white-space:nowrap">{html.escape(r)}</div>' for r in rows
    )
    page = tmp_path / "probe.html"
    page.write_text(f'<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8"><style>{CSS}</style></head>'
                    f"<body>{lines}</body></html>", encoding="utf-8")  # fmt: skip
    shot = screenshot(page, tmp_path / "probe.png", PHONE * 2, 64 * len(rows))
    return [shot.crop((0, 64 * i, shot.width, 64 * (i + 1))) for i in range(len(rows))]


def glyph_checks(tmp_path: Path) -> dict[str, float]:
    """Japanese and emoji from the page against as many boxes of a glyph no font has (U+E000): how
    unlike the Japanese is to the boxes, and how colourful the emoji and the boxes are."""
    page = _japanese_page(tmp_path).read_text(encoding="utf-8")
    japanese = "".join(
        sorted(c for c in visible_characters(page) if unicodedata.name(c, "").startswith("CJK"))
    )[:10]
    emoji = [c for c in EMOJI if unicodedata.category(c) == "So"]
    kanji, boxes, drawn = _probe_rows(tmp_path, [japanese, "\ue000" * len(japanese), "".join(emoji)])
    return {"japanese_unlike_boxes": unlike(kanji, boxes), "emoji_colour_px": colourful(drawn),
            "boxes_colour_px": colourful(boxes)}  # fmt: skip


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_japanese_and_emoji_are_drawn_not_as_boxes(tmp_path):
    if reason := missing_fonts():
        pytest.skip(reason)
    found = glyph_checks(tmp_path)
    # Measured: with IPAGothic and Noto Color Emoji, unlike 0.90 and 2598 colour pixels. With only
    # DejaVu (FONTCONFIG_FILE listing its folder) each kanji is the very box U+E000 is (unlike 0.00)
    # and the emoji are grey boxes (0 colour pixels); with DejaVu and IPAGothic: 0.80 and 0.
    assert found["japanese_unlike_boxes"] > 0.5, found
    assert found["emoji_colour_px"] > 500 and found["boxes_colour_px"] == 0, found


#: Measures the page in the browser (each option chip's lines, anything wider than the screen) and
#: posts the results to the frame's host, which shows them for --dump-dom.
MEASURE = """<script>
function textRects(el) {
  const rects = [], walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const r = document.createRange(); r.selectNodeContents(walk.currentNode);
    rects.push(...[...r.getClientRects()].filter(x => x.width > 0));
  }
  return rects;
}
function lineOf(lines, rect) {  // the index of the line box a rect is on (by vertical overlap)
  let i = lines.findIndex(l => rect.top < l.bottom - 2 && rect.bottom > l.top + 2);
  if (i < 0) { lines.push({top: rect.top, bottom: rect.bottom}); i = lines.length - 1; }
  return i;
}
const view = document.documentElement.clientWidth;
const chips = [...document.querySelectorAll('.opt')].map(chip => {
  const name = chip.querySelector('.optname'), value = chip.querySelector('.optvalue');
  const room = chip.parentElement.getBoundingClientRect(), box = chip.getBoundingClientRect();
  const probe = chip.cloneNode(true);
  probe.style.cssText = 'position:absolute;visibility:hidden;white-space:nowrap;max-width:none';
  chip.parentElement.appendChild(probe);
  const natural = probe.getBoundingClientRect().width;
  probe.remove();
  const lines = [], all = textRects(chip).sort((a, b) => a.top - b.top);
  all.forEach(r => lineOf(lines, r));
  const valueRects = textRects(value), nameRect = textRects(name)[0];
  const later = valueRects.filter(r => lineOf(lines, r) > 0);
  return {name: name.textContent, lines: lines.length, fits: natural <= room.width + 0.5,
          inside: box.left >= room.left - 0.5 && box.right <= room.right + 0.5,
          valueOnNameLine: lineOf(lines, valueRects[0]) === lineOf(lines, nameRect),
          laterLinesLeft: later.length ? Math.min(...later.map(r => r.left)) - nameRect.left : 0};
});
const wide = [...document.querySelectorAll('body *')].filter(el => !el.closest('pre, script'))
  .filter(el => el.getBoundingClientRect().right > view + 0.5).map(el => el.className || el.tagName);
parent.postMessage(JSON.stringify({view, scroll: document.documentElement.scrollWidth, chips, wide}), '*');
</script>"""


def measure(page: Path, width: int = PHONE) -> dict:
    """The page measured by Chromium at ``width`` px (its copy with :data:`MEASURE` in it)."""
    probe = page.with_name(f"measured-{page.name}")
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    size = f"--window-size={max(width, 500)},1200"
    host = framed(probe, width, 1200)
    dom = chromium(host, page.parent / "profile-dom", "--dump-dom", "--virtual-time-budget=5000", size)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, f"the page was not measured: {dom[-500:]!r}"
    return json.loads(html.unescape(found[1]))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_option_chips_wrap_whole_and_nothing_overflows_at_390_px(tmp_path):
    found = measure(_japanese_page(tmp_path))
    assert found["view"] == PHONE, found["view"]
    assert found["scroll"] <= PHONE and not found["wide"], (found["scroll"], found["wide"])
    chips = found["chips"]
    assert len(chips) == 8 and sum(c["fits"] for c in chips) >= 5 and not all(c["fits"] for c in chips), chips
    for chip in chips:
        assert chip["inside"], chip  # never wider than the line it is on
        if chip["fits"]:
            assert chip["lines"] == 1, (
                f"{chip['name']}: broken over {chip['lines']} lines though it fits in one"
            )
        else:  # longer than a line: the value starts beside its name, then goes on from the chip's left edge
            assert chip["valueOnNameLine"], f"{chip['name']}: the value left its name"
            assert chip["lines"] >= 2 and abs(chip["laterLinesLeft"]) <= 2, (
                f"{chip['name']} wraps in a column: {chip}"
            )
