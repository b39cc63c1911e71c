"""``transcript.html``: the conversation rendered as Discord draws it (dark theme, phone-friendly).

Renders the plain entries of :mod:`bot.demo.timeline`; images are written next to the page in
``<name>_files/`` and referenced relatively. All text is escaped; Discord markdown is rendered
minimally (bold, inline code, code blocks, mentions, timestamps). The page's own words (Discord's
"Only you can see this", "used /command", the command and option names) are in the transcript's
language, the one the member's Discord was in.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from ..i18n import Messages, messages
from .style import CSS

Entry = dict[str, Any]
BUTTON_STYLES = {1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "link"}


class _Images:
    """Writes images once (by content) into the files folder; returns relative URLs."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.written = folder, {}

    def url(self, filename: str, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()[:12]
        if key not in self.written:
            self.folder.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[-60:] or "file"
            path = self.folder / f"{key}-{safe}"
            path.write_bytes(data)
            self.written[key] = path
        return f"{self.folder.name}/{self.written[key].name}"


def write_transcript(
    entries: list[Entry], path: Path, title: str = "Transcript", locale: str = "en-US"
) -> list[Path]:
    """Write the page (and its images) as a member whose Discord is in ``locale`` saw it; returns
    the files written."""
    t = messages(locale)
    images = _Images(path.parent / f"{path.stem}_files")
    shutil.rmtree(images.folder, ignore_errors=True)  # an earlier run's images
    body = "\n".join(render_entry(e, images, t) for e in entries)
    page = (f'<!DOCTYPE html>\n<html lang="{t.language}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f'<body><header># {html.escape(title)}</header><main>\n{body}\n</main></body></html>\n')  # fmt: skip
    path.write_text(page, encoding="utf-8")
    return [path, *images.written.values()]


def render_entry(entry: Entry, images: _Images, t: Messages | None = None) -> str:
    """One member action or bot message (the page's words in ``t``'s language; English by default)."""
    t = t or messages("en")
    if entry["kind"] == "action":
        return _action(entry, images, t)
    return _message(entry, images, t)


def _command(label: str, t: Messages) -> str:
    """``/dataset new`` as the member's Discord names it (``/データセット 新規`` in Japanese)."""
    words = label.lstrip("/").split()
    return "/" + " ".join(t.name("command", word) for word in words)


def _action(entry: Entry, images: _Images, t: Messages) -> str:
    user = html.escape(entry.get("user", "member"))
    if "command" not in entry:
        return f'<div class="action">🖱️ <b>{user}</b> {html.escape(entry.get("text", ""))}</div>'
    chips = []
    for opt in entry.get("options", []):
        value = html.escape(opt["value"])
        if opt.get("image"):
            value = (
                f'<img class="thumb" src="{images.url(opt["value"], opt["image"])}" alt="{value}"> {value}'
            )
        name = html.escape(t.name("option", opt["name"]))
        chips.append(
            f'<span class="opt"><span class="optname">{name}</span>&nbsp;<span class="optvalue">{value}</span></span>'
        )
    command = html.escape(_command(entry["command"], t))
    return (f'<div class="msg member"><div class="avatar">{user[:1].upper()}</div><div class="body">'
            f'<div class="head"><span class="name">{user}</span></div>'
            f'<div class="command"><span class="slash">{command}</span> {" ".join(chips)}</div>'
            "</div></div>")  # fmt: skip


def _message(entry: Entry, images: _Images, t: Messages) -> str:
    names = entry.get("names") or {}
    author = html.escape(entry.get("author", "bot"))
    files = {a["filename"]: a for a in entry.get("attachments", [])}
    used: set[str] = set()
    parts = []
    if entry.get("reply_to"):
        command = f'<span class="slash">{html.escape(_command(entry["reply_to"], t))}</span>'
        used_it = html.escape(t("used {command}", command="\x00")).replace("\x00", command)
        parts.append(f'<div class="replyto">↱ {used_it}</div>')
    tag = f'<span class="bottag">{html.escape(t("APP"))}</span>'
    edited = f' <span class="muted">{html.escape(t("(edited)"))}</span>' if entry.get("edited") else ""
    parts.append(f'<div class="head"><span class="name bot">{author}</span>{tag}{edited}</div>')
    if entry.get("content"):
        parts.append(f'<div class="content">{markdown(entry["content"], names, t)}</div>')
    for embed in entry.get("embeds") or []:
        parts.append(_embed(embed, files, used, images, names, t))
    loose = [_attachment(att, images) for name, att in files.items() if name not in used]
    if loose:
        parts.append(f'<div class="gallery">{"".join(loose)}</div>')
    parts += [_row(row, t) for row in entry.get("components") or []]
    if entry.get("ephemeral"):
        only, dismiss = html.escape(t("Only you can see this")), html.escape(t("Dismiss message"))
        parts.append(f'<div class="eph">👁️ {only} · <u>{dismiss}</u></div>')
    classes = "msg" + (" ephemeral" if entry.get("ephemeral") else "")
    return (
        f'<div class="{classes}"><div class="avatar bot">🤖</div><div class="body">'
        f"{''.join(parts)}</div></div>"
    )


def _embed(embed: Entry, files: dict, used: set[str], images: _Images, names: dict, t: Messages) -> str:
    colour = embed.get("color")
    bar = f"#{int(colour):06x}" if colour is not None else "#1e1f22"
    inner = []
    if embed.get("title"):
        inner.append(f'<div class="etitle">{markdown(embed["title"], names, t)}</div>')
    if embed.get("description"):
        inner.append(f'<div class="edesc">{markdown(embed["description"], names, t)}</div>')
    fields = []
    for f in embed.get("fields") or []:
        cls = "field inline" if f.get("inline") else "field"
        fields.append(f'<div class="{cls}"><div class="fname">{markdown(f.get("name", ""), names, t)}</div>'
                      f'<div class="fvalue">{markdown(f.get("value", ""), names, t)}</div></div>')  # fmt: skip
    if fields:
        inner.append(f'<div class="fields">{"".join(fields)}</div>')
    thumb = _embed_image(embed.get("thumbnail"), files, used, images, "ethumb")
    image = _embed_image(embed.get("image"), files, used, images, "eimage")
    if image:
        inner.append(image)
    if (embed.get("footer") or {}).get("text"):
        inner.append(f'<div class="efoot">{html.escape(embed["footer"]["text"])}</div>')
    return (
        f'<div class="embed" style="border-left-color:{bar}"><div class="emain">{"".join(inner)}</div>'
        f"{thumb}</div>"
    )


def _embed_image(ref: Entry | None, files: dict, used: set[str], images: _Images, cls: str) -> str:
    """An embed's image or thumbnail: an attachment of the message (attachment://name or its URL)."""
    url = (ref or {}).get("url") or ""
    if not url:
        return ""
    name = url.split("attachment://", 1)[-1].rsplit("/", 1)[-1].split("?", 1)[0]
    if name in files:
        used.add(name)
        return f'<img class="{cls}" src="{images.url(name, files[name]["data"])}" alt="{html.escape(name)}">'
    return f'<div class="{cls} missing">{html.escape(name)}</div>'


def _attachment(att: Entry, images: _Images) -> str:
    name = att["filename"]
    kind = att.get("content_type") or ""
    if kind.startswith("image/") or name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif")):
        return f'<img class="attimg"{_small(att["data"])} src="{images.url(name, att["data"])}" alt="{html.escape(name)}">'
    href = images.url(name, att["data"])
    size = len(att["data"])
    return (
        f'<div class="file">📄 <a href="{href}" download="{html.escape(name)}">{html.escape(name)}</a>'
        f'<span class="muted"> {size / 1024:,.1f} KB</span></div>'
    )


def _small(data: bytes, least: int = 160) -> str:
    """A style enlarging (pixelated) an image narrower than ``least`` pixels, as Discord's viewer would."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width = img.width
    except (OSError, ValueError):
        return ""
    return f' style="width:{least}px;image-rendering:pixelated"' if width < least else ""


def _row(row: Entry, t: Messages) -> str:
    out = []
    for c in row.get("components") or []:
        disabled = " disabled" if c.get("disabled") else ""
        emoji = (c.get("emoji") or {}).get("name") or ""
        if c.get("type") == 2:
            style = BUTTON_STYLES.get(int(c.get("style") or 2), "secondary")
            label = html.escape(f"{emoji} {c.get('label') or ''}".strip())
            link = " ↗" if style == "link" else ""
            out.append(f'<span class="btn {style}{disabled}">{label}{link}</span>')
        elif c.get("type") in (3, 5, 6, 7, 8):
            picked = [o["label"] for o in c.get("options") or [] if o.get("default")]
            text = ", ".join(picked) or c.get("placeholder") or t("Make a selection")
            out.append(
                f'<span class="select{disabled}">{html.escape(text)}<span class="chev">⌄</span></span>'
            )
    return f'<div class="row">{"".join(out)}</div>'


def markdown(text: str, names: dict[str, str] | None = None, t: Messages | None = None) -> str:
    """Escaped text with Discord's basic markdown: code blocks, `code`, **bold**, mentions, timestamps
    (relative ones in ``t``'s language)."""
    names, t = names or {}, t or messages("en")
    pieces = re.split(r"(```.*?```)", text, flags=re.S)
    out = []
    for piece in pieces:
        if piece.startswith("```") and piece.endswith("```") and len(piece) >= 6:
            code = re.sub(r"^[a-zA-Z0-9_+-]*\n", "", piece[3:-3])
            out.append(f"<pre>{html.escape(code.strip(chr(10)))}</pre>")
        else:
            out.append(_inline(piece, names, t))
    return "".join(out)


def _inline(text: str, names: dict[str, str], t: Messages) -> str:
    spans = re.split(r"(`[^`]+`)", text)
    out = []
    for span in spans:
        if len(span) > 1 and span.startswith("`") and span.endswith("`"):
            out.append(f"<code>{html.escape(span[1:-1])}</code>")
            continue
        s = html.escape(span, quote=False)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", s)
        s = re.sub(
            r"&lt;@!?(\d+)&gt;",
            lambda m: f'<span class="mention">@{html.escape(names.get(m[1], "user"))}</span>',
            s,
        )
        s = re.sub(r"&lt;t:(\d+)(?::([tTdDfFR]))?&gt;", lambda m: _timestamp(int(m[1]), m[2], t), s)
        out.append(s.replace("\n", "<br>"))
    return "".join(out)


def _timestamp(seconds: int, style: str | None, t: Messages) -> str:
    """A <t:…> timestamp as readable UTC time (relative ones as 'in/… ago' from now)."""
    try:
        when = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, ValueError, OSError):
        return f"&lt;t:{seconds}&gt;"
    if style == "R":
        delta = seconds - datetime.now(timezone.utc).timestamp()
        amount = _duration(abs(delta), t)
        text = t("in {amount}", amount=amount) if delta > 0 else t("{amount} ago", amount=amount)
    else:
        text = when.strftime("%Y-%m-%d %H:%M UTC")
    return f'<span class="ts" title="{when.isoformat()}">{text}</span>'


def _duration(seconds: float, t: Messages) -> str:
    if seconds < 90:
        return t.plural("{n} second", "{n} seconds", int(seconds))
    if seconds < 5400:
        return t.plural("{n} minute", "{n} minutes", round(seconds / 60))
    return t.plural("{n} hour", "{n} hours", round(seconds / 3600))
