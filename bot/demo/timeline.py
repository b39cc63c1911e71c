"""What the member saw, as plain data: the member's commands and clicks and the bot's messages, in order.

Each entry is a dict: ``{"kind": "action", ...}`` for something the member did, or
``{"kind": "message", ...}`` for a message of the bot (in its final state). Images travel as bytes,
so :mod:`bot.demo.transcript` can render them without the stand-in.
"""

from __future__ import annotations

from typing import Any

from ..loopback import Interaction, LoopbackDiscord
from .world import World

Entry = dict[str, Any]
ATTACHMENT_OPTION = 11


def build_entries(w: World) -> list[Entry]:
    """The channel's conversation as the member saw it, oldest first.

    A message the member clicked on appears as it was before each click, then (after the click)
    as the click left it; the last state is the message's final one (a progress message: done).
    """
    names = {m.user_id: m.name for m in w.guild.members.values()}
    names[w.server.bot_user_id] = w.server.bot_name
    replies: dict[int, str] = {}
    shots: dict[int, list[tuple[int, dict, list]]] = {}
    keyed: list[tuple[tuple[int, int], Entry]] = []
    for inter, label in w.actions:
        keyed.append(((inter.id, 0), action_entry(w.server, inter, label, names)))
        if inter.original is not None and inter.type == 2:
            replies[inter.original.id] = label
        if inter.id in w.before:
            message_id, data, files = w.before[inter.id]
            shots.setdefault(message_id, []).append((inter.id, data, files))
    for m in w.server.messages.get(w.channel.id, []):
        if m.author_id != w.server.bot_user_id or m.visible_to not in (None, w.member.user_id):
            continue
        states = [(d, f) for _, d, f in shots.get(m.id, [])] + [(m.data, m.files)]
        keys = [(m.id, 0)] + [(click, 1) for click, _, _ in shots.get(m.id, [])]
        shown = None
        for i, (key, (data, files)) in enumerate(zip(keys, states, strict=True)):
            look = _look(data, files)
            if look == shown or not any(look):
                continue
            shown = look
            entry = message_entry(data, files, names, replies.get(m.id) if i == 0 else None)
            entry["edited"] = i > 0 or (i == len(states) - 1 and m.edits > 0)
            keyed.append((key, entry))
    return [e for _, e in sorted(keyed, key=lambda x: x[0])]


def _look(data: dict, files: list) -> tuple:
    """What the member sees of a message (to skip states a click did not change, and empty ones)."""
    return (data.get("content") or "", repr(data.get("embeds") or []), repr(data.get("components") or []),
            tuple(f.filename for f in files))  # fmt: skip


def action_entry(server: LoopbackDiscord, inter: Interaction, label: str, names: dict[int, str]) -> Entry:
    """A slash command (with its options) or a click/select/form submit."""
    user = names.get(inter.user_id, "member")
    if inter.type != 2:
        return {"kind": "action", "user": user, "text": label}
    options = _options(inter.data.get("options") or [], inter.data.get("resolved") or {}, server)
    return {"kind": "action", "user": user, "command": label, "options": options}


def _options(options: list[dict], resolved: dict, server: LoopbackDiscord) -> list[Entry]:
    """Flattened options (subcommands walked); attachments carry their file name and bytes."""
    out: list[Entry] = []
    for opt in options:
        if "options" in opt and "value" not in opt:
            out += _options(opt["options"], resolved, server)
            continue
        if opt.get("type") == ATTACHMENT_OPTION:
            att = (resolved.get("attachments") or {}).get(str(opt["value"])) or {}
            data = server.ephemeral_files.get(int(opt["value"]), (0, None))[1]
            out.append({"name": opt["name"], "value": att.get("filename", "file"),
                        "image": data.data if data is not None else None})  # fmt: skip
        else:
            out.append({"name": opt["name"], "value": str(opt.get("value"))})
    return out


def message_entry(data: dict, files: list, names: dict[int, str], reply_to: str | None = None) -> Entry:
    """A bot message in one state (its payload ``data`` and its ``files``)."""
    return {
        "kind": "message",
        "author": names.get(int(data["author"]["id"]), "bot"),
        "bot": True,
        "content": data.get("content") or "",
        "embeds": data.get("embeds") or [],
        "components": data.get("components") or [],
        "attachments": [
            {"filename": f.filename, "data": f.data, "content_type": f.content_type} for f in files
        ],
        "ephemeral": bool(int(data.get("flags") or 0) & 64),
        "edited": False,
        "reply_to": reply_to,
        "names": {str(k): v for k, v in names.items()},
    }
