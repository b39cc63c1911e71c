"""The loopback stand-in's command side: subcommands, attachments, context menus, autocomplete,
permissions."""

from __future__ import annotations

import asyncio

import discord
import pytest
from discord import app_commands

from bot.loopback import MANAGE_GUILD, LoopbackDiscord, Upload
from bot.loopback.waiting import wait_for
from tests.loopback_helpers import raw_callback
from tests.test_loopback import Bot, guild_obj, run, the_guild

PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def test_subcommands_and_groups_build_nested_options() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
        dataset = app_commands.Group(name="dataset", description="Datasets")
        operator = app_commands.Group(name="operator", description="Operators")
        stamina = app_commands.Group(name="stamina", description="Stamina", parent=operator)

        @dataset.command(name="new", description="New dataset")
        async def new(
            interaction: discord.Interaction, name: str, count: app_commands.Range[int, 1, 5] = 2
        ) -> None:
            await interaction.response.send_message(f"new {name} x{count}")

        @stamina.command(name="grant", description="Grant stamina")
        async def grant(interaction: discord.Interaction, who: discord.Member, amount: float) -> None:
            await interaction.response.send_message(f"grant {who.name} {amount}")

        bot.tree.add_command(dataset, guild=guild_obj(server))
        bot.tree.add_command(operator, guild=guild_obj(server))
        await bot.tree.sync(guild=guild_obj(server))
        handle = await server.send_interaction(guild, alice, "dataset new", {"name": "cats", "count": 3})
        assert (await handle.wait_response())["data"]["content"] == "new cats x3"
        assert handle.data["options"] == [
            {
                "name": "new",
                "type": 1,
                "options": [
                    {"name": "name", "type": 3, "value": "cats"},
                    {"name": "count", "type": 4, "value": 3},
                ],
            }
        ]
        handle = await server.send_interaction(
            guild, alice, "operator stamina grant", {"who": bob, "amount": 1.5}
        )
        assert (await handle.wait_response())["data"]["content"] == "grant bob 1.5"
        [group] = handle.data["options"]
        assert group["type"] == 2 and group["options"][0]["type"] == 1
        assert str(bob.user_id) in handle.data["resolved"]["members"]
        for bad in ("dataset nope", "dataset", "operator stamina", "nothing new"):
            with pytest.raises(LookupError):
                await server.send_interaction(guild, alice, bad, {})
        for options in ({}, {"name": "x", "count": 9}, {"name": "x", "count": "2"}, {"name": "x", "who": 1}):
            with pytest.raises(ValueError):
                await server.send_interaction(guild, alice, "dataset new", options)

    run(scenario)


def test_attachment_option_is_downloadable() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice = server.add_member(guild, "alice")
        got: list[tuple[str, str | None, bytes, int | None]] = []

        @bot.tree.command(name="upload", description="Upload a zip", guild=guild_obj(server))
        async def upload(interaction: discord.Interaction, file: discord.Attachment) -> None:
            got.append((file.filename, file.content_type, await file.read(), file.width))
            await interaction.response.send_message(f"{file.size} bytes", ephemeral=True)

        await bot.tree.sync(guild=guild_obj(server))
        handle = await server.send_interaction(guild, alice, "upload", {"file": Upload("a.png", PNG_1X1)})
        assert (await handle.wait_response())["data"]["content"] == f"{len(PNG_1X1)} bytes"
        [resolved] = handle.data["resolved"]["attachments"].values()
        assert resolved["ephemeral"] is True and resolved["content_type"] == "image/png"
        assert got == [("a.png", "image/png", PNG_1X1, 1)]
        handle = await server.send_interaction(guild, alice, "upload", {"file": ("set.zip", b"PK\x03\x04")})
        await handle.wait_response()
        assert got[-1][:3] == ("set.zip", "application/zip", b"PK\x03\x04")
        with pytest.raises(ValueError):
            await server.send_interaction(guild, alice, "upload", {"file": ("big.zip", b"0" * 101)})
        with pytest.raises(ValueError):
            await server.send_interaction(guild, alice, "upload", {"file": b"no name"})

    run(scenario, member_upload_limit=100)


def test_member_message_and_context_menus() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
        channel = next(iter(guild.channels.values()))
        created: list[discord.Message] = []
        got: list[str] = []

        async def on_message(message: discord.Message) -> None:
            created.append(message)

        bot.event(on_message)

        @bot.tree.context_menu(name="Add to dataset", guild=guild_obj(server))
        async def add(interaction: discord.Interaction, message: discord.Message) -> None:
            data = [await a.read() for a in message.attachments]
            got.append(f"{message.author.name}:{message.content}:{data}")
            await interaction.response.send_message("added", ephemeral=True)

        @bot.tree.context_menu(name="Profile", guild=guild_obj(server))
        async def profile(interaction: discord.Interaction, member: discord.Member) -> None:
            await interaction.response.send_message(f"profile of {member.name}")

        await bot.tree.sync(guild=guild_obj(server))
        posted = await server.post_message(channel, alice, "my pics", [Upload("x.png", PNG_1X1)])
        assert posted.author_id == alice.user_id and posted.file("x.png").data == PNG_1X1
        handle = await server.send_message_command(guild, bob, "Add to dataset", posted)
        assert (await handle.wait_response())["data"]["content"] == "added"
        assert got == [f"alice:my pics:{[PNG_1X1]}"]
        await wait_for(lambda: created, 10, "the MESSAGE_CREATE of the member's post")
        assert created[0].content == "" and created[0].attachments == []  # no MESSAGE_CONTENT intent
        handle = await server.send_user_command(guild, bob, "Profile", alice)
        assert (await handle.wait_response())["data"]["content"] == "profile of alice"
        with pytest.raises(LookupError):
            await server.send_interaction(guild, bob, "Profile")  # not a slash command
        with pytest.raises(ValueError):
            await server.post_message(channel, alice)
        with pytest.raises(ValueError):
            await server.post_message(channel, alice, files=[("huge.bin", b"0" * 2048)])

    run(scenario, member_upload_limit=1024)


def test_autocomplete_choices_are_validated_and_recorded() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice = server.add_member(guild, "alice")
        errors: list[str] = []
        landed = asyncio.Event()  # set once the test's raw callback was answered: the bot may answer then
        dataset = app_commands.Group(name="dataset", description="Datasets")

        @dataset.command(name="info", description="Dataset info")
        async def info(interaction: discord.Interaction, name: str, page: int = 1) -> None:
            if page == 99:
                await asyncio.wait_for(landed.wait(), 10)
            await interaction.response.send_message(name)

        @info.autocomplete("name")
        async def names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            if current == "slow":
                await asyncio.wait_for(landed.wait(), 10)
                return []
            if current == "many":
                try:
                    await interaction.response.autocomplete(
                        [app_commands.Choice(name=str(i), value=str(i)) for i in range(26)]
                    )
                except discord.HTTPException as exc:
                    errors.append(f"{exc.status}/{exc.code}")
                return []
            return [app_commands.Choice(name=n, value=n) for n in ("cats", "cars") if n.startswith(current)]

        bot.tree.add_command(dataset, guild=guild_obj(server))
        await bot.tree.sync(guild=guild_obj(server))
        handle = await server.send_autocomplete(guild, alice, "dataset info", {"name": "ca"}, focused="name")
        response = await handle.wait_response()
        assert response["type"] == 8 and handle.choices == [
            {"name": "cats", "value": "cats"},
            {"name": "cars", "value": "cars"},
        ]
        assert handle.data["options"][0]["options"] == [
            {"name": "name", "type": 3, "value": "ca", "focused": True}
        ]
        assert handle.ack_s is not None and handle.ack_s < 3
        handle = await server.send_autocomplete(
            guild, alice, "dataset info", {"name": "many"}, focused="name"
        )
        await handle.wait_response()
        assert errors == ["400/50035"] and handle.choices == []
        with pytest.raises(ValueError):
            await server.send_autocomplete(guild, alice, "dataset info", {"page": 2}, focused="page")
        # Type 4 only takes type 8, and type 8 only answers type 4 (raw HTTP: discord.py refuses
        # both itself).  "slow" keeps the bot from answering before the raw callback landed.
        slow = await server.send_autocomplete(guild, alice, "dataset info", {"name": "slow"}, focused="name")
        assert await raw_callback(server, slow, {"type": 4, "data": {"content": "x"}}) == (400, 50035)
        landed.set()
        assert (await slow.wait_response())["type"] == 8 and slow.choices == []
        landed.clear()
        command = await server.send_interaction(guild, alice, "dataset info", {"name": "slow", "page": 99})
        assert await raw_callback(server, command, {"type": 8, "data": {"choices": []}}) == (400, 50035)
        landed.set()
        assert (await command.wait_response())["type"] == 4

    run(scenario)


def test_default_member_permissions_hide_commands() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        operators = server.add_role(guild, "Operator", discord.Permissions(manage_guild=True))
        assert operators.permissions == MANAGE_GUILD
        op = server.add_member(guild, "op", roles=[operators])
        alice = server.add_member(guild, "alice")
        admin_only = app_commands.Group(
            name="operator", description="Ops", default_permissions=discord.Permissions(manage_guild=True)
        )

        @admin_only.command(name="purge", description="Purge")
        async def purge(interaction: discord.Interaction) -> None:
            allowed = interaction.permissions.manage_guild
            await interaction.response.send_message("purged" if allowed else "refused", ephemeral=True)

        bot.tree.add_command(admin_only, guild=guild_obj(server))
        await bot.tree.sync(guild=guild_obj(server))
        assert server.command("operator", guild)["default_member_permissions"] == str(MANAGE_GUILD)
        with pytest.raises(PermissionError):
            await server.send_interaction(guild, alice, "operator purge")
        handle = await server.send_interaction(guild, op, "operator purge")
        assert (await handle.wait_response())["data"]["content"] == "purged"
        handle = await server.send_interaction(guild, alice, "operator purge", bypass_permissions=True)
        assert (await handle.wait_response())["data"]["content"] == "refused"

    run(scenario)
