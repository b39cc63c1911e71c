"""A loopback Discord stand-in: the real discord.py client against a fake Discord on 127.0.0.1."""

from .harness import point_discord_at, running_client
from .server import LoopbackDiscord
from .state import Interaction, RecordedFile, RecordedMessage

__all__ = [
    "Interaction",
    "LoopbackDiscord",
    "RecordedFile",
    "RecordedMessage",
    "point_discord_at",
    "running_client",
]
