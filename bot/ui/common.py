"""What every cog needs: who is calling (roles, operator), answering, errors, autocomplete.

Discord objects stop here: the helpers turn an interaction into plain values (ids, role
names) for the services, and a service error into one short ephemeral message: every error
handler (the command tree's, views', forms', buttons') goes through :func:`report_error`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from trainer.contract.families import family_label

from ..errors import MEMBER_ERRORS, DatabaseBusy, MemberError
from ..i18n import N_, Messages, messages

if TYPE_CHECKING:
    from ..client import LoraBot
    from ..services import Services

log = logging.getLogger(__name__)
Autocomplete = Callable[[discord.Interaction, str], Awaitable[list[app_commands.Choice[str]]]]
MAX_CHOICES = 25
MAX_ERROR = 1800  # a message is at most 2000 characters
GENERIC_ERROR = N_(
    "Something went wrong on the bot's side; the operator can see it in the log. Try again later."
)


class NotOperator(app_commands.CheckFailure):
    """A member without the operator permission used an operator command."""


def services_of(interaction: discord.Interaction) -> Services:
    return interaction.client.services  # type: ignore[attr-defined]


def roles_of(interaction: discord.Interaction) -> list[str]:
    """The caller's role ids and names (stamina tiers name either)."""
    member = interaction.user
    roles = getattr(member, "roles", None) or []
    out = []
    for role in roles:
        if role.is_default():
            continue
        out += [str(role.id), role.name]
    return out


def is_operator(interaction: discord.Interaction) -> bool:
    """Whether the caller has the guild permission of operators (default Manage Server)."""
    permission = services_of(interaction).settings.operator_permission
    perms = interaction.permissions
    return bool(perms.administrator or getattr(perms, permission, False))


def require_operator(interaction: discord.Interaction) -> None:
    """Discord hides operator commands from members, but a server admin can re-enable them
    for anyone in the Integrations settings: check again here."""
    if not is_operator(interaction):
        permission = services_of(interaction).settings.operator_permission.replace("_", " ").title()
        raise NotOperator(
            messages(interaction.locale)(
                "only operators (members with the {permission} permission) can do that", permission=permission
            )
        )


POSTING = ("send_messages", "embed_links", "attach_files")


def require_posting(interaction: discord.Interaction) -> None:
    """Jobs report in the channel they were started from: refuse a channel the bot cannot post in."""
    perms = interaction.app_permissions
    needed = list(POSTING)
    if isinstance(interaction.channel, discord.Thread):  # threads have their own send permission
        needed[0] = "send_messages_in_threads"
    missing = [p.replace("_", " ").title() for p in needed if not getattr(perms, p, False)]
    if missing:
        raise MemberError(
            "I cannot post progress and pictures in this channel (missing permission: {missing}): "
            "run the command in a channel where I can, or ask an operator to give me that permission",
            missing=", ".join(missing),
        )


#: What a handler may catch and say as it is (a DatabaseBusy: nothing was written, try again).
EXPECTED = (*MEMBER_ERRORS, app_commands.CheckFailure)


def friendly_error(error: BaseException, t: Messages | None = None) -> str | None:
    """The member-facing line for an expected error in ``t``'s language (default English); None
    for a bug (logged, generic message)."""
    text = _friendly(error, t or messages(None))
    if text is not None and len(text) > MAX_ERROR:
        text = text[: MAX_ERROR - 1].rsplit(";", 1)[0] + "; …"
    return text


def _friendly(error: BaseException, t: Messages) -> str | None:
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, MemberError):
        return "❌ " + error.translated(t)
    if isinstance(error, DatabaseBusy):  # its two sentences are in the catalogs (db/ cannot say t())
        return "⏳ " + t(str(error))
    if isinstance(error, app_commands.CommandOnCooldown):
        return "⏳ " + t("Slow down: try that again in {seconds} s.", seconds=f"{error.retry_after:.1f}")
    if isinstance(error, NotOperator):
        return f"⛔ {error}"
    if isinstance(error, app_commands.CheckFailure):
        return "⛔ " + (str(error) or t("you cannot use this command here"))
    if isinstance(error, app_commands.TransformerError):
        return "❌ " + t(
            "'{value}' is not a valid {kind} here.", value=error.value, kind=error.type.name.lower()
        )
    return None


async def answer(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    ephemeral: bool = True,
    **kwargs: Any,
) -> discord.Message | None:
    """Send the (first or a later) answer to an interaction; returns the message sent."""
    content = clip(content)
    if interaction.extras.pop("thinking", False):  # fill the "thinking…" answer instead of adding one
        if "file" in kwargs:
            kwargs["attachments"] = [kwargs.pop("file")]
        if "files" in kwargs:
            kwargs["attachments"] = kwargs.pop("files")
        return await interaction.edit_original_response(content=content, **kwargs)
    if interaction.response.is_done():
        return await interaction.followup.send(content, ephemeral=ephemeral, wait=True, **kwargs)
    sent = await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
    resource = getattr(sent, "resource", None)
    return resource if isinstance(resource, discord.InteractionMessage) else None


def claim(interaction: discord.Interaction) -> None:
    """Mark an interaction as picked up by a live view or button (see LoraBot.on_interaction)."""
    interaction.extras["claimed"] = True


def clip(text: str | None, limit: int = 2000) -> str | None:
    """``text`` cut to Discord's limit (a message holds 2000 characters)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def listed(tags: list[str], most: int = 20, t: Messages | None = None) -> str:
    """`a`, `b`, … and N more: a list that always fits in a message."""
    shown = ", ".join(f"`{tag[:60]}`" for tag in tags[:most])
    if len(tags) <= most:
        return shown
    return shown + (t or messages(None))(" and {count} more", count=len(tags) - most)


async def defer_thinking(interaction: discord.Interaction) -> None:
    """Acknowledge now with a private "thinking…"; the next :func:`answer` replaces it."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    interaction.extras["thinking"] = True


async def report_error(interaction: discord.Interaction, error: BaseException, where: str) -> None:
    """The one error handler: an expected error becomes its message, a bug is logged (``where``
    says what failed) and gets a generic line; sent privately whether or not the interaction
    was answered or deferred already."""
    t = messages(interaction.locale)
    message = friendly_error(error, t)
    if message is None:
        log.error("%s failed", where, exc_info=error)
        message = t(GENERIC_ERROR)
    await send_error(interaction, message)


async def send_error(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral error, whether or not the interaction was answered; never raises."""
    try:
        await answer(interaction, message)
    except discord.HTTPException:
        log.warning("could not tell the member about an error: %s", message)


async def guarded(interaction: discord.Interaction, call: Awaitable[Any]) -> None:
    """Run a component's action: an expected error becomes its message, a bug a generic one."""
    try:
        await call
    except Exception as exc:
        await report_error(interaction, exc, "a button's action")


async def run_service(interaction: discord.Interaction, call: Awaitable[Any]) -> Any:
    """Await a service call inside a view callback (no tree error handler there): an expected
    error becomes an ephemeral message and None is returned."""
    try:
        return await call
    except EXPECTED as exc:
        t = messages(interaction.locale)
        await send_error(interaction, friendly_error(exc, t) or t(GENERIC_ERROR))
        return None


def quiet(autocomplete: Autocomplete) -> Autocomplete:
    """An autocomplete that offers nothing instead of failing on an expected error (an autocomplete
    cannot show a message, and discord.py would log it as a bug)."""

    @functools.wraps(autocomplete)
    async def wrapper(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        try:
            return await autocomplete(interaction, current)
        except EXPECTED:
            return []

    return wrapper


@quiet
async def preset_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    rows = await services_of(interaction).presets.list(interaction.user.id)
    return choices([(p.name, p.name) for p in rows], current)


def choices(items: list[tuple[str, str]], current: str) -> list[app_commands.Choice[str]]:
    """(label, value) pairs matching what the member typed, at most 25, as Discord allows."""
    needle = current.casefold().strip()
    hits = [(label, value) for label, value in items if needle in label.casefold()]
    hits.sort(key=lambda lv: (not lv[0].casefold().startswith(needle), lv[0].casefold()))
    return [app_commands.Choice(name=label[:100], value=value[:100]) for label, value in hits[:MAX_CHOICES]]


@quiet
async def dataset_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    rows = await services_of(interaction).datasets.list(interaction.user.id)
    t = messages(interaction.locale)
    return choices([(t.plural("{name} ({n} image)", "{name} ({n} images)", n, name=d.name), d.name)
                    for d, n in rows], current)  # fmt: skip


@quiet
async def base_model_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    registry = services_of(interaction).registry
    items = []
    for key in registry.keys():
        entry = registry.get(key)
        family = family_label(entry.family)
        items.append((f"{key} - {entry.label or family}", key))
    return choices(items, current)


@quiet
async def job_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return await _jobs(interaction, current, kind="train", everyone=False)


@quiet
async def any_job_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Every member's active jobs, for operators."""
    if not is_operator(interaction):
        return []
    return await _jobs(interaction, current, kind=None, everyone=True)


async def _jobs(
    interaction: discord.Interaction, current: str, *, kind: str | None, everyone: bool
) -> list[app_commands.Choice[str]]:
    rows = await services_of(interaction).queue.list_jobs(
        None if everyone else interaction.user.id, active=everyone, kind=kind, limit=100
    )
    t = messages(interaction.locale)
    typed = current.strip().lstrip("#").casefold()
    hits = [j for j in rows if typed in f"{j.id} {j.title}".casefold()]  # newest first, as stored
    return [
        app_commands.Choice(name=f"#{j.id} {j.title} ({t(j.state)})"[:100], value=str(j.id))
        for j in hits[:MAX_CHOICES]
    ]


@quiet
async def tag_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Tags of the dataset named in the same command (the last comma-separated part is matched)."""
    name = getattr(interaction.namespace, "dataset", None)
    if not name:
        return []
    try:
        table = await services_of(interaction).datasets.tag_table(interaction.user.id, name)
    except MemberError:
        return []
    head, _, last = current.rpartition(",")
    typed = {t.strip() for t in head.split(",") if t.strip()}
    prefix = ", ".join(sorted(typed, key=head.find)) + ", " if typed else ""
    needle = last.strip().casefold()
    out = []
    for t in table:
        value = f"{prefix}{t.tag}"
        if t.tag not in typed and needle in t.tag.casefold() and len(value) <= 100:
            out.append(app_commands.Choice(name=f"{value} ({t.count})"[:100], value=value))
    return out[:MAX_CHOICES]


def bot_of(interaction: discord.Interaction) -> LoraBot:
    return interaction.client  # type: ignore[return-value]
