"""The training options explained: one line per option (its kind, range and default), by group, or
one option in detail, in a member's language (the contract's own note on an option stays English)."""

from __future__ import annotations

from ..i18n import N_, Messages, messages
from .options import OPTIONS, OptionInfo, OptionsError, _format_value, _key_problem

#: The kinds of value an option takes, as its help line says them.
_KIND_NAMES = {"int": N_("whole number"), "float": N_("number"), "bool": N_("yes/no"), "text": N_("text")}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _range(info: OptionInfo) -> str:
    if info.low is not None and info.high is not None and not (info.low_open or info.high_open):
        return f"{_num(info.low)}–{_num(info.high)}"
    low = "" if info.low is None else f"{_num(info.low)}{'<' if info.low_open else '≤'}"
    high = "" if info.high is None else f"{'<' if info.high_open else '≤'}{_num(info.high)}"
    return f"{low}x{high}" if low or high else ""


def _kind_text(info: OptionInfo, t: Messages) -> str:
    if info.kind == "choice":
        return "|".join(str(c) for c in info.choices)
    if info.kind == "list" and info.item is not None:
        item = _kind_text(info.item, t)
        if info.max_items:
            return t(
                "{low}-{high} × {item}, comma-separated",
                low=info.min_items or 0,
                high=info.max_items,
                item=item,
            )
        return t("any number of × {item}, comma-separated", item=item)
    return " ".join(x for x in (t(_KIND_NAMES.get(info.kind, N_("value"))), _range(info)) if x)


def _line(info: OptionInfo, t: Messages) -> str:
    default = t("auto") if info.default is None else _format_value(info.default)
    return f"`{info.name}` {_kind_text(info, t)} [{default}]"


def help_text(name: str | None = None, limit: int = 4096, t: Messages | None = None) -> str:
    """One option in detail (with the contract's note), or every option one line each, by group.

    Cut to ``limit`` characters (an embed description holds 4096)."""
    t = t or messages(None)
    if name:
        key = name.strip().lower().replace("-", "_")
        if problem := _key_problem(key):
            raise OptionsError([problem])
        info = OPTIONS[key]
        example = info.default if info.default is not None else (info.choices or ("...",))[0]
        lines = [
            _line(info, t),
            info.description,
            t("e.g. `{example}`", example=f"{key}={_format_value(example)}"),
        ]
        return "\n".join(x for x in lines if x)[:limit]
    out = ""
    for title, body in help_fields(max_len=limit, t=t):
        block = f"**{title}**\n{body}\n"
        if len(out) + len(block) > limit - 40:
            return out + t("…more: ask for one option by name")
        out += block
    return out.rstrip()


def help_fields(
    max_len: int = 1024, max_fields: int = 25, t: Messages | None = None
) -> list[tuple[str, str]]:
    """(group title, one line per option) for embed fields; long groups are split to fit ``max_len``."""
    t = t or messages(None)
    fields: list[tuple[str, str]] = []
    for group in dict.fromkeys(info.group for info in OPTIONS.values()):
        chunk, title = "", t(group)
        for line in (_line(i, t)[:max_len] for i in OPTIONS.values() if i.group == group):
            if chunk and len(chunk) + 1 + len(line) > max_len:
                fields.append((title, chunk))
                chunk = ""
            chunk = f"{chunk}\n{line}" if chunk else line
        fields += [(title, chunk)] if chunk else []
    return fields[:max_fields]
