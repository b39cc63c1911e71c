"""``python -m bot demo`` end to end: the whole flow offline, its files, and the LoRA it downloads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from bot.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, int, str]:
    """The demo's folder, its exit status and what it printed."""
    import io

    out = tmp_path_factory.mktemp("demo") / "out"
    buf = io.StringIO()
    # an operator's settings (GPUs, guilds, a registry) must not reach the demo: it uses the defaults
    operator = {"LORABOT_DEVICES": '["0"]', "LORABOT_GUILD_IDS": "[123456789012345678]",
                "LORABOT_MODEL_REGISTRY": "/nonexistent/models.toml", "LORABOT_DAILY_STAMINA": "0"}  # fmt: skip
    with contextlib.redirect_stdout(buf), _environment(operator):
        status = asyncio.run(run_demo(str(out)))
    return out, status, buf.getvalue()


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_a_foreign_folder_or_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("not the demo's")
    assert asyncio.run(run_demo(str(tmp_path))) == 1
    assert "is not empty and not an earlier demo's folder" in capsys.readouterr().err
    assert asyncio.run(run_demo(str(tmp_path / "mine.txt"))) == 1
    assert (tmp_path / "mine.txt").read_text() == "not the demo's"


def _label_strip_has_text(path: Path) -> bool:
    """The white band above the cells (title and column labels) holds dark text pixels."""
    img = Image.open(path).convert("L")
    band = img.crop((0, 0, img.width, max(12, img.height // 6)))
    hist = band.histogram()
    white = sum(hist[241:]) / (band.width * band.height)
    dark = sum(hist[:80])
    return white > 0.5 and dark > 20


def test_demo_runs_the_flow_and_prints_it(demo):
    out, status, printed = demo
    assert status == 0, printed
    for step in ("/dataset new", "/upload", "/tags remove", "/train", "/epochs", "/generate"):
        assert step in printed
    assert re.search(r"step \d+/14, epoch 2/2", printed)
    assert "downloads/mascot-e02.safetensors" in printed and "transcript.html" in printed


def test_preview_and_generated_grids_are_labelled_pngs(demo):
    out = demo[0]
    previews = sorted((out / "downloads").glob("preview-*.png"))
    assert len(previews) == 2
    for path in [*previews, *(out / "downloads").glob("generated-*.png")]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 3 * 64
        assert _label_strip_has_text(path), path


def test_downloaded_lora_loads_in_diffusers(demo):
    from trainer.generate import has_lora_layers
    from trainer.models import load_pipeline

    out = demo[0]
    (lora,) = (out / "downloads").glob("*.safetensors")
    pipe, _ = load_pipeline(str(out / "data" / "models" / "tiny-sd15"), "sd15")
    pipe.load_lora_weights(str(lora), adapter_name="demo")
    assert has_lora_layers(pipe)
    assert "demo" in pipe.get_list_adapters().get("unet", [])


def test_transcript_shows_the_commands_and_the_grids(demo):
    out = demo[0]
    page = (out / "transcript.html").read_text(encoding="utf-8")
    for command in ("/dataset new", "/upload", "/train", "/generate", "/epochs"):
        assert command in page
    assert "Only you can see this" in page and "Start" in page
    sources = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert all(not s.startswith(("http:", "https:", "/")) for s in sources)
    grids = [out / s for s in sources if s.endswith(("preview.png", "image-grid.png"))]
    assert len(grids) >= 3 and all(p.is_file() for p in grids)
    downloaded = {p.read_bytes() for p in (out / "downloads").glob("*.png")}
    assert downloaded <= {p.read_bytes() for p in grids}


@pytest.mark.slow
def test_the_demo_in_japanese_writes_a_japanese_transcript(tmp_path, capsys):
    """``--locale ja``: the member's Discord and the guild in Japanese; every step still passes (the
    script finds the bot's labels through the catalogs) and the transcript holds the bot's Japanese."""
    status = asyncio.run(run_demo(str(tmp_path / "out"), locale="ja"))
    printed = capsys.readouterr().out
    assert status == 0, printed[-3000:]
    page = (tmp_path / "out" / "transcript.html").read_text(encoding="utf-8")
    for said in (
        "データセット",
        "キャプション",
        "スタミナ",
        "エポック",
        "をダウンロード",
        "キューに追加しました",
    ):
        assert said in page, said
    assert "Queued **job" not in page and "is done: pick an epoch" not in page
    # the page's own words too (what Discord shows around the messages, what the member did)
    assert '<html lang="ja">' in page and "LoRA ボットのデモ" in page
    for said in ("これはあなただけに表示されています", "を使用しました", "をクリック", "/データセット 新規"):
        assert said in page, said
    for english in ("Only you can see this", "Dismiss message", "↱ used", "clicked “", "(edited)"):
        assert english not in page, english
