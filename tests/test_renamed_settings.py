"""The old per-family rate names (``LORABOT_STEP_COST_SDXL``, ...) are refused with the new JSON
form wherever pydantic-settings would read them: any case, ``export`` lines of the env file, and
the env file ``python -m bot init`` and ``check`` are pointed at."""

from __future__ import annotations

import os

import pytest

from bot.settings import Settings, SettingsError, load_settings, renamed_settings
from tests.test_cli_admin import cli

NEW_STEP = "LORABOT_STEP_COSTS='{\"sdxl\": ...}'"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty working folder and no LORABOT_* settings in any case but the data folder."""
    for name in list(os.environ):
        if name.upper().startswith("LORABOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(Settings.model_config, "env_file", ".env")  # the bot's own: this folder's
    monkeypatch.setenv("LORABOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_a_lowercase_name_in_the_environment_is_refused(home, monkeypatch):
    monkeypatch.setenv("lorabot_step_cost_sdxl", "0.3")
    with pytest.raises(SettingsError, match=f"lorabot_step_cost_sdxl is now {NEW_STEP}"):
        load_settings()


def test_export_lines_and_any_case_in_the_env_file_are_refused(home):
    (home / ".env").write_text(
        "# LORABOT_STEP_COST_SD15=0.2 (a comment is not a setting)\n"
        "export LORABOT_STEP_COST_SDXL=0.3\n"
        '  export lorabot_image_cost_flux = "5"\n'
        "Lorabot_Steps_Per_S_Sd15=2\n"
    )
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).split("; ") == [
        "LORABOT_STEP_COST_SDXL is now LORABOT_STEP_COSTS='{\"sdxl\": ...}' (JSON, one entry per family)",
        "Lorabot_Steps_Per_S_Sd15 is now LORABOT_STEPS_PER_S='{\"sd15\": ...}' (JSON, one entry per family)",
        "lorabot_image_cost_flux is now LORABOT_IMAGE_COSTS='{\"flux\": ...}' (JSON, one entry per family)",
    ]


def test_the_env_file_given_is_the_one_read(home):
    conf = home / "conf" / "bot.env"
    conf.parent.mkdir()
    conf.write_text("export LORABOT_STEP_COST_SDXL=0.3\n")
    with pytest.raises(SettingsError, match=f"LORABOT_STEP_COST_SDXL is now {NEW_STEP}"):
        load_settings(_env_file=conf)
    assert renamed_settings([home / "missing.env", conf]) != []  # several files, as pydantic takes
    assert load_settings().step_cost("sdxl") == 0.2243  # the .env of this folder: there is none
    assert load_settings(_env_file=None).step_costs == {}
    (home / ".env").write_text("LORABOT_STEP_COST_SDXL=0.3\n")
    assert load_settings(_env_file=None).step_costs == {}  # no env file read, none refused


def test_init_refuses_an_existing_env_file_with_an_old_name(home, capsys):
    conf = home / "conf" / "bot.env"
    conf.parent.mkdir()
    conf.write_text("export lorabot_step_cost_sdxl=0.3\n")
    code, _, err = cli(capsys, "init", "--env-file", str(conf))
    assert code != 0 and f"lorabot_step_cost_sdxl is now {NEW_STEP}" in err
    assert not (home / "data").exists()  # refused before making anything


def test_check_fails_on_an_old_name_in_its_env_file(home, capsys):
    conf = home / "bot.env"
    assert cli(capsys, "init", "--env-file", str(conf))[0] == 0
    conf.write_text(conf.read_text() + "export LORABOT_IMAGE_COST_SDXL=3\n")
    code, out, _ = cli(capsys, "check", "--env-file", str(conf))
    assert code == 1
    assert "FAIL settings: LORABOT_IMAGE_COST_SDXL is now LORABOT_IMAGE_COSTS='{\"sdxl\": ...}'" in out
