"""The operator's first run (issue 16): README's steps from an empty folder work at once, and every
trap on the way (a typo in a setting or the registry, a bare guild id, a negative user id, a dataset
name in another script, a member's wording) is refused or explained in one line that says what to do."""

from __future__ import annotations

import argparse
import asyncio
import re
import unicodedata

import pytest

from bot.cli import _parser
from bot.settings import SettingsError, load_settings

from . import test_renamed_settings
from .test_cli_admin import cli, one_error

home = test_renamed_settings.home  # the fixture: an empty working folder whose .env is read

#: A slash command (what a member types in Discord) or words meant for a member.
MEMBER_WORDING = re.compile(
    r"(^|[\s(])/(dataset|queue|epochs|tags|preset|train|upload|generate|lora|stamina)\b"
    r"|\byou\b|\byour\b|ask the operator|tell (the|an) operator",
    re.IGNORECASE,
)


# The README's first steps ----------------------------------------------------------------------


def test_init_then_check_stamina_queue_and_dataset_new_all_work_at_once(home, capsys):
    code, out, err = cli(capsys, "init", "--registry", "models.toml")
    assert code == 0, err
    assert "LORABOT_MODEL_REGISTRY=" in (home / ".env").read_text()  # the template is in use at once
    code, out, err = cli(capsys, "check")
    assert code == 0, out + err
    assert out.splitlines()[-1] == "all checks passed"
    assert "WARN model registry" in out and "lists no model yet" in out and "ok   model tiny-sd15" in out
    code, out, err = cli(capsys, "stamina", "show", "--user", "1234")
    assert code == 0 and "user 1234: 150 stamina" in out, err
    code, out, err = cli(capsys, "queue")
    assert code == 0 and "no jobs waiting or running" in out, err
    code, out, err = cli(capsys, "dataset", "new", "chara", "--user", "1234", "--base-model", "tiny-sd15",
                         "--trigger", "tkchar", "--crop-mode", "focus", "--crop-size", "512x512")  # fmt: skip
    assert code == 0 and "created dataset 'chara'" in out, err
    code, out, err = cli(capsys, "models", "list")
    assert code == 0 and "models.toml lists no model yet" in out and "tiny-sdxl" in out, err


def test_the_first_real_model_replaces_the_tiny_ones(home, capsys, tmp_path):
    assert cli(capsys, "init", "--registry", "models.toml")[0] == 0
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline", "unet": [], '
                                            '"text_encoder_2": []}')  # fmt: skip
    code, out, err = cli(capsys, "models", "add", "mine", str(model))  # no --family: read from the folder
    assert code == 0, err
    assert "the built-in tiny models are no longer offered" in out
    code, out, _ = cli(capsys, "models", "list")
    assert code == 0 and "tiny-sd15" not in out
    row = next(line for line in out.splitlines() if line.startswith("mine "))
    assert row.split()[1:3] == ["sdxl", "(detected)"]  # the detected family, not "auto"


# Settings: unknown names, bare lists -------------------------------------------------------------


def test_an_unknown_setting_is_refused_with_the_closest_name(home, capsys, monkeypatch):
    monkeypatch.setenv("LORABOT_GUILD_ID", "123")
    with pytest.raises(
        SettingsError, match=r"LORABOT_GUILD_ID is not a setting \(did you mean LORABOT_GUILD_IDS\?\)"
    ):
        load_settings()
    monkeypatch.delenv("LORABOT_GUILD_ID")
    (home / ".env").write_text("export lorabot_data_dri=/srv/data\nLORABOT_XYZZY=1\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).split("; ") == [
        "LORABOT_XYZZY is not a setting (no setting has that name): .env.example lists every setting",
        "lorabot_data_dri is not a setting (did you mean LORABOT_DATA_DIR?): .env.example lists every setting",
    ]
    code, out, _ = cli(capsys, "check")
    assert (
        code == 1
        and "FAIL settings: lorabot_data_dri is not a setting (did you mean LORABOT_DATA_DIR?)" in out
    )
    code, _, err = cli(capsys, "queue")
    assert code == 1 and "did you mean LORABOT_DATA_DIR?" in one_error(err)


def test_old_per_family_names_still_say_their_new_form(home, monkeypatch):
    monkeypatch.setenv("LORABOT_STEP_COST_SDXL", "0.3")
    with pytest.raises(SettingsError, match=r"LORABOT_STEP_COST_SDXL is now LORABOT_STEP_COSTS="):
        load_settings()


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("123", [123]),
        ("123,456", [123, 456]),
        (" 123 456 ", [123, 456]),
        ("[123, 456]", [123, 456]),
        ("[]", []),
    ],
)
def test_guild_ids_take_bare_ids_too(home, monkeypatch, value, ids):
    monkeypatch.setenv("LORABOT_GUILD_IDS", value)
    assert load_settings().guild_ids == ids


def test_bad_guild_ids_and_ambiguous_devices_are_explained(home, monkeypatch):
    monkeypatch.setenv("LORABOT_GUILD_IDS", "my-server")
    with pytest.raises(SettingsError, match=r"LORABOT_GUILD_IDS: 'my-server' is not guild ids: write \[1"):
        load_settings()
    monkeypatch.setenv("LORABOT_GUILD_IDS", "-5")
    with pytest.raises(SettingsError, match="LORABOT_GUILD_IDS"):
        load_settings()
    monkeypatch.delenv("LORABOT_GUILD_IDS")
    monkeypatch.setenv("LORABOT_DEVICES", "0")
    assert load_settings().devices == ["0"]
    monkeypatch.setenv("LORABOT_DEVICES", "0,1")
    with pytest.raises(
        SettingsError, match=r'ambiguous: write \["0", "1"\] for one worker per GPU, or \["0,1"\]'
    ):
        load_settings()


def test_a_bad_value_says_what_the_setting_takes_and_never_shows_a_secret(home, monkeypatch):
    monkeypatch.setenv("LORABOT_MAX_PIXELS", "lots")
    monkeypatch.setenv("LORABOT_LINK_SECRET", "hunter2")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "LORABOT_MAX_PIXELS: Input should be a valid integer" in text
    assert "(got 'lots') [width x height of one image, default 40000000]" in text
    assert "LORABOT_LINK_SECRET: use at least 16 characters" in text and "hunter2" not in text


# The registry file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[model.sd]\nsource = "a/b"\nfamily = "sd15"\n',
            "unknown table or key 'model' (did you mean 'models'?)",
        ),
        ('[models.sd]\nsource = "a/b"\nfamly = "sd15"\n', "unknown key 'famly' (did you mean 'family'?)"),
        (
            '[models.sd]\nsource = "a/b"\nfamily = "sdx1"\n',
            "family 'sdx1' is not a family (did you mean 'sdxl'?)",
        ),
        ('[models.sd]\nsorce = "a/b"\n', "unknown key 'sorce' (did you mean 'source'?)"),
        (
            '[models.sd]\nsource = "a/b"\n',
            "give family = one of sd15, sdxl, flux (a hub id), or fix the path",
        ),
        ("[models.sd\n", "is not valid TOML"),
    ],
)
def test_registry_mistakes_are_refused_with_what_was_meant(home, monkeypatch, text, message):
    from bot.registry import ModelRegistry, RegistryError

    (home / "models.toml").write_text(text)
    with pytest.raises(RegistryError) as info:
        ModelRegistry.load(home / "models.toml", home / "data")
    assert message in str(info.value)


def test_an_empty_or_missing_registry(home):
    from bot.registry import ModelRegistry, RegistryError, tiny_keys

    (home / "models.toml").write_text("# nothing yet\n")
    registry = ModelRegistry.load(home / "models.toml", home / "data")
    assert registry.built_in and registry.keys() == sorted(tiny_keys())
    with pytest.raises(RegistryError, match=r"does not exist: create it with 'python -m bot init --registry"):
        ModelRegistry.load(home / "nope.toml", home / "data")


# check: every failure says how to fix it ---------------------------------------------------------


def test_every_failed_check_says_how_to_fix_it(home, capsys, monkeypatch):
    assert cli(capsys, "init")[0] == 0
    (home / "models.toml").write_text('[models.gone]\nsource = "/nowhere/x.safetensors"\nfamily = "sd15"\n')
    (home / "tagger").mkdir()
    monkeypatch.setenv("LORABOT_MODEL_REGISTRY", str(home / "models.toml"))
    monkeypatch.setenv("LORABOT_TAGGER", str(home / "tagger"))
    monkeypatch.setenv("LORABOT_DEVICES", '["cpu", "99"]')
    monkeypatch.setenv("LORABOT_TRAINER_COMMAND", "/no/such/python -m trainer")
    code, out, _ = cli(capsys, "check")
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert code == 1 and len(failed) == 4, out
    fixes = (
        "python -m bot models remove gone",
        "set LORABOT_TAGGER",
        "LORABOT_DEVICES",
        "fix LORABOT_TRAINER_COMMAND",
    )
    for line, fix in zip(failed, fixes, strict=True):
        assert fix in line, line
    (home / "data" / "lorabot.sqlite3").write_bytes(b"not a database" * 100)
    code, out, _ = cli(capsys, "check")
    assert "FAIL database" in out and "restore it from a backup" in out


# The CLI itself ----------------------------------------------------------------------------------


def _actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, action) of the tree, subcommands as their choice actions."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield path, choice
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_command_and_option_has_a_help_line():
    from trainer.cli import _parser as trainer_parser

    for parser in (_parser(), trainer_parser()):
        missing = [(" ".join(path), a.dest, a.option_strings) for path, a in _actions(parser) if not a.help]
        assert missing == [], missing
    assert sum(1 for _ in _actions(_parser())) > 80  # the walk sees the whole tree


@pytest.mark.parametrize("user", ["-1", "0", "seven", "9223372036854775808"])
def test_user_ids_must_be_positive(home, capsys, user):
    code, _, err = cli(capsys, "stamina", "show", "--user", user)
    assert code == 2 and "is not a Discord user id: user ids are positive numbers" in one_error(err)
    assert not (home / "data").exists()  # refused before anything was opened or written


def test_refusals_speak_to_the_operator(home, capsys, monkeypatch):
    monkeypatch.setenv("LORABOT_DATA_DIR", str(home / "data"))
    new = ["dataset", "new", "d", "--user", "5", "--base-model", "tiny-sd15", "--trigger", "t"]
    assert cli(capsys, *new)[0] == 0
    cases = [
        (["dataset", "info", "nope", "--user", "5"], "user 5 has no dataset named 'nope' (list them with "
                                                    "'python -m bot dataset list --user 5')"),
        (["dataset", "new", "d", "--user", "5", "--base-model", "tiny-sd15", "--trigger", "t"],
         "user 5 already has a dataset named 'd'"),
        (["job", "show", "99"], "there is no job #99 (list the jobs with 'python -m bot queue --all')"),
        (["job", "cancel", "99"], "there is no job #99"),
        (["dataset", "remove-tags", "d", "--user", "5", "nosuchtag"], "'python -m bot dataset tags NAME --user 5'"),
        (["estimate", "--dataset", "d", "--user", "5"], "python -m bot dataset add"),
    ]  # fmt: skip
    for args, expected in cases:
        code, _, err = cli(capsys, *args)
        line = one_error(err)
        assert code == 1 and expected in line, (args, line)
        assert not MEMBER_WORDING.search(line), (args, line)


def test_the_wording_rewrites_each_member_phrase():
    from bot.cli.common import for_operator

    messages = [
        "you have no LoRA named 'x' (save one from /epochs)",  # not reachable from the CLI: left alone
        "job #3 has no saved epoch 4: see /epochs job:3",
        "you already have 2 jobs queued or running (your limit is 2): wait for one to finish or cancel one in /queue",
        "this job costs 157 stamina and you have 150: lower epochs",
        "the tagger is not available (gone); ask the operator",
        "the server ran out of disk space; nothing was added. Tell the operator",
        "The server ran out of disk space: nothing was changed. Tell an operator.",
        "the dataset is full (200 images): remove some with /dataset remove-images first",
        "unknown option 'zz' (see /preset options)",
    ]
    said = [for_operator(m, 42) for m in messages]
    assert [bool(MEMBER_WORDING.search(s)) for s in said] == [True] + [False] * (len(messages) - 1), said
    assert said[1] == "job #3 has no saved epoch 4: see 'python -m bot job show 3'"
    assert said[5] == "the server ran out of disk space; nothing was added: free some space, then try again"


# Dataset names in any script -----------------------------------------------------------------------


def test_dataset_names_in_any_script(home, capsys, monkeypatch):
    monkeypatch.setenv("LORABOT_DATA_DIR", str(home / "data"))
    base = ["--user", "5", "--base-model", "tiny-sd15", "--trigger", "t"]
    for name in ("été", "ずんだもん", "हिन्दी", "Ünïcode 2"):
        code, out, err = cli(capsys, "dataset", "new", name, *base)
        assert code == 0 and f"created dataset '{name}'" in out, err
    decomposed = unicodedata.normalize("NFD", "été")
    assert cli(capsys, "dataset", "info", decomposed, "--user", "5")[0] == 0  # one name, however typed
    code, _, err = cli(capsys, "dataset", "new", decomposed, *base)
    assert code == 1 and "already has a dataset named 'été'" in one_error(err)
    for bad in ("a/b", "..", "_x", "a!", "😀", "x" * 41, "a\tb"):
        code, _, err = cli(capsys, "dataset", "new", bad, *base)
        assert code == 1 and "a dataset name is 1-40 letters (any script)" in one_error(err), bad
    folders = sorted(p.name for p in (home / "data" / "datasets").rglob("*") if p.is_dir())
    assert all(part.isdigit() for part in folders), folders  # on disk by ids, never by name


def test_a_dataset_name_in_any_script_through_the_service(tmp_path):
    from bot.queue.service import _file_name
    from bot.services import open_services

    from .queue_helpers import queue_settings

    async def go():
        async with open_services(queue_settings(tmp_path)) as services:
            row = await services.datasets.create(9, " ずんだもん ", "tiny-sd15", "zunda")
            assert row.name == "ずんだもん" and (await services.datasets.get(9, "ずんだもん")).id == row.id
            assert services.datasets.folder(row) == tmp_path / "data" / "datasets" / "9" / str(row.id)

    asyncio.run(go())
    assert [_file_name(n) for n in ("été", "ずんだもん", "my char")] == ["ete", "lora", "my_char"]
