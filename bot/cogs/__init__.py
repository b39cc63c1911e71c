"""The cogs: one per command group. Each turns interactions into service calls and back."""

from __future__ import annotations

from .datasets import DatasetCog
from .epochs import EpochsCog
from .generate import GenerateCog
from .help import HelpCog
from .library import LibraryCog
from .notify import NotifyCog
from .operator import OperatorCog
from .presets import PresetCog
from .queue import QueueCog
from .tags import TagsCog
from .train import TrainCog
from .upload import UploadCog

COGS = (
    DatasetCog,
    UploadCog,
    TagsCog,
    TrainCog,
    PresetCog,
    QueueCog,
    EpochsCog,
    GenerateCog,
    LibraryCog,
    NotifyCog,
    OperatorCog,
    HelpCog,
)
