"""The loopback Discord stand-in driven by the real discord.py client (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable

import discord
import pytest
from discord import app_commands

from bot.loopback import LoopbackDiscord, running_client, validate
from bot.loopback.state import Guild
from bot.loopback.waiting import wait_for
from tests.loopback_helpers import fail_on_logged_errors

TIMEOUT = 10.0


class Bot(discord.Client):
    """A minimal bot with a command tree, like the real one."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[str] = []


def run(scenario: Callable[[LoopbackDiscord, Bot], Awaitable[None]], **server_kwargs) -> None:
    """Run ``scenario(server, bot)`` with a started stand-in (one guild) and a ready client."""
    with fail_on_logged_errors("discord"):
        asyncio.run(_main(scenario, server_kwargs))


async def _main(scenario: Callable[[LoopbackDiscord, Bot], Awaitable[None]], server_kwargs: dict) -> None:
    server = LoopbackDiscord(**server_kwargs)
    server.add_guild("Loopback guild")
    await server.start()
    try:
        bot = Bot()
        async with running_client(server, bot):
            await asyncio.wait_for(scenario(server, bot), TIMEOUT)
    finally:
        await server.close()
    assert not server.unhandled, server.unhandled


def the_guild(server: LoopbackDiscord) -> Guild:
    return next(iter(server.guilds.values()))


def guild_obj(server: LoopbackDiscord) -> discord.Object:
    """The stand-in's (only) guild as a ``discord.Object`` for command registration."""
    return discord.Object(the_guild(server).id)


def test_connects_ready_with_guild() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        assert bot.is_ready()
        assert bot.user is not None and bot.user.id == server.bot_user_id
        assert bot.application_id == server.application_id
        dguild = bot.get_guild(guild.id)
        assert dguild is not None and dguild.name == "Loopback guild"
        assert [c.name for c in dguild.text_channels] == ["general"]
        assert dguild.me is not None

    run(scenario)


def test_heartbeat_acks_give_finite_latency() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        await wait_for(lambda: server.gateway.heartbeats >= 2, 10, "two heartbeats")
        # discord.py measures the latency when the ack arrives: wait for it, not for a guess of when
        await wait_for(lambda: math.isfinite(bot.latency), 10, "the bot to measure a heartbeat's latency")
        assert bot.latency >= 0

    run(scenario, heartbeat_interval_ms=100)


def test_sync_registers_guild_command() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)

        @bot.tree.command(name="hello", description="Say hello", guild=discord.Object(guild.id))
        async def hello(interaction: discord.Interaction, who: str) -> None:
            await interaction.response.send_message(f"hello {who}")

        synced = await bot.tree.sync(guild=discord.Object(guild.id))
        assert [c.name for c in synced] == ["hello"]
        stored = server.command("hello", guild)
        assert stored is not None and stored["description"] == "Say hello"
        assert stored["options"][0]["name"] == "who"
        # A second sync keeps the command id, as Discord does.
        again = await bot.tree.sync(guild=discord.Object(guild.id))
        assert again[0].id == synced[0].id

    run(scenario)


def test_sync_rejects_invalid_command_name() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        # discord.py itself refuses upper case and spaces, so register a name it lets
        # through but Discord refuses: longer than 32 characters, built by hand.
        command = app_commands.Command(name="ok", description="d", callback=_noop)
        command.name = "x" * 33
        bot.tree.add_command(command, guild=discord.Object(guild.id))
        with pytest.raises(discord.HTTPException) as info:
            await bot.tree.sync(guild=discord.Object(guild.id))
        assert info.value.status == 400 and info.value.code == 50035
        assert server.command("x" * 33, guild) is None

    run(scenario)


async def _noop(interaction: discord.Interaction) -> None:
    pass


def test_slash_command_ephemeral_reply_and_file_followup() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice = server.add_member(guild, "alice")

        @bot.tree.command(name="hello", description="Say hello", guild=discord.Object(guild.id))
        async def hello(interaction: discord.Interaction, who: str) -> None:
            bot.seen.append(f"{interaction.user.name}:{who}")
            await interaction.response.send_message("hi", ephemeral=True)
            data = io.BytesIO(b"\x89PNG fake bytes")
            await interaction.followup.send("here", file=discord.File(data, "result.png"))

        await bot.tree.sync(guild=discord.Object(guild.id))
        handle = await server.send_interaction(guild, alice, "hello", {"who": "world"})
        response = await handle.wait_response()
        assert response["type"] == 4
        assert response["data"]["content"] == "hi"
        assert response["data"]["flags"] & 64
        assert handle.original is not None and handle.original.ephemeral
        [followup] = await handle.wait_followups(1)
        assert followup.content == "here"
        assert followup.file("result.png").data == b"\x89PNG fake bytes"
        assert bot.seen == ["alice:world"]

    run(scenario)


def test_button_view_click_updates_message() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        bob = server.add_member(guild, "bob")

        class Confirm(discord.ui.View):
            @discord.ui.button(label="Confirm", custom_id="confirm", style=discord.ButtonStyle.green)
            async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
                bot.seen.append(f"clicked by {interaction.user.name}")
                await interaction.response.edit_message(content="confirmed", view=None)

        @bot.tree.command(name="ask", description="Ask for confirmation", guild=discord.Object(guild.id))
        async def ask(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("sure?", view=Confirm())

        await bot.tree.sync(guild=discord.Object(guild.id))
        handle = await server.send_interaction(guild, bob, "ask")
        await handle.wait_response()
        message = handle.original
        assert message is not None and message.content == "sure?"
        assert message.components[0]["components"][0]["custom_id"] == "confirm"
        with pytest.raises(LookupError):
            await server.send_component(message, bob, "nope")
        click = await server.send_component(message, bob, "confirm")
        response = await click.wait_response()
        assert response["type"] == 7
        assert message.content == "confirmed" and message.components == []
        assert bot.seen == ["clicked by bob"]

    run(scenario)


def test_reconnect_resumes_session() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        resumed = asyncio.Event()

        async def on_resumed() -> None:
            resumed.set()

        bot.event(on_resumed)
        [session] = server.gateway.sessions.values()
        assert await server.gateway.request_reconnect() == 1
        await asyncio.wait_for(resumed.wait(), 5)
        assert session.resumes == 1 and len(server.gateway.sessions) == 1

        @bot.tree.command(name="ping", description="Ping", guild=discord.Object(guild.id))
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        await bot.tree.sync(guild=discord.Object(guild.id))
        alice = server.add_member(guild, "alice")
        handle = await server.send_interaction(guild, alice, "ping")
        assert (await handle.wait_response())["data"]["content"] == "pong"

    run(scenario)


def test_defer_then_edit_original_and_embed_limits() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        carol = server.add_member(guild, "carol")
        outcome: list[str] = []

        @bot.tree.command(name="slow", description="Slow work", guild=discord.Object(guild.id))
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            try:
                await interaction.edit_original_response(embed=discord.Embed(title="x" * 257))
            except discord.HTTPException as exc:
                outcome.append(f"{exc.status}/{exc.code}")
            try:
                await interaction.followup.send()
            except discord.HTTPException as exc:
                outcome.append(f"{exc.status}/{exc.code}")
            embed = discord.Embed(title="Done", description="trained")
            await interaction.edit_original_response(content="finished", embed=embed)

        await bot.tree.sync(guild=discord.Object(guild.id))
        handle = await server.send_interaction(guild, carol, "slow")
        response = await handle.wait_response()
        assert response["type"] == 5 and response["data"]["flags"] & 64
        await wait_for(lambda: handle.original is not None and handle.original.edits, 10, "the edited answer")
        original = handle.original
        assert original.content == "finished" and original.embeds[0]["title"] == "Done"
        assert original.ephemeral and not original.flags & 128
        assert outcome == ["400/50035", "400/50006"]  # embed title > 256; empty message

    run(scenario)


def test_message_over_2000_chars_is_rejected() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        channel = bot.get_channel(next(iter(guild.channels)))
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("x" * 2001)
        assert info.value.status == 400 and info.value.code == 50035
        sent = await channel.send("x" * 2000)
        assert server.find_message(sent.id) is not None
        assert server.messages[channel.id][-1].content == "x" * 2000

    run(scenario)


def test_oversized_upload_is_413() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        channel = bot.get_channel(next(iter(guild.channels)))
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(file=discord.File(io.BytesIO(b"0" * 2048), "big.bin"))
        assert info.value.status == 413 and info.value.code == 40005
        ok = await channel.send(file=discord.File(io.BytesIO(b"0" * 1024), "small.bin"))
        assert await ok.attachments[0].read() == b"0" * 1024

    run(scenario, upload_limit=1024)


def test_unimplemented_route_is_404_and_recorded() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        with pytest.raises(discord.NotFound):
            await bot.fetch_user(1234)
        assert server.unhandled == ["GET /api/v10/users/1234"]
        server.unhandled.clear()

    run(scenario)


def test_validation_limits() -> None:
    assert not validate.check_command({"name": "train", "description": "Train a LoRA"})
    assert validate.check_command({"name": "Train", "description": "x"})
    assert validate.check_command({"name": "has space", "description": "x"})
    assert validate.check_command({"name": "ok", "description": ""})
    assert validate.check_command({"name": "ok", "description": "x" * 101})
    many = [{"name": f"o{i}", "description": "d", "type": 3} for i in range(26)]
    assert validate.check_command({"name": "ok", "description": "d", "options": many})
    choices = [{"name": str(i), "value": str(i)} for i in range(26)]
    opt = {"name": "o", "description": "d", "type": 3, "choices": choices}
    assert validate.check_command({"name": "ok", "description": "d", "options": [opt]})
    assert validate.check_commands([{"name": f"c{i}", "description": "d"} for i in range(101)])
    assert validate.check_message({"embeds": [{"title": "t"}] * 11})
    assert validate.check_message({"embeds": [{"title": "x" * 257}]})
    assert validate.check_message({"embeds": [{"description": "x" * 4097}]})
    assert validate.check_message({"embeds": [{"description": "x" * 4000}, {"description": "x" * 2001}]})
    fields = [{"name": "n", "value": "v"}] * 26
    assert validate.check_message({"embeds": [{"fields": fields}]})
    button = {"type": 2, "style": 1, "label": "b", "custom_id": "c"}
    assert not validate.check_message({"components": [{"type": 1, "components": [button] * 5}]})
    assert validate.check_message({"components": [{"type": 1, "components": [button] * 6}]})
    assert validate.check_message({"components": [{"type": 1, "components": [button]}] * 6})
    long_id = dict(button, custom_id="c" * 101)
    assert validate.check_message({"components": [{"type": 1, "components": [long_id]}]})
    assert validate.is_empty_message({}) and not validate.is_empty_message({"content": "x"})
    body = validate.invalid_form_body({"content": {}})
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"


def test_callback_type_rules() -> None:
    from bot.loopback.validate_callbacks import check_callback_type, check_choices, check_modal_layout

    assert check_callback_type(4, 4) and check_callback_type(8, 2) and not check_callback_type(8, 4)
    assert check_callback_type(6, 2) and not check_callback_type(7, 3) and check_callback_type(9, 5)
    assert not check_choices({"choices": [{"name": "a", "value": 1}]}, 4)
    assert check_choices({"choices": [{"name": "a", "value": "1"}]}, 4)
    assert check_choices({"choices": [{"name": "a", "value": "x" * 101}]}, 3)
    assert check_choices({"choices": [{"name": "", "value": "x"}]}, 3)
    row = {
        "type": 1,
        "components": [{"type": 4, "custom_id": "a", "style": 1, "label": "A", "max_length": 4001}],
    }
    assert check_modal_layout({"title": "t", "custom_id": "m", "components": [row]})


def test_burst_of_concurrent_interactions() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        members = [server.add_member(guild, f"m{i}") for i in range(120)]

        @bot.tree.command(name="echo", description="Echo", guild=guild_obj(server))
        async def echo(interaction: discord.Interaction, n: int) -> None:
            await interaction.response.send_message(f"{interaction.user.name}:{n}", ephemeral=True)

        await bot.tree.sync(guild=guild_obj(server))
        handles = await asyncio.gather(
            *(server.send_interaction(guild, m, "echo", {"n": i}) for i, m in enumerate(members))
        )
        responses = await asyncio.gather(*(h.wait_response(timeout=8) for h in handles))
        assert [r["data"]["content"] for r in responses] == [f"m{i}:{i}" for i in range(120)]
        assert all(h.ack_s is not None and h.ack_s < 3 for h in handles)
        [session] = server.gateway.sessions.values()
        seqs = [e["s"] for e in session.events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    run(scenario)


def test_channel_message_lookups() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice = server.add_member(guild, "alice")
        channel = next(iter(guild.channels.values()))

        class Job(discord.ui.View):
            @discord.ui.button(label="Cancel", custom_id="job:7:cancel")
            async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
                await interaction.response.defer()

        @bot.tree.command(name="train", description="Train", guild=guild_obj(server))
        async def train(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("queued", ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send("progress 0%", view=Job())

        await bot.tree.sync(guild=guild_obj(server))
        await server.send_interaction(guild, alice, "train")
        progress = await server.wait_for_message(lambda m: m.content.startswith("progress"))
        assert server.channel_messages(channel) == [progress]
        assert len(server.channel_messages(channel, interactions=True)) == 2
        assert server.messages_with_component("job:") == [progress]
        member_post = await server.post_message(channel, alice, "hello", dispatch=False)
        assert member_post not in server.channel_messages(channel)
        text = bot.get_channel(channel.id)
        assert isinstance(text, discord.TextChannel)
        with pytest.raises(discord.Forbidden):
            await (await text.fetch_message(member_post.id)).edit(content="hacked")
        with pytest.raises(asyncio.TimeoutError):
            await server.wait_for_message(lambda m: m.content == "never", timeout=0.05)

    run(scenario)
