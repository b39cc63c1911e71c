"""Forms (modals): advanced training options, save to library, train further, compare epochs, and
one image's caption.

Typing on a phone is the last resort, so each form is prefilled with what most members want.
Discord routes a form's submit by its custom id alone, so each form answers only the member it
was opened for (like :class:`~bot.ui.base.OwnerView`); anyone else is refused and nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from ..datasets.captions import MAX_CAPTION_CHARS
from ..errors import MemberError
from ..i18n import Messages, messages
from .common import answer, claim, defer_thinking, report_error, roles_of, run_service, services_of

if TYPE_CHECKING:
    from db.jobs import JobRow

    from .tags import TagBrowser
    from .train import TrainConfirmView


class _Modal(discord.ui.Modal):
    """A form bound to ``owner_id``, the member it was opened for."""

    def __init__(self, owner_id: int, title: str | None = None) -> None:
        super().__init__(timeout=600)  # a dismissed form is forgotten after that
        self.owner_id = owner_id
        if title is not None:  # in the member's language (the class's title is the English)
            self.title = title[:45]

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        claim(interaction)
        if interaction.user.id == self.owner_id:
            return True
        t = messages(interaction.locale)
        await answer(
            interaction, "⛔ " + t("This form belongs to the member who opened it: nothing was changed.")
        )
        return False  # discord.py keeps the form open for its owner

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error, f"form {type(self).__name__}")


def _field(modal: discord.ui.Modal, label: str, **kwargs) -> discord.ui.TextInput:
    """A text field added to ``modal``, labelled in the member's language."""
    field = discord.ui.TextInput(label=label, **kwargs)
    modal.add_item(field)
    return field


class AdvancedOptionsModal(_Modal, title="Advanced training options"):
    def __init__(self, confirm: TrainConfirmView):
        from ..queue.options import format_options

        t = confirm.t
        super().__init__(confirm.owner_id, t("Advanced training options"))
        self.confirm = confirm
        self.text = _field(
            self, t("One option per line: key = value"), style=discord.TextStyle.paragraph, required=False,
            placeholder="optimizer = Prodigy\nlearning_rate = 1\nnetwork_dim = 16\nmin_snr_gamma = 5", max_length=4000,
            default=format_options({k: v for k, v in confirm.options.items() if k != "seed"})[:4000],
        )  # fmt: skip

    async def on_submit(self, interaction: discord.Interaction) -> None:
        from ..queue.options import parse_option_lines

        options = parse_option_lines(self.text.value)  # a bad line: on_error says which
        if "seed" in self.confirm.options and "seed" not in options:
            options["seed"] = self.confirm.options["seed"]
        await self.confirm.refresh(interaction, options)


class SaveLoraModal(_Modal, title="Save to your LoRA library"):
    def __init__(self, owner_id: int, job_id: int, epoch: int, default: str, t: Messages):
        super().__init__(owner_id, t("Save to your LoRA library"))
        self.job_id, self.epoch = job_id, epoch
        self.name = _field(self, t("Name in your library"), min_length=1, max_length=40, default=default[:40])

    async def on_submit(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        await defer_thinking(interaction)  # copies a file of up to GBs
        lora = await run_service(
            interaction, services.library.save(self.owner_id, self.job_id, self.epoch, self.name.value)
        )
        if lora is not None:
            t = messages(interaction.locale)
            await answer(
                interaction,
                t("💾 Saved epoch {epoch} of job #{job} as **{name}**: try it with `/generate lora:{name}`.",
                  epoch=self.epoch, job=self.job_id, name=lora.name),
            )  # fmt: skip


class TrainFurtherModal(_Modal, title="Train further"):
    def __init__(self, owner_id: int, job: JobRow, epoch: int, t: Messages):
        super().__init__(owner_id, t("Train further"))
        self.job, self.epoch = job, epoch
        self.epochs = _field(
            self, t("More epochs"), min_length=1, max_length=4, default=str(job.spec.get("epochs", 5))
        )
        self.extra = _field(self, t("Other options (key = value lines)"), style=discord.TextStyle.paragraph,
                            required=False, max_length=2000, placeholder="learning_rate = 5e-5")  # fmt: skip

    async def on_submit(self, interaction: discord.Interaction) -> None:
        from ..queue.options import parse_option_lines
        from .train import show_estimate

        text = f"epochs = {self.epochs.value}\n{self.extra.value}"
        extra = parse_option_lines(text)  # a bad line: on_error says which
        base = {
            k: v for k, v in self.job.spec.get("options", {}).items() if k not in ("seed", "init_weights")
        }
        rows = await services_of(interaction).datasets.list(self.owner_id)
        dataset = next((d.name for d, _ in rows if d.id == self.job.dataset_id), None)
        if dataset is None:  # never a newer dataset that happens to have the same name
            raise MemberError(
                "the dataset job #{job} trained on was deleted: train anew instead", job=self.job.id
            )
        await show_estimate(interaction, dataset, {**base, **extra}, init_from=(self.job.id, self.epoch))


class CompareModal(_Modal, title="Compare epochs × weights"):
    def __init__(self, owner_id: int, job_id: int, saved: list[int], t: Messages):
        super().__init__(owner_id, t("Compare epochs × weights"))
        self.job_id = job_id
        self.epochs = _field(self, t("Epochs (up to 8)"), max_length=40, placeholder="2, 4, 6",
                             default=", ".join(map(str, saved[-4:])))  # fmt: skip
        self.weights = _field(self, t("Weights (up to 8)"), max_length=60, default="0.6, 0.8, 1.0")
        self.prompt = _field(self, t("Prompt (empty: the preview prompt)"), style=discord.TextStyle.paragraph,
                             required=False, max_length=1000)  # fmt: skip

    async def on_submit(self, interaction: discord.Interaction) -> None:
        from .common import require_posting

        require_posting(interaction)  # the grid is posted in this channel (on_error says why not)
        services, t = services_of(interaction), messages(interaction.locale)
        try:
            epochs = [int(e) for e in self.epochs.value.replace(" ", "").split(",") if e]
            weights = [float(w) for w in self.weights.value.replace(" ", "").split(",") if w]
        except ValueError:
            await answer(
                interaction, "❌ " + t("Epochs are whole numbers and weights numbers, separated by commas.")
            )
            return
        job = await run_service(
            interaction,
            services.generation.compare_epochs(
                self.owner_id, self.job_id, epochs, weights, prompt=self.prompt.value or None,
                roles=roles_of(interaction), channel_id=interaction.channel_id, locale=str(interaction.locale),
            ),
        )  # fmt: skip
        if job is not None:
            text = t(
                "🖼️ Queued **#{job}**: {epochs} epochs × {weights} weights for {cost} stamina. The grid will "
                "be posted in this channel.",
                job=job.id,
                epochs=len(epochs),
                weights=len(weights),
                cost=job.cost,
            )
            await answer(interaction, text)  # fmt: skip


class CaptionModal(_Modal, title="Edit the caption"):
    """One image's caption as text, prefilled with the current one. Saved through the service (the
    trigger word is put first; empty, too long or changed meanwhile: a message, nothing saved)."""

    def __init__(
        self,
        owner_id: int,
        dataset: str,
        image_id: int,
        caption: str,
        browser: TagBrowser | None = None,
        t: Messages | None = None,
    ):
        super().__init__(owner_id)
        self.t = t = t or messages(None)
        self.title = t("Caption of image {image}", image=image_id)[:45]
        self.dataset, self.image_id, self.caption, self.browser = dataset, image_id, caption, browser
        self.text = discord.ui.TextInput(
            label=t("Comma-separated tags; the trigger stays first")[:45],
            style=discord.TextStyle.paragraph,
            required=False,  # an emptied form reaches the bot, which says why it cannot be saved
            max_length=MAX_CAPTION_CHARS,
            default=caption[:MAX_CAPTION_CHARS],
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction)
        saved = await services.datasets.set_caption(
            self.owner_id, self.dataset, self.image_id, self.text.value, expected=self.caption
        )  # a bad caption: on_error says why, nothing is saved
        if self.browser is not None and interaction.message is not None:
            await self.browser.show(interaction)  # the image's page, with its new caption
        t, said = self.t, {"image": saved.image_id, "dataset": self.dataset}
        if not saved.changed:
            text = t("The caption of image {image} is unchanged.", **said)
        elif saved.trigger_moved:
            text = "✏️ " + t("Saved the caption of image {image} (the trigger word stays first). "
                             "Undo with `/tags undo dataset:{dataset}`.", **said)  # fmt: skip
        else:
            text = "✏️ " + t(
                "Saved the caption of image {image}. Undo with `/tags undo dataset:{dataset}`.", **said
            )
        await answer(interaction, text)
