"""Members using the bot: the ``send_*`` methods of :class:`~bot.loopback.server.LoopbackDiscord`.

Each builds the INTERACTION_CREATE Discord would send, refusing (in the test,
before anything is sent) what Discord's client would not let a member do:
LookupError for a command, subcommand or component that is not there;
PermissionError for a command hidden by ``default_member_permissions``;
ValueError for option values, select values or modal inputs the client refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .components import component_data, find_component, modal_submit_components
from .direct import DMChannel, dm_context, interaction_place
from .options import OptionBuilder, can_use, nest, split_command_name, walk_subcommands
from .state import (
    JSON,
    Channel,
    Guild,
    Interaction,
    Member,
    RecordedMessage,
    new_token,
    snowflake,
    user_payload,
)

if TYPE_CHECKING:
    from .server import LoopbackDiscord

CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3


class InteractionSender:
    """Mixin of :class:`LoopbackDiscord` that dispatches interactions as a member."""

    # -- slash commands -------------------------------------------------------

    async def send_interaction(
        self: LoopbackDiscord,
        guild: Guild,
        member: Member,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        channel: Channel | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
        bypass_permissions: bool = False,
    ) -> Interaction:
        """Dispatch a slash command INTERACTION_CREATE (type 2) as ``member``.

        ``command`` may name a subcommand: ``"dataset new"``, ``"operator stamina
        grant"``.  Option types come from the registered command; an attachment
        option takes an ``Upload`` or a ``(filename, bytes)`` tuple, a user option a
        ``Member``, a role option a ``Role``, a channel option a ``Channel``.
        ``bypass_permissions`` simulates an admin's per-command override in the
        guild's Integrations settings.  Returns the :class:`Interaction` record;
        await its ``wait_response()`` for the bot's answer.
        """
        channel = channel or _first_channel(guild)
        data, builder = self._chat_input_data(
            guild, member, command, options or {}, channel, focused=None, bypass=bypass_permissions
        )
        self._keep_files(channel, builder)
        return await self._dispatch_interaction(
            2, data, guild, member, channel, attachment_size_limit=attachment_size_limit, locale=locale
        )

    async def send_autocomplete(
        self: LoopbackDiscord,
        guild: Guild,
        member: Member,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        focused: str,
        channel: Channel | None = None,
        locale: str = "en-US",
        bypass_permissions: bool = False,
    ) -> Interaction:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) while ``member`` types.

        ``options[focused]`` is the partial text typed so far (sent as a string with
        ``"focused": true``; "" when absent); the option must declare autocomplete.
        The bot's choices are in ``(await handle.wait_response())`` and ``handle.choices``.
        """
        channel = channel or _first_channel(guild)
        data, builder = self._chat_input_data(
            guild, member, command, options or {}, channel, focused=focused, bypass=bypass_permissions
        )
        self._keep_files(channel, builder)
        return await self._dispatch_interaction(4, data, guild, member, channel, locale=locale)

    def _chat_input_data(
        self: LoopbackDiscord,
        guild: Guild,
        member: Member,
        command: str,
        options: dict[str, Any],
        channel: Channel,
        *,
        focused: str | None,
        bypass: bool,
    ) -> tuple[JSON, OptionBuilder]:
        top, path = split_command_name(command)
        registered = self._usable_command(guild, member, top, CHAT_INPUT, bypass)
        declared, chain = walk_subcommands(registered, path)
        builder = OptionBuilder(
            guild=guild,
            member=member,
            channel=channel,
            base_url=self.http_url,
            upload_limit=self.member_upload_limit,
        )
        leaf = builder.build(declared, options, focused=focused)
        data: JSON = {"id": registered["id"], "name": top, "type": CHAT_INPUT, "options": nest(chain, leaf)}
        if builder.resolved:
            data["resolved"] = builder.resolved
        if registered.get("guild_id"):
            data["guild_id"] = registered["guild_id"]
        return data, builder

    def _usable_command(
        self: LoopbackDiscord, guild: Guild, member: Member, name: str, kind: int, bypass: bool
    ) -> JSON:
        """The registered command ``member`` can see (LookupError / PermissionError otherwise)."""
        if member.user_id not in guild.members:
            raise LookupError(f"{member.name} is not a member of guild {guild.id}")
        registered = self.command(name, guild, kind=kind)
        if registered is None:
            raise LookupError(
                f"command {name!r} (type {kind}) is not registered for guild {guild.id} nor globally"
            )
        if not bypass and not can_use(registered, guild.permissions_of(member)):
            required = registered.get("default_member_permissions")
            raise PermissionError(
                f"{member.name} lacks permissions {required} that {name!r} requires (Discord hides it)"
            )
        return registered

    def _keep_files(self: LoopbackDiscord, channel: Channel, builder: OptionBuilder) -> None:
        for f in builder.files:
            self.ephemeral_files[f.id] = (channel.id, f)

    # -- context menus --------------------------------------------------------

    async def send_message_command(
        self: LoopbackDiscord,
        guild: Guild,
        member: Member,
        name: str,
        message: RecordedMessage,
        *,
        locale: str = "en-US",
        bypass_permissions: bool = False,
    ) -> Interaction:
        """Dispatch a message context-menu command (type 2, data.type 3) on ``message``."""
        registered = self._usable_command(guild, member, name, MESSAGE_COMMAND, bypass_permissions)
        channel = guild.channels.get(message.channel_id)
        if channel is None:
            raise LookupError(f"message {message.id} is not in guild {guild.id}")
        _require_shown(message, member)
        data = _context_data(registered, message.id)
        data["resolved"] = {"messages": {str(message.id): message.data}}
        return await self._dispatch_interaction(2, data, guild, member, channel, locale=locale)

    async def send_user_command(
        self: LoopbackDiscord,
        guild: Guild,
        member: Member,
        name: str,
        target: Member,
        *,
        channel: Channel | None = None,
        locale: str = "en-US",
        bypass_permissions: bool = False,
    ) -> Interaction:
        """Dispatch a user context-menu command (type 2, data.type 2) on ``target``."""
        registered = self._usable_command(guild, member, name, USER_COMMAND, bypass_permissions)
        if target.user_id not in guild.members:
            raise LookupError(f"{target.name} is not a member of guild {guild.id}")
        member_data = target.payload(permissions=guild.permissions_of(target))
        for key in ("user", "deaf", "mute"):
            member_data.pop(key, None)
        data = _context_data(registered, target.user_id)
        data["resolved"] = {
            "users": {str(target.user_id): user_payload(target.user_id, target.name, bot=target.bot)},
            "members": {str(target.user_id): member_data},
        }
        channel = channel or _first_channel(guild)
        return await self._dispatch_interaction(2, data, guild, member, channel, locale=locale)

    # -- components and modals ------------------------------------------------

    async def send_component(
        self: LoopbackDiscord,
        message: RecordedMessage,
        member: Member,
        custom_id: str,
        *,
        component_type: int | None = None,
        values: list[str] | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch a component INTERACTION_CREATE (type 3): ``member`` clicks a button
        (or picks ``values`` in a select) with ``custom_id`` on a recorded ``message``.

        The component type is the one on the message, which is in a guild channel or in
        ``member``'s DM with the bot.  LookupError when the message has no such component,
        is ephemeral and not ``member``'s, or is in another member's DM; ValueError for a
        disabled component or select values that are not among its options or not
        within ``min_values``..``max_values``.
        """
        component = find_component(message.components, custom_id)
        if component is None:
            raise LookupError(f"message {message.id} has no component with custom_id {custom_id!r}")
        _require_shown(message, member)
        guild, channel = self.place_of(message.channel_id, member)
        data = component_data(component, component_type, values)
        return await self._dispatch_interaction(
            3, data, guild, member, channel, message=message.data, locale=locale
        )

    async def send_modal_submit(
        self: LoopbackDiscord,
        interaction: Interaction,
        member: Member,
        values: dict[str, Any] | None = None,
        *,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch a MODAL_SUBMIT (type 5) for the modal the bot opened on ``interaction``.

        ``values`` maps text input custom_ids to text (string selects: lists of
        values); the modal's recorded layout decides the components sent back
        (rows or type-18 labels).  ValueError for an empty required input, a length
        outside min_length/max_length, an unknown custom_id, or another member.
        """
        modal = interaction.modal
        if modal is None:
            raise ValueError(f"interaction {interaction.id} was not answered with a modal (type 9)")
        if member.user_id != interaction.user_id:
            raise ValueError(f"the modal was shown to user {interaction.user_id}, not {member.name}")
        components = modal_submit_components(modal.get("components") or [], values or {})
        guild, channel = interaction_place(self, interaction)
        message: JSON | None = None
        if interaction.type == 3 and "message" in interaction.payload:
            current = self.find_message(int(interaction.payload["message"]["id"]))
            message = current.data if current is not None else interaction.payload["message"]
        data = {"custom_id": modal["custom_id"], "components": components}
        return await self._dispatch_interaction(
            5, data, guild, member, channel, message=message, locale=locale
        )

    # -- dispatch -------------------------------------------------------------

    async def _dispatch_interaction(
        self: LoopbackDiscord,
        kind: int,
        data: JSON,
        guild: Guild | None,
        member: Member,
        channel: Channel | DMChannel,
        *,
        message: JSON | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Build the full INTERACTION_CREATE payload, record it and dispatch it (``guild`` None:
        from ``member``'s DM with the bot).

        discord.py kills the client on a payload without ``id``, ``application_id``,
        ``type``, ``token``, ``version``, ``attachment_size_limit`` or
        ``member.user/roles/flags``, so all of them are always present.
        """
        limit = attachment_size_limit or self.upload_limit
        inter_id = snowflake()
        token = new_token()
        payload = self._interaction_payload(kind, data, guild, member, channel, inter_id, token, limit)
        payload["locale"] = locale
        if message is not None:
            payload["message"] = message
        inter = Interaction(
            id=inter_id,
            token=token,
            type=kind,
            guild_id=None if guild is None else guild.id,
            channel_id=channel.id,
            user_id=member.user_id,
            payload=payload,
            attachment_size_limit=limit,
            focused_type=_focused_type(data) if kind == 4 else None,
        )
        self.interactions[inter_id] = inter
        self._tokens[token] = inter
        inter.dispatched_at = self.clock()
        if await self.gateway.dispatch("INTERACTION_CREATE", payload) == 0:
            raise RuntimeError("no gateway session is connected")
        return inter

    def _interaction_payload(
        self: LoopbackDiscord,
        kind: int,
        data: JSON,
        guild: Guild | None,
        member: Member,
        channel: Channel | DMChannel,
        inter_id: int,
        token: str,
        limit: int,
    ) -> JSON:
        payload: JSON = {
            "id": str(inter_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": limit,
        }
        if guild is None:  # the bot's DM: ``user`` instead of ``member``, no guild
            return {**payload, **dm_context(member)}
        return {
            **payload,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
            "member": member.payload(permissions=guild.permissions_of(member)),
            "app_permissions": str(guild.permissions_of(guild.members[self.bot_user_id])),
            "guild_locale": guild.locale,
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
        }


def _require_shown(message: RecordedMessage, member: Member) -> None:
    """A member acts only on messages Discord shows them (an ephemeral one only to its owner)."""
    if message.visible_to not in (None, member.user_id):
        raise LookupError(f"message {message.id} is ephemeral and not shown to {member.name}")


def _first_channel(guild: Guild) -> Channel:
    return next(iter(guild.channels.values()))


def _context_data(registered: JSON, target_id: int) -> JSON:
    data: JSON = {
        "id": registered["id"],
        "name": registered["name"],
        "type": int(registered["type"]),
        "target_id": str(target_id),
    }
    if registered.get("guild_id"):
        data["guild_id"] = registered["guild_id"]
    return data


def _focused_type(data: JSON) -> int | None:
    """The type of the focused option anywhere in an autocomplete's option tree."""
    stack = list(data.get("options") or [])
    while stack:
        option = stack.pop()
        if option.get("focused"):
            return int(option["type"])
        stack.extend(option.get("options") or [])
    return None
