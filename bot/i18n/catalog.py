"""Which messages the code says and which a language's catalogs lack.

The code marks a message for translation by how it says it: ``t("...")`` and ``t.plural(...)``
(``t = messages(locale)``), ``N_("...")`` for a constant, and the member errors' constructors
(``QueueError("...", name=...)``). An f-string there cannot be translated (Babel skips it): it is
reported too, so it gets rewritten as a message id with values.

    python -m bot.i18n [ja]     # what the Japanese catalogs lack, file by file
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from babel.messages.pofile import read_po

from . import catalog_files

BOT_DIR = Path(__file__).resolve().parents[1]
#: The member-facing error classes: their first argument is a message id.
ERROR_CLASSES = (
    "MemberError", "ServiceError", "QueueError", "OptionsError", "StaminaError", "LinkError",
    "RegistryError", "NotOperator",
)  # fmt: skip
KEYWORDS = {"t": None, "plural": (1, 2), "N_": None, **dict.fromkeys(ERROR_CLASSES)}
SKIPPED = ("loopback", "cli", "i18n")  # the Discord stand-in; the operator's CLI speaks English


@dataclass(frozen=True)
class Said:
    """One message in the code: its file, line and id (None: an f-string, untranslatable)."""

    path: str
    line: int | None
    msgid: str | None
    plural: str | None = None


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _built_text(node: ast.expr) -> bool:
    """An f-string, a ``+`` of strings or a ``"...".format()``: English built in place, which no
    catalog can hold (a message id with values can)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return any(isinstance(n, (ast.Constant, ast.JoinedStr)) for n in (node.left, node.right))
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def messages_in(path: Path) -> list[Said]:
    """The messages ``path`` says through a keyword call; an f-string or other expression as the
    message is a :class:`Said` with ``msgid`` None (it cannot be looked up in a catalog)."""
    rel = path.relative_to(BOT_DIR.parent).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or _called_name(node) not in KEYWORDS or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            if _built_text(first):
                found.append(Said(rel, node.lineno, None))
            continue  # else a message marked where it was made (N_, a member error), passed on
        plural = None
        if KEYWORDS[_called_name(node)] and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            plural = node.args[1].value
        found.append(Said(rel, node.lineno, first.value, plural))
    return sorted(found, key=lambda s: s.line or 0)


def messages_in_code(root: Path = BOT_DIR) -> list[Said]:
    return [
        said
        for path in sorted(root.rglob("*.py"))
        if not set(path.relative_to(root).parts[:1]) & set(SKIPPED)
        for said in messages_in(path)
    ]


def translated_ids(language: str) -> set[str]:
    """Message ids (no context) with a non-empty translation in ``language``'s catalogs."""
    ids = set()
    for path in catalog_files(language):
        with path.open("rb") as f:
            for message in read_po(f):
                string = message.string
                if (
                    message.id
                    and message.context is None
                    and (any(string) if isinstance(string, tuple) else string)
                ):
                    ids.add(message.id[0] if isinstance(message.id, tuple) else message.id)
    return ids


def lacking(language: str, root: Path = BOT_DIR) -> list[Said]:
    """The messages of the code that ``language`` lacks (f-strings always)."""
    have = translated_ids(language)
    return [said for said in messages_in_code(root) if said.msgid is None or said.msgid not in have]
