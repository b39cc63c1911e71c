"""Validation of interaction callbacks: which response types fit which interaction,
autocomplete choices (type 8) and modals (type 9).

Same conventions as :mod:`validate`: each ``check_*`` returns Discord's nested
``errors`` dict (empty when valid), wrapped into 400 / 50035 by the caller.
"""

from __future__ import annotations

import math
from typing import Any

from .validate import MAX_CHOICES, MAX_CUSTOM_ID, Errors, _check_len, _err, check_modal

RESPONSE_TYPES = (1, 4, 5, 6, 7, 8, 9, 10, 12)
PING, COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
STRING, INTEGER, NUMBER = 3, 4, 10
MAX_SAFE_INT = 2**53
MAX_TEXT_INPUT = 4000


def _type_error(message: str) -> Errors:
    return {"type": _err("INTERACTION_RESPONSE_TYPE_INVALID", message)}


def check_callback_type(kind: int, interaction_type: int) -> Errors:
    """Whether callback ``kind`` may answer an interaction of ``interaction_type``.

    Autocomplete (4) takes only AUTOCOMPLETE_RESULT (8), which nothing else takes;
    DEFERRED_UPDATE/UPDATE_MESSAGE (6/7) only answer components and modal submits;
    a modal (9) cannot answer a modal submit.
    """
    if kind not in RESPONSE_TYPES:
        allowed = ", ".join(map(str, RESPONSE_TYPES))
        return {"type": _err("BASE_TYPE_CHOICES", f"Value must be one of ({allowed}), not {kind}")}
    if interaction_type == AUTOCOMPLETE and kind != 8:
        return _type_error(f"An autocomplete interaction only accepts type 8, not {kind}")
    if kind == 8 and interaction_type != AUTOCOMPLETE:
        return _type_error("Type 8 is only for autocomplete interactions")
    if kind in (6, 7) and interaction_type not in (COMPONENT, MODAL_SUBMIT):
        return _type_error(f"Type {kind} is only for components")
    if kind == 9 and interaction_type in (PING, MODAL_SUBMIT):
        return _type_error("A modal cannot answer this interaction")
    return {}


def _choice_value_error(value: Any, option_type: int | None) -> Errors:
    if option_type == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_SAFE_INT:
            return _err("NUMBER_TYPE_COERCE", f"Value {value!r} is not int.")
        return {}
    if option_type == NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return {} if ok else _err("NUMBER_TYPE_COERCE", f"Value {value!r} is not a valid number.")
    errors: Errors = {}
    _check_len(errors, "value", value, 1, 100)
    return errors.get("value", {})


def check_choices(data: dict[str, Any], option_type: int | None) -> Errors:
    """An AUTOCOMPLETE_RESULT's ``data``: at most 25 choices, names of 1-100 characters,
    values of the focused option's type (strings of 1-100 characters)."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return {"choices": _err("BASE_TYPE_REQUIRED", "This field is required")}
    if len(choices) > MAX_CHOICES:
        return {"choices": _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")}
    errors: Errors = {}
    for i, choice in enumerate(choices):
        sub: Errors = {}
        if not isinstance(choice, dict):
            errors.setdefault("choices", {})[str(i)] = _err(
                "MODEL_TYPE_CONVERT", "Only dictionaries may be used"
            )
            continue
        _check_len(sub, "name", choice.get("name"), 1, 100)
        value_error = _choice_value_error(choice.get("value"), option_type)
        if value_error:
            sub["value"] = value_error
        if sub:
            errors.setdefault("choices", {})[str(i)] = sub
    return errors


def _check_text_input(item: dict[str, Any], *, needs_label: bool) -> Errors:
    errors: Errors = {}
    _check_len(errors, "custom_id", item.get("custom_id"), 1, MAX_CUSTOM_ID)
    if item.get("style") not in (1, 2):
        errors["style"] = _err("BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
    if needs_label:
        _check_len(errors, "label", item.get("label"), 1, 45)
    low, high = item.get("min_length"), item.get("max_length")
    if low is not None and not 0 <= int(low) <= MAX_TEXT_INPUT:
        errors["min_length"] = _err("NUMBER_TYPE_MAX", f"Must be between 0 and {MAX_TEXT_INPUT}.")
    if high is not None and not 1 <= int(high) <= MAX_TEXT_INPUT:
        errors["max_length"] = _err("NUMBER_TYPE_MAX", f"Must be between 1 and {MAX_TEXT_INPUT}.")
    if low is not None and high is not None and int(low) > int(high):
        errors["min_length"] = _err("BASE_TYPE_BAD_LENGTH", "min_length must not exceed max_length.")
    if len(item.get("value") or "") > MAX_TEXT_INPUT:
        errors["value"] = _err("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_TEXT_INPUT} or fewer in length.")
    if len(item.get("placeholder") or "") > 100:
        errors["placeholder"] = _err("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    return errors


def _check_modal_item(item: dict[str, Any]) -> Errors:
    kind = item.get("type")
    if kind == 1:  # legacy: an action row holding one text input
        children = item.get("components") or []
        if len(children) != 1:
            return {"components": _err("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 1 in length.")}
        if children[0].get("type") == 4:
            sub = _check_text_input(children[0], needs_label=True)
            return {"components": {"0": sub}} if sub else {}
        return {}
    if kind == 18:  # label wrapping one component
        errors: Errors = {}
        _check_len(errors, "label", item.get("label"), 1, 45)
        if len(item.get("description") or "") > 100:
            errors["description"] = _err("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        inner = item.get("component")
        if not isinstance(inner, dict):
            errors["component"] = _err("BASE_TYPE_REQUIRED", "This field is required")
        elif inner.get("type") == 4:
            sub = _check_text_input(inner, needs_label=False)
            if sub:
                errors["component"] = sub
        return errors
    if kind == 10:
        errors = {}
        _check_len(errors, "content", item.get("content"), 1, 4000)
        return errors
    return {"type": _err("BASE_TYPE_CHOICES", f"Component type {kind} is not allowed in a modal")}


def check_modal_layout(data: dict[str, Any]) -> Errors:
    """A MODAL response: title, custom_id, 1-5 components, each a row with one text
    input, a label (type 18) or a text display, text inputs within Discord's limits
    and custom_ids unique."""
    errors = check_modal(data)
    if "components" in errors:
        return errors
    seen: set[str] = set()
    for i, item in enumerate(data.get("components") or []):
        if not isinstance(item, dict):
            errors.setdefault("components", {})[str(i)] = _err("MODEL_TYPE_CONVERT", "Bad component")
            continue
        sub = _check_modal_item(item)
        inner = [item.get("component")] if item.get("type") == 18 else item.get("components") or []
        for child in inner:
            cid = child.get("custom_id") if isinstance(child, dict) else None
            if cid is not None and cid in seen:
                sub.setdefault("custom_id", _err("COMPONENT_CUSTOM_ID_DUPLICATED", "Duplicate custom_id"))
            if cid is not None:
                seen.add(cid)
        if sub:
            errors.setdefault("components", {})[str(i)] = sub
    return errors
