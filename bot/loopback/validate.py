"""Payload validation for the loopback Discord stand-in.

The stand-in must refuse what the real Discord refuses, so that a test cannot pass
with a payload Discord would reject.  Each ``check_*`` function returns a nested
``errors`` dict in Discord's "Invalid Form Body" shape (empty when the payload is
valid); :func:`invalid_form_body` wraps it into the JSON body of a 400 response.

Limits follow Discord's documentation (application commands, messages, embeds,
components).  Only the limits that matter to a bot are checked; unknown keys pass.
"""

from __future__ import annotations

import re
from typing import Any

COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")  # Discord's [-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]
#: The locales Discord accepts as keys of ``name_localizations`` / ``description_localizations``.
LOCALES = frozenset(
    [
        "id",
        "da",
        "de",
        "en-GB",
        "en-US",
        "es-ES",
        "es-419",
        "fr",
        "hr",
        "it",
        "lt",
        "hu",
        "nl",
        "no",
        "pl",
        "pt-BR",
        "ro",
        "fi",
        "sv-SE",
        "vi",
        "tr",
        "cs",
        "el",
        "bg",
        "ru",
        "uk",
        "hi",
        "th",
        "zh-CN",
        "ja",
        "zh-TW",
        "ko",
    ]
)
MAX_COMMANDS = 100
MAX_OPTIONS = 25
MAX_CHOICES = 25
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR = 256
MAX_ROWS = 5
MAX_ROW_ITEMS = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024

Errors = dict[str, Any]


def _err(code: str, message: str) -> Errors:
    """One leaf error in Discord's shape: ``{"_errors": [{"code", "message"}]}``."""
    return {"_errors": [{"code": code, "message": message}]}


def invalid_form_body(errors: Errors) -> dict[str, Any]:
    """The JSON body Discord returns with HTTP 400 for an invalid payload."""
    return {"code": 50035, "message": "Invalid Form Body", "errors": errors}


def too_large() -> dict[str, Any]:
    """The JSON body Discord returns with HTTP 413 for an oversized upload."""
    return {"code": 40005, "message": "Request entity too large"}


def _check_len(errors: Errors, key: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, str):
        errors[key] = _err("BASE_TYPE_REQUIRED", "This field is required")
    elif not low <= len(value) <= high:
        errors[key] = _err("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _check_name(errors: Errors, key: str, name: Any) -> None:
    _check_len(errors, key, name, 1, 32)
    if key in errors:
        return
    if not COMMAND_NAME_RE.match(name) or name.lower() != name:
        errors[key] = _err("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")


def _check_localizations(errors: Errors, key: str, values: Any, check) -> None:
    """``name_localizations``/``description_localizations``: known locales, each value valid."""
    if values is None:
        return
    if not isinstance(values, dict):
        errors[key] = _err("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    for locale, value in values.items():
        sub: Errors = {}
        if locale not in LOCALES:
            sub[locale] = _err("LOCALE_INVALID", f"{locale!r} is not a valid locale")
        else:
            check(sub, locale, value)
        if sub:
            errors.setdefault(key, {}).update(sub)


def _check_description(errors: Errors, key: str, value: Any) -> None:
    _check_len(errors, key, value, 1, 100)


def _check_named(errors: Errors, item: dict[str, Any], *, menu: bool = False) -> None:
    """The name and description of a command or option, and their localizations."""
    if menu:  # user and message context menus: any case, spaces allowed, no description
        _check_len(errors, "name", item.get("name"), 1, 32)
        _check_localizations(errors, "name_localizations", item.get("name_localizations"),
                             lambda e, k, v: _check_len(e, k, v, 1, 32))  # fmt: skip
        return
    _check_name(errors, "name", item.get("name"))
    _check_len(errors, "description", item.get("description"), 1, 100)
    _check_localizations(errors, "name_localizations", item.get("name_localizations"), _check_name)
    _check_localizations(
        errors, "description_localizations", item.get("description_localizations"), _check_description
    )


def check_option(option: dict[str, Any]) -> Errors:
    """Validate one application command option (recursively for subcommands)."""
    errors: Errors = {}
    _check_named(errors, option)
    choices = option.get("choices") or []
    if len(choices) > MAX_CHOICES:
        errors["choices"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
    else:
        for i, choice in enumerate(choices):
            sub: Errors = {}
            _check_len(sub, "name", choice.get("name"), 1, 100)
            _check_localizations(sub, "name_localizations", choice.get("name_localizations"),
                                 lambda e, k, v: _check_len(e, k, v, 1, 100))  # fmt: skip
            if isinstance(choice.get("value"), str):
                _check_len(sub, "value", choice.get("value"), 1, 100)
            if sub:
                errors.setdefault("choices", {})[str(i)] = sub
    sub_options = option.get("options") or []
    _check_options(errors, sub_options)
    return errors


def _check_options(errors: Errors, options: list[dict[str, Any]]) -> None:
    if len(options) > MAX_OPTIONS:
        errors["options"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_OPTIONS} or fewer in length.")
        return
    seen: set[tuple[str, str]] = set()
    for i, option in enumerate(options):
        sub = check_option(option)
        names = {("", str(option.get("name")))}
        names |= {(loc, str(n)) for loc, n in (option.get("name_localizations") or {}).items()}
        if names & seen:
            sub.setdefault("name", _err("APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                        "Option names must be unique"))  # fmt: skip
        seen |= names
        if sub:
            errors.setdefault("options", {})[str(i)] = sub


def check_command(command: dict[str, Any]) -> Errors:
    """Validate one application command payload (chat input, user or message)."""
    errors: Errors = {}
    _check_named(errors, command, menu=command.get("type", 1) != 1)
    _check_options(errors, command.get("options") or [])
    return errors


def check_commands(commands: Any) -> Errors:
    """Validate a bulk overwrite: a list of at most 100 commands, names unique."""
    if not isinstance(commands, list):
        return _err("BASE_TYPE_REQUIRED", "Must be an array")
    if len(commands) > MAX_COMMANDS:
        return _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_COMMANDS} or fewer in length.")
    errors: Errors = {}
    seen: set[tuple[int, str]] = set()
    for i, command in enumerate(commands):
        sub = check_command(command)
        key = (command.get("type", 1), str(command.get("name")))
        if key in seen:
            sub.setdefault("name", _err("APPLICATION_COMMANDS_DUPLICATE_NAME", "Command name is duplicated"))
        seen.add(key)
        if sub:
            errors[str(i)] = sub
    return errors


def _embed_text_length(embed: dict[str, Any]) -> int:
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for field in embed.get("fields") or []:
        total += len(field.get("name") or "") + len(field.get("value") or "")
    return total


def check_embed(embed: dict[str, Any]) -> Errors:
    """Validate one embed's per-field limits."""
    errors: Errors = {}
    if len(embed.get("title") or "") > MAX_TITLE:
        errors["title"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_TITLE} or fewer in length.")
    if len(embed.get("description") or "") > MAX_DESCRIPTION:
        errors["description"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_DESCRIPTION} or fewer in length.")
    if len((embed.get("footer") or {}).get("text") or "") > MAX_FOOTER:
        errors["footer"] = {"text": _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FOOTER} or fewer in length.")}
    if len((embed.get("author") or {}).get("name") or "") > MAX_AUTHOR:
        errors["author"] = {"name": _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_AUTHOR} or fewer in length.")}
    fields = embed.get("fields") or []
    if len(fields) > MAX_FIELDS:
        errors["fields"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FIELDS} or fewer in length.")
    else:
        for i, field in enumerate(fields):
            sub: Errors = {}
            _check_len(sub, "name", field.get("name"), 1, MAX_FIELD_NAME)
            _check_len(sub, "value", field.get("value"), 1, MAX_FIELD_VALUE)
            if sub:
                errors.setdefault("fields", {})[str(i)] = sub
    return errors


def check_components(rows: list[dict[str, Any]]) -> Errors:
    """Validate classic (non components-v2) action rows: ≤5 rows of ≤5 buttons."""
    if len(rows) > MAX_ROWS:
        return _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ROWS} or fewer in length.")
    errors: Errors = {}
    for i, row in enumerate(rows):
        if row.get("type") != 1:
            continue  # components v2 top-level items: not checked here
        items = row.get("components") or []
        sub: Errors = {}
        if not items:
            sub["components"] = _err("BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
        elif len(items) > MAX_ROW_ITEMS:
            sub["components"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ROW_ITEMS} or fewer in length.")
        else:
            for j, item in enumerate(items):
                item_errors: Errors = {}
                custom_id = item.get("custom_id")
                if custom_id is not None:
                    _check_len(item_errors, "custom_id", custom_id, 1, MAX_CUSTOM_ID)
                if item.get("type") == 2:
                    style = item.get("style")
                    if style == 5 and not item.get("url"):
                        item_errors["url"] = _err("BASE_TYPE_REQUIRED", "This field is required")
                    if style not in (5, 6) and custom_id is None:
                        item_errors["custom_id"] = _err("BASE_TYPE_REQUIRED", "This field is required")
                    if len(item.get("label") or "") > MAX_LABEL:
                        item_errors["label"] = _err(
                            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_LABEL} or fewer in length."
                        )
                if item.get("type") in (3, 5, 6, 7, 8) and len(items) > 1:
                    item_errors["type"] = _err(
                        "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "A select must be alone in its row"
                    )
                if item_errors:
                    sub.setdefault("components", {})[str(j)] = item_errors
        if sub:
            errors[str(i)] = sub
    return errors


def is_empty_message(payload: dict[str, Any]) -> bool:
    """Whether a create payload has nothing to show (Discord answers 50006).

    A message needs content, an embed, a component, a sticker, a poll or an
    attachment; uploaded files count as attachments.
    """
    keys = ("content", "embeds", "components", "sticker_ids", "poll", "attachments")
    return not any(payload.get(k) for k in keys)


def check_message(payload: dict[str, Any]) -> Errors:
    """Validate a message create/edit payload (content, embeds, components)."""
    errors: Errors = {}
    content = payload.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        errors["content"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = payload.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
    else:
        for i, embed in enumerate(embeds):
            sub = check_embed(embed)
            if sub:
                errors.setdefault("embeds", {})[str(i)] = sub
        if sum(_embed_text_length(e) for e in embeds) > MAX_EMBED_TOTAL:
            errors.setdefault(
                "embeds", _err("BASE_TYPE_MAX_LENGTH", "Embed size exceeds maximum size of 6000")
            )
    components = payload.get("components") or []
    flags = int(payload.get("flags") or 0)
    if components and not flags & (1 << 15):
        sub = check_components(components)
        if sub:
            errors["components"] = sub
    return errors


def check_modal(data: dict[str, Any]) -> Errors:
    """Validate a MODAL interaction response: title ≤45, custom_id ≤100, 1-5 components."""
    errors: Errors = {}
    _check_len(errors, "title", data.get("title"), 1, 45)
    _check_len(errors, "custom_id", data.get("custom_id"), 1, MAX_CUSTOM_ID)
    if not 1 <= len(data.get("components") or []) <= 5:
        errors["components"] = _err("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    return errors


def bad_response_type(kind: int, *, component_only: bool = False) -> Errors:
    """The error of an interaction callback ``type`` that is unknown or not allowed here."""
    if component_only:
        return {"type": _err("INTERACTION_RESPONSE_TYPE_INVALID", f"Type {kind} is only for components")}
    return {
        "type": _err("BASE_TYPE_CHOICES", f"Value must be one of (1, 4, 5, 6, 7, 8, 9, 10, 12), not {kind}")
    }
