"""The operator's set-up commands: ``python -m bot init | models | check | dataset import``."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from bot.cli.admin import REGISTRY_TEMPLATE
from bot.cli.models import toml_string
from bot.registry import tomllib
from bot.services import open_services
from bot.settings import load_settings

from .queue_helpers import make_dataset
from .test_dataset_service import picture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty working folder and no LORABOT_* settings but the data folder."""
    for name in list(os.environ):
        if name.startswith("LORABOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORABOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# init ------------------------------------------------------------------------------------------


def test_init_creates_everything_once_and_never_overwrites_env(home, capsys, monkeypatch):
    monkeypatch.delenv("LORABOT_DATA_DIR")
    code, out, err = cli(capsys, "init", "--data-dir", "srv/data", "--registry", "models.toml")
    assert code == 0, err
    data = home / "srv" / "data"
    assert all((data / name).is_dir() for name in ("datasets", "jobs", "library", "models", "logs"))
    assert (data / "lorabot.sqlite3").is_file() and "created the database" in out
    env = (home / ".env").read_text()
    assert (
        f"\nLORABOT_DATA_DIR={data}\n" in env and f"\nLORABOT_MODEL_REGISTRY={home / 'models.toml'}\n" in env
    )
    assert env.count("LORABOT_DATA_DIR=") == 1 and "LORABOT_TIERS={}" in env  # the example, filled in
    assert (home / "models.toml").read_text() == REGISTRY_TEMPLATE and "next:" in out
    settings = load_settings(_env_file=home / ".env")
    assert settings.data_dir == data and settings.model_registry == home / "models.toml"

    (home / ".env").write_text(env + "# mine\n")
    code, out, _ = cli(capsys, "init", "--data-dir", "srv/data", "--registry", "models.toml")
    assert code == 0 and "kept" in out and "is current (schema version" in out
    assert (home / ".env").read_text() == env + "# mine\n"  # never overwritten
    assert (home / "models.toml").read_text() == REGISTRY_TEMPLATE


def test_registry_template_examples_are_valid_toml():
    uncommented = re.sub(r"^# (\[|\w+ = )", r"\1", REGISTRY_TEMPLATE, flags=re.MULTILINE)
    models = tomllib.loads(uncommented)["models"]
    assert set(models) == {"pony-v6", "anything-v5", "sdxl-base"}
    assert models["sdxl-base"] == {"source": "stabilityai/stable-diffusion-xl-base-1.0", "family": "sdxl",
                                   "label": "SDXL 1.0 base"}  # fmt: skip
    assert models["pony-v6"]["source"].endswith(".safetensors") and "config" in models["pony-v6"]


# models ----------------------------------------------------------------------------------------


def test_toml_string_round_trips_anything():
    for text in [
        "plain",
        'quote " and \\ back\\slash',
        "é ✓ 日本 😀",
        "tab\tnew\nline \x7f \x01",
        "C:\\models\\x",
    ]:
        assert tomllib.loads(f"v = {toml_string(text)}\n")["v"] == text


def test_models_add_list_remove(home, capsys, monkeypatch):
    registry = home / "conf" / "models.toml"
    monkeypatch.setenv("LORABOT_MODEL_REGISTRY", str(registry))
    weights = home / "dir é" / "ck\\pt ✓.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    label = 'Ünïcode "quoted" \\ 😀'
    code, out, err = cli(
        capsys, "models", "add", "hub-xl", "stabilityai/sdxl", "--family", "sdxl", "--label", label
    )
    assert code == 0, err
    assert "hub (downloaded on first use)" in out and registry.is_file()  # created on first add
    code, out, err = cli(capsys, "models", "add", "local_1", str(weights), "--family", "sd15")
    assert code == 0, err
    models = tomllib.loads(registry.read_text(encoding="utf-8"))["models"]
    assert models == {
        "hub-xl": {"source": "stabilityai/sdxl", "family": "sdxl", "label": label},
        "local_1": {"source": str(weights), "family": "sd15"},
    }

    code, out, _ = cli(capsys, "models", "list")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["key", "family", "source", "label"]
    assert "hub (downloaded on first use)" in out and "yes: file" in out and label in out

    before = registry.read_bytes()
    for args, message in (
        (["hub-xl", "other/model", "--family", "sd15"], "already has a model 'hub-xl'"),
        (["bad.key", "other/model", "--family", "sd15"], "is not a model key"),
        (["bad key", "other/model", "--family", "sd15"], "is not a model key"),
        (["missing", str(home / "nope.safetensors")], "does not exist"),
        (["hubby", "other/model"], "give its --family"),
        (["notamodel", str(weights)], "cannot read the family"),  # no --family: read from the file
    ):
        code, _, err = cli(capsys, "models", "add", *args)
        assert code == 1 and message in one_error(err), (args, err)
        assert registry.read_bytes() == before, args

    code, out, _ = cli(capsys, "models", "remove", "hub-xl")
    assert code == 0 and "removed 'hub-xl'" in out
    assert set(tomllib.loads(registry.read_text(encoding="utf-8"))["models"]) == {"local_1"}
    code, _, err = cli(capsys, "models", "remove", "hub-xl")
    assert code == 1 and "no model 'hub-xl'" in one_error(err)
    after = registry.read_bytes()
    code, _, err = cli(capsys, "models", "remove", "local_1")  # the last one: the registry would not load
    assert code == 1 and "the only model" in one_error(err) and registry.read_bytes() == after


def test_models_add_needs_a_registry_setting(home, capsys):
    code, _, err = cli(capsys, "models", "add", "x", "a/b", "--family", "sd15")
    assert code == 1 and "LORABOT_MODEL_REGISTRY is not set" in one_error(err)
    code, out, _ = cli(capsys, "models", "list")
    assert code == 0 and "tiny-sd15" in out and "not built yet (built on first use)" in out


# check -----------------------------------------------------------------------------------------


def test_check_passes_on_a_fresh_init(home, capsys):
    assert cli(capsys, "init")[0] == 0
    code, out, _ = cli(capsys, "check")
    assert code == 0, out
    assert out.splitlines()[-1] == "all checks passed"
    marks = [line.split()[0] for line in out.splitlines()[:-1]]
    assert set(marks) <= {"ok", "WARN"} and marks.count("ok") >= 8
    for what in ("settings load", "data folder", "database", "model tiny-sd15", "tagger tiny", "device cpu",
                 "discord token", "http bind", "trainer command"):  # fmt: skip
        assert what in out, what


def test_check_fails_with_a_clear_line_each(home, capsys, monkeypatch):
    assert cli(capsys, "init")[0] == 0
    (home / "models.toml").write_text("[models.x\nsource = 1\n")
    monkeypatch.setenv("LORABOT_MODEL_REGISTRY", str(home / "models.toml"))
    monkeypatch.setenv("LORABOT_TAGGER", str(home / "no-tagger"))
    monkeypatch.setenv("LORABOT_DEVICES", '["cpu", "99"]')
    monkeypatch.setenv("LORABOT_TRAINER_COMMAND", f"{sys.executable} -c 'import sys; sys.exit(3)'")
    code, out, _ = cli(capsys, "check")
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 4 and out.splitlines()[-1] == "4 checks failed"
    assert "model registry" in failed[0] and "models.toml" in failed[0]
    assert "tagger" in failed[1] and "does not exist" in failed[1]
    assert "device 99" in failed[2]
    assert "trainer command" in failed[3] and "exited 3" in failed[3]


def test_check_reports_bad_settings_and_a_missing_database(home, capsys, monkeypatch):
    monkeypatch.setenv("LORABOT_MAX_PIXELS", "lots")
    monkeypatch.setenv("LORABOT_HTTP_BIND", "nowhere")
    code, out, _ = cli(capsys, "check")
    assert code == 1 and out.count("FAIL settings: ") == 2 and "LORABOT_MAX_PIXELS" in out
    monkeypatch.delenv("LORABOT_MAX_PIXELS")
    monkeypatch.delenv("LORABOT_HTTP_BIND")
    code, out, _ = cli(capsys, "check")
    assert code == 1 and "FAIL data folder" in out and "run 'python -m bot init'" in out


# dataset import --------------------------------------------------------------------------------


def read_export(folder: Path) -> dict[str, object]:
    """file name -> caption text, or the image's pixels."""
    return {p.name: p.read_text() if p.suffix == ".txt" else Image.open(p).convert("RGB").tobytes()
            for p in sorted(folder.iterdir())}  # fmt: skip


def test_export_then_import_round_trips(home, capsys):
    async def build() -> None:
        async with open_services(load_settings()) as services:
            await make_dataset(services, owner=1, name="chara", images=3)

    asyncio.run(build())
    assert cli(capsys, "dataset", "export", "chara", "--user", "1", "--out", "exp")[0] == 0
    args = ["--user", "2", "--base-model", "tiny-sd15", "--trigger", "tkchar", "--crop-mode", "center",
            "--crop-size", "256"]  # fmt: skip
    code, out, err = cli(capsys, "dataset", "import", "copy", *args, "exp")
    assert code == 0, err
    assert "created dataset 'copy'" in out and "added 3, skipped 0" in out
    assert cli(capsys, "dataset", "export", "copy", "--user", "2", "--out", "again")[0] == 0
    assert read_export(home / "again") == read_export(home / "exp")

    with open(home / "exp.zip", "wb") as fh:  # a zip of it, and a caption without the trigger word
        import zipfile

        with zipfile.ZipFile(fh, "w") as archive:
            archive.writestr("a/One.PNG", (home / "exp" / "0001.png").read_bytes())
            archive.writestr("a/one.txt", "solo, red_theme\n")
    code, out, err = cli(capsys, "dataset", "import", "zipped", *args, "exp.zip")
    assert code == 0 and "added 1" in out, err
    assert "] One.PNG: tkchar, solo, red_theme" in cli(capsys, "dataset", "tags", "zipped", "--user", "2",
                                                        "--captions")[1]  # fmt: skip


def test_import_that_fails_leaves_no_dataset(home, capsys, monkeypatch):
    (home / "junk").mkdir()
    (home / "junk" / "a.png").write_bytes(b"not an image")
    (home / "junk" / "notes.md").write_text("hi")
    args = ["--user", "3", "--base-model", "tiny-sd15", "--trigger", "t"]
    code, out, err = cli(capsys, "dataset", "import", "d", *args, "junk")
    assert code == 1 and "was not kept" in err
    assert "skipped 2" in out and "notes.md: not an image or a .txt caption" in out
    assert "no datasets yet" in cli(capsys, "dataset", "list", "--user", "3")[1]
    (home / "pics").mkdir()
    (home / "pics" / "a.png").write_bytes(picture(1))  # no caption: the tagger runs, and it is missing
    monkeypatch.setenv("LORABOT_TAGGER", str(home / "no-tagger"))
    code, out, err = cli(capsys, "dataset", "import", "d", *args, "pics")
    assert code == 1 and "the tagger is not available" in one_error(err) and "created dataset 'd'" in out
    assert "no datasets yet" in cli(capsys, "dataset", "list", "--user", "3")[1]  # deleted again
    assert not any((home / "data" / "datasets").rglob("*.png"))
    code, _, err = cli(capsys, "dataset", "import", "d", *args, "missing-folder")
    assert code == 1 and "neither a folder nor a zip" in one_error(err)
    assert "no datasets yet" in cli(capsys, "dataset", "list", "--user", "3")[1]


def test_a_folder_is_packed_into_zips_under_the_upload_limits(tmp_path):
    from bot.cli.datasets import read_import
    from bot.datasets.images import Limits, expand_upload

    for i in range(6):
        (tmp_path / f"{i:04d}.png").write_bytes(picture(i, size=(128, 128)))
        (tmp_path / f"{i:04d}.TXT").write_text(f"tag{i}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(picture(9))
    (tmp_path / ".hidden.png").write_bytes(picture(8))
    limit = 3 * len(picture(0, size=(128, 128))) + 2**16
    limits = Limits(max_file_bytes=limit, max_zip_entries=4)
    files, left_out = read_import(tmp_path, limits)
    assert len(files) >= 3 and not left_out and all(len(data) <= limit for _, data in files)
    images = [img for name, data in files for img in expand_upload(name, data, limits)[0]]
    assert [(img.name, img.caption) for img in images] == [
        *[(f"{i:04d}.png", f"tag{i}") for i in range(6)],
        ("x.png", None),
    ]


def test_help_lists_every_group_with_examples(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "bot", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip
    top = run("--help")
    assert top.returncode == 0
    for group in (
        "init",
        "check",
        "models",
        "dataset",
        "stamina",
        "queue",
        "job",
        "estimate",
        "worker",
        "run",
    ):
        assert re.search(rf"^    {group}\s+\S", top.stdout, re.MULTILINE), group
    assert "README.md" in top.stdout
    for args in (["init"], ["check"], ["models", "list"], ["models", "add"], ["models", "remove"],
                 ["dataset", "import"]):  # fmt: skip
        page = run(*args, "--help")
        assert page.returncode == 0 and "example:\n  python -m bot " + " ".join(args) in page.stdout, args
    bad = run("models", "add", "k")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
