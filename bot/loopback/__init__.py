"""A loopback Discord stand-in: the real discord.py client against a fake Discord on 127.0.0.1."""

from .files import Upload
from .harness import point_discord_at, running_client
from .server import LoopbackDiscord
from .state import ADMINISTRATOR, MANAGE_GUILD, Interaction, RecordedFile, RecordedMessage

__all__ = [
    "ADMINISTRATOR",
    "MANAGE_GUILD",
    "Interaction",
    "LoopbackDiscord",
    "RecordedFile",
    "RecordedMessage",
    "Upload",
    "point_discord_at",
    "running_client",
]
