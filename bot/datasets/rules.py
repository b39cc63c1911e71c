"""What a dataset's settings may be: one check per setting, shared by creating a dataset and
changing it later. Each failed check raises :class:`ServiceError` with a message for the member."""

from __future__ import annotations

import unicodedata

from trainer.contract.families import family_info

from ..errors import MemberError
from ..settings import Settings
from .images import CROP_MODES, parse_size

NAME_LENGTH = 40
_NAME_EXTRA = frozenset(" _.-\u200c\u200d")  # and the zero-width (non-)joiners some scripts write
MAX_TRIGGER_CHARS = 64


class ServiceError(MemberError):
    """A request that cannot be done; the message is for the member."""

    @classmethod
    def of(cls, error: BaseException) -> ServiceError:
        """``error`` as a ServiceError: its message id and values when it has them (a member error,
        a :class:`~.phrases.Phrase`), else its text."""
        for source in (error, *error.args[:1]):
            msgid, values = getattr(source, "msgid", None), getattr(source, "values", None)
            if isinstance(msgid, str) and isinstance(values, dict):
                return cls(msgid, **values)
        return cls(str(error))


def dataset_name(text: str) -> str:
    """A typed name as stored: stripped and in Unicode NFC, so "été" typed either way is one name."""
    return unicodedata.normalize("NFC", text.strip())


def valid_name(name: str) -> bool:
    """Letters and digits of any script (with their combining marks and joiners), spaces, '_', '-'
    and '.', starting with a letter or digit. Names never reach the disk: folders are named by ids."""
    if not 0 < len(name) <= NAME_LENGTH or unicodedata.category(name[0])[0] not in "LN":
        return False
    return all(c in _NAME_EXTRA or unicodedata.category(c)[0] in "LMN" for c in name)


def check_name(name: str) -> str:
    """The name as stored (:func:`dataset_name`), or a ServiceError saying what a name may be."""
    name = dataset_name(name)
    if not valid_name(name):
        raise ServiceError(
            "a dataset name is 1-40 letters (any script), digits, spaces, '_', '-' or '.', starting with a "
            "letter or digit"
        )
    return name


def check_trigger(trigger: str) -> str:
    if not trigger or "," in trigger or len(trigger) > MAX_TRIGGER_CHARS or not trigger.isprintable():
        raise ServiceError(
            "the trigger word must be one tag: not empty, no commas or line breaks, at most 64 characters"
        )
    return trigger


def check_crop_mode(crop_mode: str) -> str:
    if crop_mode not in CROP_MODES:
        raise ServiceError("crop mode must be one of {modes}", modes=", ".join(CROP_MODES))
    return crop_mode


def check_tagger(settings: Settings, tagger: str) -> str:
    choices = settings.tagger_choices()
    if tagger not in choices:  # members pick from the operator's list, never a path or repo of their own
        raise ServiceError(
            "unknown tagger '{tagger}': choose one of {choices}", tagger=tagger, choices=", ".join(choices)
        )
    return tagger


def check_threshold(value: float, *, character: bool = False) -> float:
    if 0 < value < 1:
        return value
    if character:
        raise ServiceError(
            "the character threshold must be between 0 and 1 (e.g. 0.35), not {value}", value=value
        )
    raise ServiceError("the threshold must be between 0 and 1 (e.g. 0.35), not {value}", value=value)


def crop_size(text: str | None, family: str) -> tuple[int, int]:
    """WIDTHxHEIGHT as typed, or the family's default side when none is given."""
    if text is None:
        side = family_info(family).default_side
        return side, side
    return parse_crop(text)


def parse_crop(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ServiceError.of(exc) from None
