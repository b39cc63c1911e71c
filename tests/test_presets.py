"""Training options from text, saved presets, like:<job>, and the layering of /train's sources."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.datasets.service import ServiceError
from bot.queue.option_help import help_fields, help_text
from bot.queue.options import (
    OPTIONS,
    OptionsError,
    format_options,
    merge_options,
    parse_option_lines,
    validate_options,
)
from bot.queue.presets import MAX_PRESETS, PresetService
from bot.queue.service import BOT_KEYS, QueueError
from bot.services import open_services
from db.database import schema_version
from tests.queue_helpers import FAST, make_dataset, queue_settings
from trainer.contract import TrainJob

MODELS = {"tiny-sd15": Path("/nonexistent/sd15"), "tiny-sdxl": Path("/nonexistent/sdxl")}


def run(tmp_path, body):
    settings = queue_settings(tmp_path, MODELS)
    now = [1000.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    async def go():
        async with open_services(settings) as services:
            return await body(services, PresetService(services.conn, clock, services.queue))

    return asyncio.run(go())


def problems_of(text: str) -> list[str]:
    with pytest.raises(OptionsError) as info:
        parse_option_lines(text)
    return info.value.problems


# Parsing -------------------------------------------------------------------------------------------


def test_values_are_coerced_by_the_contracts_types():
    got = parse_option_lines(
        "epochs=12, optimizer=prodigy\nlearning_rate = 1e0; unet_lr=1\n"
        "previews=off shuffle_tags=Yes unet_only=true text_encoder_only=no\n"
        "lr_scheduler=Cosine With Restarts, preview_sampler=DPMPP_2M_KARRAS\n"
        "preview_weights=0.5, 0.75,1.0\nnetwork_alpha=8, seed=none, repeats=1e1"
    )
    assert got == {
        "epochs": 12, "optimizer": "Prodigy", "learning_rate": 1.0, "unet_lr": 1.0, "previews": False,
        "shuffle_tags": True, "unet_only": True, "text_encoder_only": False,
        "lr_scheduler": "cosine_with_restarts", "preview_sampler": "dpmpp_2m_karras",
        "preview_weights": [0.5, 0.75, 1.0], "network_alpha": 8.0, "seed": None, "repeats": 10,
    }  # fmt: skip
    assert isinstance(got["epochs"], int) and isinstance(got["network_alpha"], float)
    assert parse_option_lines("lr_warmup_percent=2.5\nMIXED-PRECISION=BF16") == {
        "lr_warmup_percent": 2.5,
        "mixed_precision": "bf16",
    }
    assert parse_option_lines("  \n, ") == {}


def test_text_values_keep_commas_and_quotes_protect_the_rest():
    got = parse_option_lines('preview_prompt=tkchar, 1girl, smile, epochs=3, preview_negative="a, b=c\nd"')
    assert got == {"preview_prompt": "tkchar, 1girl, smile", "epochs": 3, "preview_negative": "a, b=c\nd"}


def test_unknown_and_bot_keys_are_refused_with_a_suggestion():
    assert problems_of("epoch=3") == ["unknown option 'epoch' (did you mean 'epochs'?)"]
    assert problems_of("learnig_rate=1e-4") == [
        "unknown option 'learnig_rate' (did you mean 'learning_rate'?)"
    ]
    for key in ("output_name", "base_model", "init_weights", "resume", "schema"):
        assert problems_of(f"{key}=x") == [f"{key} is set by the bot: leave it out"]


def test_every_problem_is_reported_together():
    problems = problems_of(
        "epoch=3, output_name=x, optimizer=adamx, batch_size=two\n"
        "previews=maybe, repeats=0, network_dim=2.5, junk\nlearning_rate=abc, epochs=2, epochs=3"
    )
    assert len(problems) == 10, problems
    text = "\n".join(problems)
    for part in (
        "unknown option 'epoch'", "output_name is set by the bot", "optimizer: 'adamx' is not one of AdamW",
        "batch_size: 'two' is not a whole number", "previews: 'maybe' is not yes or no",
        "network_dim: '2.5' is not a whole number", "'junk' is not key=value",
        "learning_rate: 'abc' is not a number", "epochs is given twice", "repeats:",
    ):  # fmt: skip
        assert part in text
    assert isinstance(OptionsError(["x"]), QueueError) and isinstance(OptionsError(["x"]), ServiceError)


def test_range_errors_come_from_the_contract_with_the_key_name():
    assert problems_of("repeats=0") == ["repeats: Input should be greater than or equal to 1 (got 0)"]
    assert problems_of("resolution=500")[0].startswith("resolution: must be a multiple of 64")
    assert problems_of("preview_weights=0.5,3")[0].startswith("preview_weights.1:")
    # rules between options wait for the merged layers ...
    assert parse_option_lines("optimizer=Prodigy, learning_rate=1e-4") == {
        "optimizer": "Prodigy",
        "learning_rate": 1e-4,
    }
    # ... where they are checked
    with pytest.raises(OptionsError, match="Prodigy finds its own step size"):
        validate_options({"optimizer": "Prodigy", "learning_rate": 1e-4})


def test_format_and_parse_round_trip():
    options = {
        "epochs": 12, "learning_rate": 3e-05, "network_alpha": 16.0, "optimizer": "AdamW8bit", "previews": False,
        "preview_weights": [0.7, 0.8, 1.0], "preview_prompt": "tkchar, smile, a=b", "preview_negative": "none",
        "seed": 4294967295, "shuffle_tags": True, "clip_skip": None,
    }  # fmt: skip
    text = format_options(options)
    assert text.splitlines()[0] == "clip_skip=none" and "epochs=12" in text.splitlines()
    assert parse_option_lines(text) == options
    assert format_options(parse_option_lines(text)) == text
    padded = {"preview_prompt": "  spaced  ", "preview_negative": '"quoted"'}
    assert parse_option_lines(format_options(padded)) == padded


def test_merge_later_layers_win_and_none_means_not_given():
    assert merge_options({"epochs": 5, "repeats": 3}, None, {"epochs": 8, "repeats": None}, {}) == {
        "epochs": 8,
        "repeats": 3,
    }


# The catalog ---------------------------------------------------------------------------------------


def test_the_catalog_is_every_member_settable_field_of_the_contract():
    fields = {f.alias or name for name, f in TrainJob.model_fields.items()}
    assert set(OPTIONS) == fields - BOT_KEYS
    assert not BOT_KEYS & set(OPTIONS)
    epochs, optimizer, weights = OPTIONS["epochs"], OPTIONS["optimizer"], OPTIONS["preview_weights"]
    assert (epochs.kind, epochs.default, epochs.low, epochs.high) == ("int", 10, 1, 1000)
    assert optimizer.kind == "choice" and "Prodigy" in optimizer.choices and optimizer.nullable
    assert weights.kind == "list" and weights.item.kind == "float" and weights.item.high == 2.0
    assert (weights.default, weights.max_items) == ([0.7, 0.8, 1.0], 8)
    assert OPTIONS["learning_rate"].low_open and OPTIONS["lr_warmup_percent"].high_open
    assert "default 1e-4" in OPTIONS["learning_rate"].description


def test_help_fits_discord_embeds():
    full = help_text()
    assert len(full) <= 4096 and all(f"`{key}`" in full for key in OPTIONS)
    fields = help_fields()
    assert len(fields) <= 25 and all(len(body) <= 1024 and len(title) <= 256 for title, body in fields)
    assert {line.split("`")[1] for _, body in fields for line in body.splitlines()} == set(OPTIONS)
    assert "…more" in help_text(limit=600) and len(help_text(limit=600)) <= 600
    assert len(help_fields(max_len=120)) > len(fields)
    one = help_text("Learning-Rate")
    assert "`learning_rate` number 0<x≤10 [auto]" in one and "1.0 for D-Adapt/Prodigy" in one
    assert "e.g. `optimizer=AdamW`" in help_text("optimizer")
    with pytest.raises(OptionsError, match="did you mean 'epochs'"):
        help_text("epoch")


# Presets -------------------------------------------------------------------------------------------


def test_preset_crud_names_limits_and_owner_isolation(tmp_path):
    async def body(s, presets: PresetService):
        assert await schema_version(s.conn) >= 3
        first = await presets.save(1, " Fast run ", "epochs=4, optimizer=prodigy")
        assert (first.name, first.options) == ("Fast run", {"epochs": 4, "optimizer": "Prodigy"})
        again = await presets.save(1, "FAST RUN", {"epochs": 6, "repeats": None})  # same name, any case
        assert (again.id, again.name, again.options) == (first.id, "FAST RUN", {"epochs": 6})
        assert again.created_at == first.created_at < again.updated_at
        with pytest.raises(QueueError, match="already have a preset named 'FAST RUN'"):
            await presets.save(1, "fast run", {"epochs": 7}, replace=False)
        assert (await presets.get(1, "fast run")).options == {"epochs": 6}
        for bad in ("", " ", "-x", "a/b", "x" * 41):
            with pytest.raises(QueueError, match="a preset name is 1-40"):
                await presets.save(1, bad, {"epochs": 3})
        with pytest.raises(QueueError, match="at least one option"):
            await presets.save(1, "empty", {"seed": None})
        with pytest.raises(OptionsError, match="save_every_n_epochs \\(20\\) is more than epochs"):
            await presets.save(1, "bad", "save_every_n_epochs=20")
        with pytest.raises(OptionsError, match="output_name is set by the bot"):
            await presets.save(1, "bad", {"output_name": "x"})
        # another member sees none of it and may reuse the name
        assert await presets.list(2) == []
        with pytest.raises(QueueError, match="you have no preset named 'fast run'"):
            await presets.get(2, "fast run")
        with pytest.raises(QueueError, match="you have no preset"):
            await presets.delete(2, "fast run")
        await presets.save(2, "fast run", {"epochs": 9})
        for i in range(MAX_PRESETS - 1):
            await presets.save(1, f"p{i:02d}", {"epochs": i + 1})
        with pytest.raises(QueueError, match=f"already have {MAX_PRESETS} presets"):
            await presets.save(1, "one more", {"epochs": 3})
        await presets.save(1, "p00", {"epochs": 2})  # replacing one is fine at the limit
        names = [p.name for p in await presets.list(1)]
        assert len(names) == MAX_PRESETS and names[0] == "FAST RUN" and names == sorted(names, key=str.lower)
        await presets.delete(1, "Fast Run")
        await presets.save(1, "one more", {"epochs": 3})
        assert (await presets.get(2, "FAST RUN")).options == {"epochs": 9}

    run(tmp_path, body)


def test_like_copies_a_real_jobs_options_and_layers_in_order(tmp_path):
    async def body(s, presets: PresetService):
        await make_dataset(s, images=2)
        job = await s.queue.submit_training(1, "chara", {**FAST, "network_dim": 8, "lr_scheduler": "cosine"})
        stored = job.spec["options"]
        like = await presets.options_like(s.queue, 1, job.id)
        assert like == {k: v for k, v in stored.items() if k != "seed"}
        assert not BOT_KEYS & set(like) and like["network_dim"] == 8 and like["resolution"] == 64
        kept = await presets.options_like(s.queue, 1, job.id, keep_seed=True)
        assert kept["seed"] == stored["seed"]
        with pytest.raises(QueueError, match=f"you have no job #{job.id}"):
            await presets.options_like(s.queue, 2, job.id)
        with pytest.raises(QueueError, match="you have no job #999"):
            await presets.resolve_train_options(1, like=999)

        await presets.save(1, "base", {"epochs": 3, "repeats": 2, "network_dim": 4, "batch_size": 2})
        got = await presets.resolve_train_options(
            1, preset="base", like=f"#{job.id}", advanced_text="epochs=4, keep_tokens=2",
            explicit={"epochs": 5, "repeats": None, "clip_skip": 1},
        )  # fmt: skip
        # preset < like < advanced < explicit
        assert got["network_dim"] == 8 and got["repeats"] == 1  # like beats the preset
        assert got["batch_size"] == 2  # only the preset sets it
        assert got["keep_tokens"] == 2 and got["epochs"] == 5 and got["clip_skip"] == 1
        assert "seed" not in got
        assert (await presets.resolve_train_options(1, like=job.id, keep_seed=True))["seed"] == stored["seed"]
        assert await presets.resolve_train_options(1, advanced_text="epochs=4", explicit={}) == {"epochs": 4}
        # the merged result is what QueueService accepts
        estimate = await s.queue.estimate_training(1, "chara", got)
        assert estimate.epochs == 5 and estimate.batch_size == 2

    run(tmp_path, body)


def test_resolve_reports_every_layers_problems_and_the_rules_between_layers(tmp_path):
    async def body(s, presets: PresetService):
        with pytest.raises(QueueError, match="you have no preset named 'nope'"):
            await presets.resolve_train_options(1, preset="nope")
        with pytest.raises(OptionsError) as info:
            await presets.resolve_train_options(
                1, advanced_text="epoch=3", explicit={"repeats": 0, "output_name": "x"}
            )
        assert len(info.value.problems) == 3, info.value.problems
        await presets.save(1, "prodigy", "optimizer=Prodigy")
        with pytest.raises(OptionsError, match="Prodigy finds its own step size"):
            await presets.resolve_train_options(1, preset="prodigy", explicit={"learning_rate": 1e-4})
        for like in ("abc", "1" * 30, "0", str(2**63)):  # never an OverflowError from SQLite
            with pytest.raises(QueueError, match=f"you have no job #{like}"):
                await presets.resolve_train_options(1, like=like)

    run(tmp_path, body)
