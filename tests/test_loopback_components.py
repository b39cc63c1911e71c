"""The loopback stand-in's component side: modals and their submits, components on ephemeral
messages and select rules, the 3-second answer window and the interaction token's lifetime."""

from __future__ import annotations

import discord
import pytest

from bot.loopback import LoopbackDiscord
from bot.loopback.waiting import wait_for
from tests.loopback_helpers import ManualClock
from tests.test_loopback import Bot, guild_obj, run, the_guild


class Caption(discord.ui.Modal, title="Caption"):
    """A modal in both layouts: a legacy row with a text input, and type-18 labels."""

    submitted: list[str] = []
    text = discord.ui.TextInput(label="Caption", custom_id="text", min_length=3, max_length=20)
    note = discord.ui.Label(text="Note", component=discord.ui.TextInput(custom_id="note", required=False))
    kind = discord.ui.Label(
        text="Kind",
        component=discord.ui.Select(
            custom_id="kind",
            options=[discord.SelectOption(label="Style"), discord.SelectOption(label="Char")],
        ),
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        assert isinstance(self.note.component, discord.ui.TextInput)
        assert isinstance(self.kind.component, discord.ui.Select)
        origin = interaction.message.id if interaction.message else None
        note, kind = self.note.component.value, self.kind.component.values
        self.submitted.append(f"{self.text.value}|{note}|{kind}|{origin}")
        await interaction.response.send_message("saved", ephemeral=True)


class OpenCaption(discord.ui.View):
    @discord.ui.button(label="Edit", custom_id="edit")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(Caption(custom_id="caption-modal"))


def test_modal_submit_reaches_on_submit() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
        submitted = Caption.submitted
        submitted.clear()

        @bot.tree.command(name="caption", description="Caption", guild=guild_obj(server))
        async def caption(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Caption(custom_id="caption-modal"))

        @bot.tree.command(name="panel", description="Panel", guild=guild_obj(server))
        async def panel(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("panel", view=OpenCaption())

        await bot.tree.sync(guild=guild_obj(server))
        opened = await server.send_interaction(guild, alice, "caption")
        assert (await opened.wait_response())["type"] == 9 and opened.modal is not None
        for values in (
            {},
            {"text": "ab", "kind": ["Style"]},
            {"text": "abc", "kind": ["Nope"]},
            {"text": "abc", "kind": ["Style"], "other": "x"},
        ):
            with pytest.raises(ValueError):
                await server.send_modal_submit(opened, alice, values)
        with pytest.raises(ValueError):
            await server.send_modal_submit(opened, bob, {"text": "abc", "kind": ["Style"]})
        submit = await server.send_modal_submit(opened, alice, {"text": "a cat", "kind": ["Char"]})
        assert (await submit.wait_response())["data"]["content"] == "saved"
        assert submitted == ["a cat||['Char']|None"]
        assert [c["type"] for c in submit.data["components"]] == [1, 18, 18]
        shown = await server.send_interaction(guild, alice, "panel")
        await shown.wait_response()
        assert shown.original is not None
        click = await server.send_component(shown.original, alice, "edit")
        await click.wait_response()
        submit = await server.send_modal_submit(
            click, alice, {"text": "a dog", "note": "hi", "kind": ["Style"]}
        )
        await submit.wait_response()
        assert submitted[-1] == f"a dog|hi|['Style']|{shown.original.id}"

    run(scenario)


def test_components_on_ephemeral_messages_and_select_rules() -> None:
    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice, bob = server.add_member(guild, "alice"), server.add_member(guild, "bob")
        picked: list[list[str]] = []

        class Pick(discord.ui.View):
            @discord.ui.select(
                custom_id="pick",
                min_values=1,
                max_values=2,
                options=[discord.SelectOption(label=x) for x in ("a", "b", "c")],
            )
            async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
                picked.append(select.values)
                await interaction.response.edit_message(content=f"picked {select.values}")

            @discord.ui.button(label="Off", custom_id="off", disabled=True)
            async def off(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
                pass

        @bot.tree.command(name="pick", description="Pick", guild=guild_obj(server))
        async def pick(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("hi", ephemeral=True)
            await interaction.followup.send("choose", view=Pick(), ephemeral=True)

        await bot.tree.sync(guild=guild_obj(server))
        handle = await server.send_interaction(guild, alice, "pick")
        [followup] = await handle.wait_followups(1)
        assert followup.ephemeral and followup.visible_to == alice.user_id
        with pytest.raises(LookupError):
            await server.send_component(followup, bob, "pick", values=["a"])
        for values in (None, [], ["z"], ["a", "b", "c"], ["a", "a"]):
            with pytest.raises(ValueError):
                await server.send_component(followup, alice, "pick", values=values)
        with pytest.raises(ValueError):
            await server.send_component(followup, alice, "off")
        with pytest.raises(ValueError):
            await server.send_component(followup, alice, "pick", component_type=2, values=["a"])
        click = await server.send_component(followup, alice, "pick", values=["a", "c"])
        assert (await click.wait_response())["type"] == 7
        assert click.payload["message"]["flags"] & 64
        assert picked == [["a", "c"]] and followup.content == "picked ['a', 'c']"
        channel = bot.get_channel(followup.channel_id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.NotFound):  # ephemeral messages are not in the channel
            await channel.fetch_message(followup.id)

    run(scenario)


def test_ack_deadline_and_token_lifetime() -> None:
    clock = ManualClock()  # the stand-in's clock: the bot "takes" time by moving it

    async def scenario(server: LoopbackDiscord, bot: Bot) -> None:
        guild = the_guild(server)
        alice = server.add_member(guild, "alice")
        outcome: list[str] = []

        @bot.tree.command(name="late", description="Late", guild=guild_obj(server))
        async def late(interaction: discord.Interaction) -> None:
            clock.advance(0.25)  # past the 0.2 s answer window
            try:
                await interaction.response.send_message("too late")
            except discord.NotFound as exc:
                outcome.append(f"late {exc.code}")

        @bot.tree.command(name="long", description="Long", guild=guild_obj(server))
        async def long(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("early")
            clock.advance(0.5)  # past the token's 0.4 s lifetime
            try:
                await interaction.followup.send("after the token expired")
            except discord.HTTPException as exc:
                outcome.append(f"expired {exc.status}/{exc.code}")

        await bot.tree.sync(guild=guild_obj(server))
        handle = await server.send_interaction(guild, alice, "late")
        await wait_for(lambda: outcome, 10, "the late answer to be refused")
        assert outcome == ["late 10062"] and handle.response is None
        assert handle.late_callbacks == 1 and handle.ack_s == 0.25
        handle = await server.send_interaction(guild, alice, "long")
        await handle.wait_response()
        assert handle.ack_s == 0
        await wait_for(lambda: len(outcome) >= 2, 10, "the followup after the token expired")
        assert outcome[1] == "expired 401/50027" and len(handle.followups) == 1

    run(scenario, ack_deadline_s=0.2, token_lifetime_s=0.4, clock=clock)
