"""The words on a grid (weight, seed, epoch) in the member's language: the contract's templates,
the grid jobs the bot builds for a Japanese member, glyphs drawn (not boxes) with a Japanese font,
and the English labels where no installed font has the glyphs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from bot.queue.generation import compare_title, grid_labels
from bot.queue.options import OPTIONS, OptionsError, parse_option_lines
from bot.queue.record import generation_job, training_job
from db import jobs as repo
from tests.bot_harness import bot_world, first_id
from tests.conftest import base_job, train_in_process, write_dataset
from tests.queue_helpers import make_dataset, queue_settings
from tests.test_compare_epochs import run as run_services
from tests.test_compare_epochs import trained_job
from tests.test_generate_loras import add_lora
from trainer import fonts, render
from trainer.contract import GenerateJob, JobError, TrainJob, parse_job
from trainer.contract.families import refused_options
from trainer.generate import grid_labels as drawn_labels
from trainer.preview import preview_labels
from trainer.state import job_fingerprint

GEN = {"base_model": "m", "output_dir": "o", "prompt": "p"}
ROWS = [{"path": "a.safetensors", "label": "epoch 1"}, {"path": "b.safetensors", "label": "epoch 2"}]
JA = {"weight": "重み {weight}", "seed": "シード {seed}"}
MODELS = {key: Path(f"/nonexistent/{key}") for key in ("tiny-sd15",)}
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def problems(**options) -> list[str]:
    with pytest.raises(JobError) as info:
        parse_job({**GEN, **options}, GenerateJob)
    return info.value.problems


# The contract ----------------------------------------------------------------------------------


def test_grid_labels_are_checked_templates_with_english_defaults():
    assert parse_job(dict(GEN), GenerateJob).grid_labels is None  # English: as before
    job = parse_job({**GEN, "count": 2, "grid_labels": JA}, GenerateJob)
    assert (job.grid_labels.weight, job.grid_labels.seed, job.grid_labels.rows) == (*JA.values(), None)
    assert parse_job({**GEN, "grid_labels": {}}, GenerateJob).grid_labels.weight == "weight {weight}"
    for labels, expected in [
        ({"weight": "重み"}, "must contain {weight}"),
        ({"seed": "seed {weight}"}, "must contain {seed}"),
        ({"weight": "{weight} {seed}"}, "no braces"),
        ({"weight": "{weight.__class__}"}, "must contain {weight}"),
        ({"weight": "{weight}\n"}, "one line"),
        ({"weight": "w" * 41 + "{weight}"}, "at most 40"),
        ({"epoch": "エポック {seed}"}, "must contain {epoch}"),
        ({"title": "エポック"}, "grid_labels.title"),  # only the known keys
    ]:
        assert any(expected in p for p in problems(grid_labels=labels)), (
            labels,
            problems(grid_labels=labels),
        )
    rows = {**JA, "rows": ["エポック 1", "エポック 2"]}
    job = parse_job(
        {**GEN, "compare_weights": [1.0], "compare_loras": ROWS, "grid_labels": rows}, GenerateJob
    )
    assert job.grid_labels.rows == ["エポック 1", "エポック 2"]
    assert problems(compare_weights=[1.0], compare_loras=ROWS, grid_labels={"rows": ["エポック 1"]}) == [
        "grid_labels.rows names each row of compare_loras, in order"
    ]
    assert any("no braces" in p for p in problems(compare_weights=[1.0], compare_loras=ROWS[:1],
                                                  grid_labels={"rows": ["{x}"]}))  # fmt: skip


# The bot: grid jobs in the member's language ---------------------------------------------------


def test_the_labels_come_from_the_catalog_in_the_members_language():
    assert grid_labels("en-US") == grid_labels(None) == grid_labels("fr") == {}
    assert grid_labels("ja") == {"grid_labels": JA}
    assert grid_labels("ja", [2, 4]) == {"grid_labels": {**JA, "rows": ["エポック 2", "エポック 4"]}}


def test_a_japanese_members_generate_grid_carries_japanese_labels(tmp_path):
    settings = queue_settings(tmp_path, MODELS, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            await add_lora(w, w.alice.user_id, "chara")
            jobs = {}
            for name, options, locale in [
                ("ja weights", {"compare_weights": "0.5, 1"}, "ja"),
                ("ja seeds", {"count": 2}, "ja"),
                ("ja single", {}, "ja"),
                ("en weights", {"compare_weights": "0.5, 1"}, "en-US"),
            ]:
                inter = await w.slash(
                    w.alice, "generate", {"prompt": "tk", "lora": "chara", **options}, locale=locale
                )
                number = re.search(r"\*\*#(\d+)\*\*", (await w.reply(inter)).content)
                job = await repo.get_job(w.services.conn, int(number.group(1)))
                jobs[name] = generation_job(w.services.queue.registry, job, "cpu")
                await w.services.queue.cancel(w.alice.user_id, job.id)  # room under the job limit
            return jobs

    jobs = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert jobs["ja weights"]["grid_labels"] == jobs["ja seeds"]["grid_labels"] == JA
    assert "grid_labels" not in jobs["ja single"] and "grid_labels" not in jobs["en weights"]
    job = parse_job(jobs["ja weights"], GenerateJob)  # the trainer's contract takes them
    assert drawn_labels(job, 7, 1)[0] == ["重み 0.5", "重み 1"] or not fonts.drawable(["重み"])


def test_a_japanese_members_epoch_compare_names_rows_and_columns_in_japanese(tmp_path):
    async def body(s):
        job = await trained_job(s, tmp_path)
        ja = await s.generation.compare_epochs(1, job.id, [2, 1], [0.6, 1.0], locale="ja")
        await s.queue.cancel(1, ja.id)
        en = await s.generation.compare_epochs(1, job.id, [1, 2], [1.0], locale="en-GB")
        assert ja.title == f"比較 #{job.id} エポック 1,2 × 重み 0.6/1"  # /queue lists it
        assert en.title == f"compare #{job.id} epochs 1,2 x 1"
        return generation_job(s.queue.registry, ja, "cpu"), generation_job(s.queue.registry, en, "cpu")

    ja, en = run_services(tmp_path, body)
    assert ja["grid_labels"] == {**JA, "rows": ["エポック 1", "エポック 2"]}
    assert [row["label"] for row in ja["compare_loras"]] == ["epoch 1", "epoch 2"]  # kept: the fallback
    assert "grid_labels" not in en
    job = parse_job(ja, GenerateJob)
    if fonts.drawable(["重みエポック"]):
        assert drawn_labels(job, 5, 2) == (["重み 0.6", "重み 1"], ["エポック 1", "エポック 2"])


# The trainer: glyphs, not boxes; English where no font has them ---------------------------------


def _label_strip(label: str) -> Image.Image:
    """The column-label strip of a one-cell grid labelled ``label`` (no title)."""
    grid = render.make_grid([[Image.new("RGB", (64, 64), "gray")]], [label])
    return grid.crop((0, 0, grid.width, grid.height - 192))


def _ink(strip: Image.Image) -> Image.Image:
    return strip.convert("L").point(lambda v: 255 if v < 128 else 0).convert("1")


def _unlike(a: Image.Image, b: Image.Image) -> float:
    """The share of the two strips' ink that only one of them has."""
    a, b = _ink(a), _ink(b)
    ink = ImageChops.logical_or(a, b).histogram()[255]
    return ImageChops.logical_xor(a, b).histogram()[255] / max(1, ink)


def _needs_japanese_font() -> None:
    if not fonts.drawable(["重みシード"]):
        pytest.skip("no Japanese font installed (apt-get install fonts-ipafont-gothic; .ci/run does)")


def test_a_japanese_label_is_drawn_in_glyphs_not_boxes():
    _needs_japanese_font()
    assert fonts.font_for(["重み 0.8"]) == fonts.cjk_font_file()
    assert fonts.font_for(["weight 0.8"]) is None  # English keeps Pillow's default font
    kanji, tofu = _label_strip("重み シード"), _label_strip("\ue000\ue000 \ue000\ue000\ue000")
    assert _ink(kanji).histogram()[255] > 50
    assert _unlike(kanji, tofu) > 0.5
    # each character its own shape, where boxes are all alike
    assert _unlike(_label_strip("重"), _label_strip("み")) > 0.5
    assert _unlike(_label_strip("\ue000"), _label_strip("\ue001")) == 0


def test_without_a_japanese_font_the_grid_says_it_in_english(monkeypatch):
    job = parse_job({**GEN, "count": 2, "grid_labels": JA}, GenerateJob)
    rows_job = parse_job(
        {**GEN, "compare_weights": [0.5, 1.0], "compare_loras": ROWS,
         "grid_labels": {**JA, "rows": ["エポック 1", "エポック 2"]}},
        GenerateJob,
    )  # fmt: skip
    for font in [None, str(DEJAVU) if DEJAVU.is_file() else None]:  # none; one without Japanese glyphs
        monkeypatch.setattr(fonts, "cjk_font_file", lambda font=font: font)
        assert not fonts.drawable(["重み"]) and fonts.font_for(["重み"]) is False
        assert drawn_labels(job, 7, 2) == (["seed 7", "seed 8"], None)
        assert drawn_labels(rows_job, 7, 2) == (["weight 0.5", "weight 1"], ["epoch 1", "epoch 2"])
        _label_strip("重み 0.8")  # drawn anyway (as boxes) when asked: never an error
    monkeypatch.undo()
    _needs_japanese_font()
    assert drawn_labels(job, 7, 2) == (["シード 7", "シード 8"], None)
    assert drawn_labels(rows_job, 7, 2) == (["重み 0.5", "重み 1"], ["エポック 1", "エポック 2"])


def test_a_font_is_found_by_fontconfig_or_at_a_known_path(monkeypatch):
    fonts.cjk_font_file.cache_clear()
    monkeypatch.setattr(fonts.shutil, "which", lambda name: None)  # no fontconfig
    monkeypatch.setattr(fonts, "CJK_FONT_PATHS", ("/nonexistent/a.ttf", str(DEJAVU)))
    assert fonts.cjk_font_file() == (str(DEJAVU) if DEJAVU.is_file() else None)
    fonts.cjk_font_file.cache_clear()
    monkeypatch.setattr(fonts, "CJK_FONT_PATHS", ("/nonexistent/a.ttf",))
    assert fonts.cjk_font_file() is None
    fonts.cjk_font_file.cache_clear()
    monkeypatch.undo()
    fonts.cjk_font_file.cache_clear()


def test_the_trainers_grid_file_carries_the_members_words(tmp_path):
    from trainer.generate import _save_grid

    _needs_japanese_font()
    cells = [[Image.new("RGB", (64, 64), c) for c in ("red", "blue")] for _ in range(2)]
    options = {**GEN, "compare_weights": [0.5, 1.0], "compare_loras": ROWS, "prompt": "tkchar"}
    ja = {**JA, "rows": ["エポック 1", "エポック 2"]}
    drawn = {}
    for name, labels in [("en", None), ("ja", ja)]:
        job = parse_job({**options, "output_dir": str(tmp_path / name), "grid_labels": labels}, GenerateJob)
        (tmp_path / name).mkdir()
        drawn[name] = Image.open(_save_grid(job, cells, 7, tmp_path / name)).convert("RGB")
    expected = render.make_grid(cells, ["重み 0.5", "重み 1"], ["エポック 1", "エポック 2"], title="tkchar")
    assert ImageChops.difference(drawn["ja"], expected).getbbox() is None
    assert drawn["en"].size != drawn["ja"].size or ImageChops.difference(drawn["en"], drawn["ja"]).getbbox()


# Training jobs: the per-epoch preview grids -------------------------------------------------------

JA_PREVIEW = {**JA, "epoch": "エポック {epoch}"}


def test_a_japanese_members_training_job_carries_japanese_preview_labels(tmp_path):
    """/train, then Start, from a Discord in Japanese: the trainer's job file has the preview
    grids' words (kept in the job's spec, so a resumed job has them too); in English, none."""
    settings = queue_settings(tmp_path, MODELS, command_cooldown_s=0)

    async def scenario():
        async with bot_world(settings) as w:
            await make_dataset(w.services, owner=w.alice.user_id, images=3)
            files = {}
            for locale, start in [("ja", "開始"), ("en-US", "Start")]:
                queued = "キューに追加しました" if locale == "ja" else "Queued"
                estimate = await w.reply(
                    await w.slash(w.alice, "train", {"dataset": "chara", "epochs": 1}, locale=locale)
                )
                await w.click(estimate, w.alice, first_id(estimate, label=start), locale=locale)
                await w.server.wait_for_message(lambda m, e=estimate, q=queued: m is e and q in m.content, 30)
                number = re.search(r"#(\d+)", estimate.content)
                job = await repo.get_job(w.services.conn, int(number.group(1)))
                files[locale] = training_job(w.services.queue.registry, job, "cpu")
                assert "grid_labels" not in job.spec["options"]  # not a member's option
                await w.services.queue.cancel(w.alice.user_id, job.id)
            return files

    files = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert files["ja"]["grid_labels"] == JA_PREVIEW and "grid_labels" not in files["en-US"]
    assert (
        grid_labels("ja", preview=True) == {"grid_labels": JA_PREVIEW}
        and grid_labels("en", preview=True) == {}
    )
    assert "grid_labels" not in OPTIONS  # never listed as an option a member sets
    with pytest.raises(OptionsError):
        parse_option_lines("grid_labels=x")


def test_the_preview_words_leave_the_resume_fingerprint_alone(tmp_path):
    plain = parse_job({"dataset_dir": "d", "output_dir": "o", "base_model": "m"}, TrainJob)
    for labels in [JA_PREVIEW, {}]:
        labelled = parse_job({**plain.model_dump(by_alias=True), "grid_labels": labels}, TrainJob)
        assert job_fingerprint(labelled, 7) == job_fingerprint(plain, 7)
        assert job_fingerprint(labelled, 7, with_places=True) == job_fingerprint(plain, 7, with_places=True)
        assert not any("grid_labels" in p for p in refused_options("flux", labelled.changed_options()))


def test_preview_labels_in_the_members_words_or_english(monkeypatch):
    job = parse_job(
        {"dataset_dir": "d", "output_dir": "o", "base_model": "m", "grid_labels": JA_PREVIEW}, TrainJob
    )
    english = parse_job({"dataset_dir": "d", "output_dir": "o", "base_model": "m"}, TrainJob)
    assert preview_labels(english, 3) == (["weight 0.7", "weight 0.8", "weight 1"], "epoch 3")
    monkeypatch.setattr(fonts, "cjk_font_file", lambda: None)
    assert preview_labels(job, 3) == (["weight 0.7", "weight 0.8", "weight 1"], "epoch 3")
    monkeypatch.undo()
    _needs_japanese_font()
    assert preview_labels(job, 3) == (["重み 0.7", "重み 0.8", "重み 1"], "エポック 3")


def test_the_tiny_trainers_preview_grid_is_labelled_in_japanese(tiny_sd15, tmp_path):
    _needs_japanese_font()
    data = write_dataset(tmp_path / "dataset", count=2)
    grids = {}
    for name, labels in [("en", None), ("ja", JA_PREVIEW)]:
        job = base_job(tiny_sd15, data, tmp_path / name, previews=True, preview_steps=1,
                       preview_weights=[0.8], **({"grid_labels": labels} if labels else {}))  # fmt: skip
        events, code = train_in_process(job)
        assert code == 0, events
        [path] = [e["path"] for e in events if e["event"] == "preview_ready"]
        grids[name] = Image.open(path).convert("RGB")
    # the title and column-label strips above the one (square, enlarged) cell: Japanese glyphs where English was
    strip = {name: grid.crop((0, 0, grid.width, grid.height - grid.width)) for name, grid in grids.items()}
    assert strip["en"].size == strip["ja"].size
    assert _unlike(strip["en"], strip["ja"]) > 0.3
    assert _ink(strip["ja"]).histogram()[255] > 50


# The compare job's title --------------------------------------------------------------------------


def test_the_compare_jobs_title_is_in_the_members_language():
    assert compare_title("ja", 7, [1, 2], [0.6, 1.0]) == "比較 #7 エポック 1,2 × 重み 0.6/1"
    assert (
        compare_title("en-GB", 7, [1, 2], [1.0])
        == compare_title(None, 7, [1, 2], [1.0])
        == "compare #7 epochs 1,2 x 1"
    )
    many = compare_title(
        "ja", 12345, list(range(100, 108)), [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.25, 1.5]
    )
    assert len(many) == 80 and many.startswith("比較 #12345 エポック 100,101")
