"""Direct messages on the loopback stand-in, driven by the real discord.py client: opening a DM
channel, posting in it (files and buttons recorded), Discord's 50007 refusal for a member who closed
their DMs, and a member clicking a button of a DM (an interaction without a guild)."""

from __future__ import annotations

import io

import discord
import pytest

from bot.loopback import LoopbackDiscord
from tests.test_loopback import Bot, run, the_guild


def test_the_bot_opens_a_dm_and_its_messages_are_recorded() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        alice = server.add_member(the_guild(server), "alice")
        channel = await bot.create_dm(discord.Object(alice.user_id))
        assert isinstance(channel, discord.DMChannel) and channel.recipient.id == alice.user_id
        sent = await channel.send("hello", file=discord.File(io.BytesIO(b"png"), filename="grid.png"))
        assert sent.guild is None and sent.channel.id == channel.id
        (recorded,) = server.dm_messages(alice)
        assert recorded.content == "hello" and recorded.file("grid.png").data == b"png"
        assert "guild_id" not in recorded.data
        assert all(server.channel_messages(c) == [] for c in the_guild(server).channels.values())
        again = await bot.http.start_private_message(alice.user_id)  # Discord gives the same channel back
        assert int(again["id"]) == channel.id and again["type"] == 1

    run(scenario)


def test_closed_dms_and_unknown_users_are_refused_as_discord_does() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        bob = server.add_member(the_guild(server), "bob")
        bob.dms_closed = True
        channel = await bot.create_dm(discord.Object(bob.user_id))  # opening works whatever the settings
        with pytest.raises(discord.Forbidden) as refused:
            await channel.send("hello")
        assert refused.value.status == 403 and refused.value.code == 50007
        assert server.dm_messages(bob) == []
        bob.dms_closed = False
        await channel.send("hello")
        assert [m.content for m in server.dm_messages(bob)] == ["hello"]
        with pytest.raises(discord.HTTPException) as unknown:
            await bot.http.start_private_message(12345)
        assert unknown.value.status == 400 and unknown.value.code == 50033

    run(scenario)


def test_a_member_clicks_a_button_in_their_dm() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
        seen: list[discord.Interaction] = []

        @bot.event
        async def on_interaction(interaction: discord.Interaction) -> None:
            seen.append(interaction)
            await interaction.response.send_message("clicked", ephemeral=True)

        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Go", custom_id="go"))
        await (await bot.create_dm(discord.Object(alice.user_id))).send("pick", view=view)
        (message,) = server.dm_messages(alice)
        with pytest.raises(LookupError):  # not bob's DM
            await server.send_component(message, bob, "go")
        click = await server.send_component(message, alice, "go")
        await click.wait_response()
        assert click.guild_id is None and "member" not in click.payload and click.payload["context"] == 1
        (interaction,) = seen
        assert interaction.guild is None and interaction.user.id == alice.user_id
        assert (
            isinstance(interaction.channel, discord.DMChannel)
            and interaction.channel.id == message.channel_id
        )
        assert click.original is not None and click.original.content == "clicked"

    run(scenario)
