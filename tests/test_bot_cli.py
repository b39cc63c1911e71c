"""The operator CLI: ``python -m bot dataset ...`` over the same services, one clear line on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .test_dataset_service import picture


def bot(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORABOT_DATA_DIR": str(tmp_path / "data")}
    env.pop("LORABOT_DATABASE", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_dataset_commands_round_trip(tmp_path):
    new = bot(tmp_path, "dataset", "new", "chara", "--user", "7", "--base-model", "tiny-sd15", "--trigger", "tkchar",
              "--crop-mode", "center", "--crop-size", "512x512")  # fmt: skip
    assert new.returncode == 0, new.stderr
    assert "created dataset 'chara'" in new.stdout
    (tmp_path / "a.png").write_bytes(picture(1))
    (tmp_path / "b.png").write_bytes(picture(2, "green"))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    add = bot(tmp_path, "dataset", "add", "chara", "--user", "7", "a.png", "b.png", "junk.png")
    assert add.returncode == 0, add.stderr  # ran, even though a file was skipped
    assert add.stdout.startswith("added 2, skipped 1") and "junk.png" in add.stdout

    tags = json.loads(bot(tmp_path, "dataset", "tags", "chara", "--user", "7", "--json").stdout)
    assert tags["tags"][0] == {"tag": "tkchar", "count": 2, "share": 1.0}
    assert len(tags["images"]) == 2
    table = bot(tmp_path, "dataset", "tags", "chara", "--user", "7").stdout
    assert table.splitlines()[0].split() == ["tag", "images", "share"]

    removed = bot(tmp_path, "dataset", "remove-tags", "chara", "--user", "7", "simple_background")
    assert removed.returncode == 0 and "2 captions changed" in removed.stdout
    export = bot(tmp_path, "dataset", "export", "chara", "--user", "7", "--out", str(tmp_path / "out"))
    assert export.returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "0001.png",
        "0001.txt",
        "0002.png",
        "0002.txt",
    ]
    assert "simple_background" not in (tmp_path / "out" / "0001.txt").read_text()
    assert (tmp_path / "data" / "lorabot.sqlite3").is_file()


def test_errors_are_one_line_without_a_traceback(tmp_path):
    missing = bot(tmp_path, "dataset", "tags", "nope", "--user", "7")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: user 7 has no dataset named 'nope' (list them with 'python -m bot dataset list --user 7')"
    ]
    bad_model = bot(tmp_path, "dataset", "new", "x", "--user", "7", "--base-model", "sd9", "--trigger", "t")
    assert bad_model.returncode == 1 and "unknown base model 'sd9'" in bad_model.stderr
    assert "Traceback" not in bad_model.stderr
    bad_arg = bot(
        tmp_path, "dataset", "new", "x", "--user", "seven", "--base-model", "tiny-sd15", "--trigger", "t"
    )
    assert bad_arg.returncode == 2 and "'seven' is not a Discord user id" in bad_arg.stderr
    assert len(bad_arg.stderr.strip().splitlines()) == 1
    no_file = bot(
        tmp_path, "dataset", "new", "x", "--user", "7", "--base-model", "tiny-sd15", "--trigger", "t"
    )
    assert no_file.returncode == 0
    unreadable = bot(tmp_path, "dataset", "add", "x", "--user", "7", "missing.png")
    assert unreadable.returncode == 1 and unreadable.stderr.startswith("error: cannot read missing.png")
    env_bad = subprocess.run(
        [sys.executable, "-m", "bot", "dataset", "list", "--user", "1"], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "LORABOT_MAX_PIXELS": "lots"}, timeout=120,
    )  # fmt: skip
    assert env_bad.returncode == 1 and env_bad.stderr.startswith("error: settings: LORABOT_MAX_PIXELS")


def test_remove_images_and_oversized_files(tmp_path):
    assert (
        bot(
            tmp_path, "dataset", "new", "d", "--user", "1", "--base-model", "tiny-sd15", "--trigger", "t"
        ).returncode
        == 0
    )
    (tmp_path / "a.png").write_bytes(picture(1))
    (tmp_path / "big.png").write_bytes(b"\0" * (2 * 2**20))
    env_limit = {"LORABOT_MAX_FILE_MB": "1"}
    add = subprocess.run(
        [sys.executable, "-m", "bot", "dataset", "add", "d", "--user", "1", "a.png", "big.png"], capture_output=True,
        text=True, cwd=tmp_path, env={**os.environ, "LORABOT_DATA_DIR": str(tmp_path / "data"), **env_limit},
    )  # fmt: skip
    assert (
        add.returncode == 0
        and add.stdout.startswith("added 1, skipped 1")
        and "over the 1 MB limit" in add.stdout
    )
    image_id = json.loads(bot(tmp_path, "dataset", "tags", "d", "--user", "1", "--json").stdout)["images"][0][
        "id"
    ]
    assert bot(tmp_path, "dataset", "remove-images", "d", "--user", "1", "999").returncode == 1
    removed = bot(tmp_path, "dataset", "remove-images", "d", "--user", "1", str(image_id))
    assert removed.returncode == 0 and "removed 1 images" in removed.stdout
    bad_out = bot(tmp_path, "dataset", "export", "d", "--user", "1", "--out", str(tmp_path / "a.png"))
    assert bad_out.returncode == 1 and len(bad_out.stderr.strip().splitlines()) == 1


def test_env_example_lists_every_setting_and_loads():
    """.env.example documents every setting, and its values are valid settings."""
    from bot.settings import Settings, load_settings

    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    names = {line.split("=", 1)[0].lstrip("# ").strip() for line in text.splitlines() if "=" in line}
    missing = [f for f in Settings.model_fields if f"LORABOT_{f.upper()}" not in names]
    assert not missing
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if value:
                values[key.removeprefix("LORABOT_").lower()] = value
    parsed = {k: json.loads(v) if v[:1] in "[{" else v for k, v in values.items()}
    assert load_settings(**parsed).daily_stamina == 150
