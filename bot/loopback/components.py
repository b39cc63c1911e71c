"""What a member can do with components: click buttons, pick in selects, fill in modals.

Discord's client only lets a member use what a message or modal shows, within its
limits: an enabled button, a select's own options in the allowed count, a modal's
text inputs within their lengths with the required ones filled.  The helpers here
build the interaction ``data`` Discord would send, or raise ValueError (LookupError
for a component that is not there) when the client would not let it happen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from .state import JSON

BUTTON, STRING_SELECT, TEXT_INPUT, TEXT_DISPLAY, LABEL = 2, 3, 4, 10, 18
SELECT_TYPES = (3, 5, 6, 7, 8)
MAX_TEXT_INPUT = 4000


def walk(components: list[JSON]) -> Iterator[JSON]:
    """Every component of a tree: rows, containers, sections' accessories, labels' component."""
    for component in components:
        yield component
        children = list(component.get("components") or [])
        for key in ("accessory", "component"):
            if component.get(key):
                children.append(component[key])
        yield from walk(children)


def find_component(components: list[JSON], custom_id: str) -> JSON | None:
    """The component with ``custom_id`` in a tree, or None."""
    return next((c for c in walk(components) if c.get("custom_id") == custom_id), None)


def custom_ids(components: list[JSON]) -> list[str]:
    """Every custom_id in a tree."""
    return [str(c["custom_id"]) for c in walk(components) if c.get("custom_id") is not None]


def check_select_values(component: JSON, values: Any, *, in_modal: bool = False) -> list[str]:
    """The values a member picks in a select, checked like Discord's client does.

    A string select's values must be among its options, without repeats, and their
    number within ``min_values``..``max_values`` (both default to 1; an optional
    select in a modal may be left empty).
    """
    name = component.get("custom_id")
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"select {name!r} takes a list of string values, not {values!r}")
    picked = list(values)
    declared_low = component.get("min_values")
    low = 1 if declared_low is None else int(declared_low)
    high = int(component.get("max_values") or 1)
    if in_modal and component.get("required") is False:
        low = 0
    if not low <= len(picked) <= high:
        raise ValueError(f"select {name!r} takes {low} to {high} values, not {len(picked)}")
    if len(set(picked)) != len(picked):
        raise ValueError(f"select {name!r}: a value was picked twice: {picked}")
    if int(component.get("type", 0)) == STRING_SELECT:
        allowed = [str(o.get("value")) for o in component.get("options") or []]
        wrong = [v for v in picked if v not in allowed]
        if wrong:
            raise ValueError(f"select {name!r} has no option(s) {wrong}; options: {allowed}")
    return picked


def component_data(component: JSON, component_type: int | None, values: Any) -> JSON:
    """The ``data`` of a component interaction (type 3) on ``component``."""
    kind = int(component.get("type", 0))
    custom_id = component.get("custom_id")
    if component_type is not None and component_type != kind:
        raise ValueError(f"component {custom_id!r} has type {kind}, not {component_type}")
    if component.get("disabled"):
        raise ValueError(f"component {custom_id!r} is disabled")
    if kind == BUTTON:
        if values is not None:
            raise ValueError(f"button {custom_id!r} takes no values")
        if component.get("style") in (5, 6):
            raise ValueError(f"link and premium buttons ({custom_id!r}) send no interaction")
        return {"custom_id": custom_id, "component_type": kind}
    if kind in SELECT_TYPES:
        picked = check_select_values(component, values)
        return {"custom_id": custom_id, "component_type": kind, "values": picked}
    raise ValueError(f"component {custom_id!r} of type {kind} cannot be used in a message")


def _submitted_text(component: JSON, values: dict[str, Any], component_id: int) -> JSON:
    custom_id = str(component.get("custom_id"))
    value = values.get(custom_id, component.get("value") or "")
    if not isinstance(value, str):
        raise ValueError(f"text input {custom_id!r} takes a string, not {value!r}")
    required = component.get("required", True) is not False
    low = int(component.get("min_length") or 0)
    high = int(component.get("max_length") or MAX_TEXT_INPUT)
    if required and not value:
        raise ValueError(f"text input {custom_id!r} is required")
    if value and not max(low, 1) <= len(value) <= high:
        raise ValueError(f"text input {custom_id!r}: length {len(value)} is outside [{low}, {high}]")
    return {"type": TEXT_INPUT, "id": component_id, "custom_id": custom_id, "value": value}


def _submitted_select(component: JSON, values: dict[str, Any], component_id: int) -> JSON:
    custom_id = str(component.get("custom_id"))
    defaults = [str(o["value"]) for o in component.get("options") or [] if o.get("default")]
    picked = check_select_values(component, values.get(custom_id, defaults), in_modal=True)
    return {"type": int(component["type"]), "id": component_id, "custom_id": custom_id, "values": picked}


def _submitted(component: JSON, values: dict[str, Any], ids: Iterator[int]) -> JSON:
    """The submit payload of one modal component (recursively for rows and labels)."""
    kind = int(component.get("type", 0))
    component_id = int(component.get("id") or next(ids))
    if kind == 1:
        children = [_submitted(c, values, ids) for c in component.get("components") or []]
        return {"type": 1, "id": component_id, "components": children}
    if kind == LABEL:
        return {
            "type": LABEL,
            "id": component_id,
            "component": _submitted(component["component"], values, ids),
        }
    if kind == TEXT_INPUT:
        return _submitted_text(component, values, component_id)
    if kind in SELECT_TYPES:
        return _submitted_select(component, values, component_id)
    return {"type": kind, "id": component_id}  # text displays and the like carry no value


def modal_submit_components(layout: list[JSON], values: dict[str, Any]) -> list[JSON]:
    """``data.components`` of a MODAL_SUBMIT for the modal ``layout`` filled in with ``values``.

    ``values`` maps a text input's custom_id to its text (a select's to a list of
    values); inputs left out keep their prefilled ``value`` (or are empty).
    Components get Discord's sequential ``id`` when the bot gave them none.
    """
    known = set(custom_ids(layout))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"the modal has no input(s) {unknown}; it has {sorted(known)}")
    ids = itertools.count(1)
    return [_submitted(c, values, ids) for c in layout]
