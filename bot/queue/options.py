"""Training options a member may set: a catalog read from the contract, and ``key=value`` text.

The catalog is derived from :class:`trainer.contract.TrainJob` minus ``BOT_KEYS``, so it cannot
drift from what the trainer accepts. ``parse_option_lines`` reads what a member types in the
"advanced" view and reports every problem at once; ``format_options`` writes it back. No database.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from trainer.contract import JobError, TrainJob, parse_job

from ..errors import MemberError
from ..i18n import N_
from .service import BOT_KEYS, QueueError

_NONE_WORDS = frozenset({"none", "default", "auto", "unset"})
_TRUE = frozenset({"yes", "y", "true", "on", "1"})
_FALSE = frozenset({"no", "n", "false", "off", "0"})
_KEY = r"([A-Za-z_][\w-]*)\s*="
_FIRST_KEY = re.compile(r"\s*" + _KEY)
_NEXT_KEY = re.compile(r"[\s,;]+" + _KEY)  # a separator, then the next key=
_SEPARATORS = re.compile(r"[\s,;]*")
_JSON = json.JSONDecoder(strict=False)  # a quoted value may hold line breaks
_BOUNDS = (("ge", at.Ge, "low", False), ("gt", at.Gt, "low", True), ("le", at.Le, "high", False),
           ("lt", at.Lt, "high", True), ("min_length", at.MinLen, "min_items", None),
           ("max_length", at.MaxLen, "max_items", None))  # fmt: skip
_SCALARS = frozenset({"int", "float", "bool", "choice"})
_DUMMY_KEYS = {"dataset_dir": "dataset", "output_dir": "output", "base_model": "model"}
_GROUPS = (
    (N_("Steps"), ("repeats", "epochs", "batch_size", "save_", "mixed_precision", "resolution", "seed")),
    (N_("Learning rate and optimizer"), ("learning_rate", "unet_lr", "text_encoder_lr", "lr_", "optimizer")),
    (N_("Network"), ("network_", "unet_only", "text_encoder_only")),
    (
        N_("Captions"),
        ("shuffle_tags", "keep_tokens", "clip_skip", "caption", "weighted_captions", "max_token_length"),
    ),
    (
        N_("Loss and noise"),
        ("min_snr_gamma", "noise_offset", "multires_noise", "v_parameterization", "zero_terminal"),
    ),
    (N_("Blocks"), ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_")),
    (N_("Speed and memory"), ("gradient_checkpointing", "compile_unet", "quantize_base")),
    (N_("Previews"), ("preview",)),
)
OTHER = N_("Other")
_NOT_KEY_VALUE = N_("'{text}' is not key=value (e.g. epochs=12)")


class OptionsError(QueueError):
    """Options that cannot be used; ``problems`` holds one line a member can act on per problem (in
    English; ``parts`` the same as member errors, translated where they are said; the contract's
    own lines stay English)."""

    def __init__(self, problems: list[str | MemberError]):
        self.parts = list(problems)
        self.problems = [str(p) for p in self.parts]
        super().__init__("; ".join(self.problems))

    def translated(self, t) -> str:
        return "; ".join(p.translated(t) if isinstance(p, MemberError) else p for p in self.parts)


class _BadValue(ValueError):
    """A value that does not fit its option; ``problem`` says why to the member."""

    def __init__(self, problem: MemberError):
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class OptionInfo:
    """One member-settable option: its key, kind and limits, as the contract declares them."""

    name: str
    kind: str  # "int", "float", "bool", "choice", "text", "list", or "other" (left to the contract)
    default: Any = None
    description: str = ""
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    low: float | None = None
    low_open: bool = False  # gt rather than ge
    high: float | None = None
    high_open: bool = False  # lt rather than le
    min_items: int | None = None
    max_items: int | None = None
    item: OptionInfo | None = None  # the element of a list

    @property
    def group(self) -> str:
        return next((g for g, prefixes in _GROUPS if self.name.startswith(prefixes)), OTHER)


# The catalog ---------------------------------------------------------------------------------------


def _info(name: str, annotation: Any, metadata: list[Any], **extra: Any) -> OptionInfo:
    tp, nullable, meta = _unwrap(annotation, list(metadata))
    bounds: dict[str, Any] = {}
    for m in meta:
        for attr, cls, key, is_open in _BOUNDS:
            if isinstance(m, cls):
                bounds[key] = getattr(m, attr)
                if is_open is not None:
                    bounds[f"{key}_open"] = is_open
    kind, choices, item = "other", (), None
    if tp is bool:
        kind = "bool"
    elif tp in (int, float, str):
        kind = {int: "int", float: "float", str: "text"}[tp]
    elif get_origin(tp) is Literal:
        kind, choices = "choice", get_args(tp)
    elif get_origin(tp) in (list, tuple, set) and get_args(tp):
        kind, item = "list", _info(name, get_args(tp)[0], [])
    return OptionInfo(name, kind, nullable=nullable, choices=choices, item=item, **bounds, **extra)


def _unwrap(tp: Any, meta: list[Any]) -> tuple[Any, bool, list[Any]]:
    """Strip ``Annotated`` (collecting its constraints) and ``None`` from a union."""
    nullable = False
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp, *extra = get_args(tp)
            meta += [x for e in extra for x in (e.metadata if isinstance(e, FieldInfo) else [e])]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(tp))
            if len(args) != 1:
                return tp, nullable, meta
            tp = args[0]
        else:
            return tp, nullable, meta


def _build_catalog() -> dict[str, OptionInfo]:
    found = {}
    for name, field in TrainJob.model_fields.items():
        key = field.alias or name
        if key in BOT_KEYS:
            continue
        default = field.get_default(call_default_factory=True)
        default = None if default is PydanticUndefined else default
        found[key] = _info(key, field.annotation, field.metadata, default=default,
                           description=field.description or "")  # fmt: skip
    order = [g for g, _ in _GROUPS] + [OTHER]
    return dict(sorted(found.items(), key=lambda kv: order.index(kv[1].group)))


#: Every option a member may set, by key, grouped for display.
OPTIONS: Mapping[str, OptionInfo] = MappingProxyType(_build_catalog())


# Parsing -------------------------------------------------------------------------------------------


def parse_option_lines(text: str) -> dict[str, Any]:
    """``key=value`` pairs (commas, semicolons or lines between them) -> typed options.

    Every problem (syntax, unknown or bot keys, bad values, out-of-range values) is collected
    into one :class:`OptionsError`. Rules between options (e.g. Prodigy wants lr 1.0) are checked
    later, on the merged layers (:func:`validate_options`).
    """
    pairs, problems = _split_pairs(text)
    options: dict[str, Any] = {}
    for raw_key, raw, quoted in pairs:
        key = raw_key.lower().replace("-", "_")
        problem = _key_problem(key)
        if problem is None and key in options:
            problem = MemberError("{key} is given twice: keep one", key=key)
        if problem is None and not quoted and OPTIONS[key].kind in _SCALARS:
            raw, *extra = re.split(r"\s*[,;\n]\s*", raw, maxsplit=1)  # only text and lists hold commas
            problems += [MemberError(_NOT_KEY_VALUE, text=x[:40]) for x in extra if x]
        if problem is None:
            try:
                options[key] = _coerce(OPTIONS[key], raw, quoted)
                continue
            except _BadValue as exc:
                problem = MemberError("{key}: {problem}", key=key, problem=exc.problem)
        problems.append(problem)
    problems += option_problems(options, rules=False)
    if problems:
        raise OptionsError(problems)
    return options


def _split_pairs(text: str) -> tuple[list[tuple[str, str, bool]], list[MemberError]]:
    """(key, raw value, quoted) in order; a value runs until the next ``, key=``."""
    pairs: list[tuple[str, str, bool]] = []
    problems, pos = [], 0
    while (pos := _SEPARATORS.match(text, pos).end()) < len(text):  # type: ignore[union-attr]
        if found := _FIRST_KEY.match(text, pos):
            pos = found.end()
            start = pos + len(text[pos:]) - len(text[pos:].lstrip(" \t"))
            if text.startswith('"', start):
                with contextlib.suppress(json.JSONDecodeError):  # an unclosed quote is plain text
                    value, pos = _JSON.raw_decode(text, start)
                    pairs.append((found.group(1), value, True))
                    continue
        following = _NEXT_KEY.search(text, pos)
        end = following.start() if following else len(text)
        if found:
            pairs.append((found.group(1), text[pos:end].strip(), False))
        else:
            problems.append(MemberError(_NOT_KEY_VALUE, text=text[pos:end].strip()[:40]))
        pos = end
    return pairs, problems


def _key_problem(key: str) -> MemberError | None:
    if key in OPTIONS:
        return None
    if key in BOT_KEYS:
        return MemberError("{key} is set by the bot: leave it out", key=key)
    close = difflib.get_close_matches(key, list(OPTIONS), n=1)
    hint = _did_you_mean(close[0]) if close else MemberError(" (see /preset options)")
    return MemberError("unknown option '{key}'{hint}", key=key, hint=hint)


def _did_you_mean(close: str) -> MemberError:
    return MemberError(" (did you mean '{close}'?)", close=close)


def _coerce(info: OptionInfo, raw: str, quoted: bool = False) -> Any:
    text = raw if quoted else raw.strip()
    if not quoted and info.nullable and (not text or text.lower() in _NONE_WORDS):
        return None
    if info.kind in ("text", "other"):
        return text
    if info.kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise _BadValue(
            MemberError("'{text}' is not yes or no (use yes/no, true/false or on/off)", text=text)
        )
    if info.kind == "int":
        return _to_int(text)
    if info.kind == "float":
        return _to_float(text)
    if info.kind == "choice":
        return _to_choice(info, text)
    if info.kind == "list" and info.item is not None:
        body = text.strip("[]() ")
        split = r"\s*,\s*" if info.item.kind == "text" else r"[\s,;]+"
        return [_coerce(info.item, part) for part in re.split(split, body) if part]
    return text


def _norm(value: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(value).lower())


def _to_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _BadValue(MemberError("'{text}' is not a number (e.g. 0.0001 or 1e-4)", text=text))
    return value


def _to_int(text: str) -> int:
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        value = _to_float(text)  # 1e3 or 12.0
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise _BadValue(MemberError("'{text}' is not a whole number (e.g. 12)", text=text))
    return int(value)


def _to_choice(info: OptionInfo, text: str) -> Any:
    for choice in info.choices:
        if _norm(choice) == _norm(text):
            return choice
    names = [str(c) for c in info.choices]
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
    hint = _did_you_mean(close[0]) if close else ""
    raise _BadValue(
        MemberError("'{text}' is not one of {known}{hint}", text=text, known=", ".join(names), hint=hint)
    )


def validate_options(options: Mapping[str, Any], *, rules: bool = True) -> None:
    """Raise :class:`OptionsError` with every :func:`option_problems` line, if there is one."""
    if problems := option_problems(options, rules=rules):
        raise OptionsError(problems)


def option_problems(options: Mapping[str, Any], *, rules: bool = True) -> list[str | MemberError]:
    """Member options checked through the contract (with stand-in bot keys): one line per problem.

    ``rules=False`` checks each value alone and skips the rules between options, which only
    make sense once every layer is merged.
    """
    problems: list[str | MemberError] = [p for key in options if (p := _key_problem(key))]
    full = {**{k: v for k, v in options.items() if k in OPTIONS}, **_DUMMY_KEYS}
    try:
        TrainJob.model_validate(full)
    except ValidationError as exc:
        if rules or any(err["loc"] for err in exc.errors()):  # not only the rules between options
            try:
                parse_job(full, TrainJob)
            except JobError as described:
                problems += described.problems
    return problems


def merge_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win; a ``None`` value (or layer) means "not given" and hides nothing."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in (layer or {}).items() if v is not None})
    return merged


# Writing -------------------------------------------------------------------------------------------


def format_options(options: Mapping[str, Any]) -> str:
    """``key=value`` lines, sorted by key: what :func:`parse_option_lines` reads back."""
    return "\n".join(f"{key}={_format_value(value)}" for key, value in sorted(options.items()))


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, str):
        plain = value and value == value.strip() and value.lower() not in _NONE_WORDS
        if plain and not value.startswith('"') and not _NEXT_KEY.search(value):
            return value
        return json.dumps(value, ensure_ascii=False)
    return str(value)
