"""``python -m bot check``: everything an operator can get wrong, one line each (ok, WARN, FAIL).

Settings, the data folder, the database and its migrations, the model registry and each model,
the taggers, the devices, the Discord token, the file server's address and the trainer command.
Every failure says how to fix it. Exit 0 when nothing failed (warnings do not fail), else 1.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .admin import DATA_FOLDERS, EXIT_ERROR
from .models import describe

if TYPE_CHECKING:
    from ..settings import Settings

# check -----------------------------------------------------------------------------------------

Result = tuple[bool | None, str]  # (True ok, None warning, False failure), what (and how to fix it)
_TAGGER_FIX = (
    "set LORABOT_TAGGER to a folder with both, a hub id such as SmilingWolf/wd-vit-tagger-v3, or 'tiny'"
)
_TRAINER_FIX = "fix LORABOT_TRAINER_COMMAND (leave it empty to use this Python's 'python -m trainer')"


def check(env_file: Path, timeout: float) -> int:
    """One line per check; exit 0 when none failed (warnings do not fail)."""
    settings, results = _check_settings(env_file)
    _print_results(results)
    steps = [_check_data_dir, _check_database, _check_models, _check_taggers, _check_devices, _check_cluster,
             _check_discord, _check_http, lambda s: _check_trainer(s, timeout)] if settings else []  # fmt: skip
    for step in steps:
        try:
            found = step(settings)
        except Exception as exc:  # a check must report, never crash the others
            bug = f"unexpected {type(exc).__name__} in a check: {exc} (a bug: report it with this line)"
            found = [(False, bug)]
        _print_results(found)
        results += found
    failed = sum(ok is False for ok, _ in results)
    print(f"{failed} check{'s' * (failed != 1)} failed" if failed else "all checks passed")
    return EXIT_ERROR if failed else 0


def _print_results(results: list[Result]) -> None:
    for ok, text in results:
        mark = {True: "ok  ", None: "WARN", False: "FAIL"}[ok]
        print(f"{mark} {' '.join(text.split())}", flush=True)


def _check_settings(env_file: Path) -> tuple[Settings | None, list[Result]]:
    from ..settings import Settings, settings_problems, unknown_settings

    fix = f" (fix it in {env_file} or the environment)"
    if unknown := unknown_settings(env_file):  # typos and old names, never silently ignored
        return None, [(False, f"settings: {line}{fix}") for line in unknown]
    try:
        settings = Settings(_env_file=env_file)
    except ValueError as exc:  # pydantic's ValidationError, or a setting that is not JSON
        return None, [(False, f"settings: {line}{fix}") for line in settings_problems(exc)]
    where = f"{env_file} and the environment" if env_file.exists() else f"the environment ({env_file} is missing)"  # fmt: skip
    return settings, [(True, f"settings load from {where}")]


def _check_data_dir(s: Settings) -> list[Result]:
    if not s.data_dir.is_dir():
        return [(False, f"data folder {s.data_dir} does not exist: run 'python -m bot init'")]
    try:
        (probe := s.data_dir / f".check-{os.getpid()}").write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return [(False, f"data folder {s.data_dir} is not writable: {exc.strerror or exc}: give this user "
                        "write access to it, or set LORABOT_DATA_DIR to a folder it can write")]  # fmt: skip
    missing = [name for name in DATA_FOLDERS if not (s.data_dir / name).is_dir()]
    note = f" (no {', '.join(missing)} yet: made on use or by 'python -m bot init')" if missing else ""
    return [(True, f"data folder {s.data_dir} is writable{note}")]


def _check_database(s: Settings) -> list[Result]:
    import sqlite3

    from db.database import migrations

    path = s.database_path()
    if not path.is_file():
        return [(False, f"database {path} does not exist: run 'python -m bot init'")]
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [(False, f"database {path} does not open: {exc}: restore it from a backup, or move it aside "
                        "and run 'python -m bot init' for an empty one")]  # fmt: skip
    latest = len(migrations())
    if version < latest:
        return [(False, f"database {path} is at schema version {version}, this code needs {latest}: "
                        "run 'python -m bot init' to migrate it")]  # fmt: skip
    if version > latest:
        return [(False, f"database {path} is at schema version {version}, newer than this code ({latest}): "
                        "update the code (git pull), or set LORABOT_DATABASE to another database")]  # fmt: skip
    return [(True, f"database {path} opens, migrations current (schema version {version})")]


def _check_models(s: Settings) -> list[Result]:
    from ..registry import ModelRegistry, RegistryError

    try:
        registry = ModelRegistry.load(s.model_registry, s.data_dir)
    except RegistryError as exc:
        return [(False, str(exc))]
    where = s.model_registry or "built in"
    results: list[Result] = [(True, f"model registry loads ({where}): {', '.join(registry.keys())}")]
    if registry.built_in and s.model_registry is not None:
        results.append((None, f"model registry {s.model_registry} lists no model yet: members get the built-in "
                              "tiny models (random weights) until you add one with 'python -m bot models add "
                              "KEY SOURCE'"))  # fmt: skip
    for key in registry.keys():
        ok, family, how = describe(registry, key)
        fix = f": fix its source in the registry, or 'python -m bot models remove {key}'"
        results.append((ok, f"model {key} ({family}): {how}{'' if ok else fix}"))
    return results


def _check_taggers(s: Settings) -> list[Result]:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return [(False, "tagger: onnxruntime is not installed: run 'pip install onnxruntime'")]
    return [_check_tagger(s, source) for source in s.tagger_choices()]


def _check_tagger(s: Settings, source: str) -> Result:
    from trainer.tagger import LABELS_FILE, MODEL_FILE, TaggerError, load_labels

    if source == "tiny":
        built = (s.data_dir / "models" / "tiny-tagger" / LABELS_FILE).is_file()
        return True, f"tagger tiny: {'built' if built else 'not built yet (built on first use)'}"
    folder = Path(source).expanduser()
    if not source.startswith(("/", ".", "~")):
        folder = s.data_dir / "models" / "taggers" / source.replace("/", "--")
        if not folder.is_dir():
            return True, f"tagger {source}: hub (downloaded on first use)"
    if not folder.is_dir():
        return False, (f"tagger {source}: the folder does not exist (it needs {MODEL_FILE} and {LABELS_FILE}): "
                       f"{_TAGGER_FIX}")  # fmt: skip
    missing = [name for name in (MODEL_FILE, LABELS_FILE) if not (folder / name).is_file()]
    if missing:
        return False, f"tagger {source}: the folder has no {' or '.join(missing)}: {_TAGGER_FIX}"
    try:
        labels = load_labels(folder / LABELS_FILE)
    except TaggerError as exc:
        return False, f"tagger {source}: {exc}: {_TAGGER_FIX}"
    return True, f"tagger {source}: {folder} ({len(labels.names)} tags)"


def _check_devices(s: Settings) -> list[Result]:
    if not s.devices:
        return [(True, "no local device: jobs run on the Ray cluster's GPUs only")]
    if all(d == "cpu" for d in s.devices):
        return [(True, "device cpu")]
    import torch  # only when CUDA devices are configured: it takes a moment

    results: list[Result] = [(True, "device cpu")] if "cpu" in s.devices else []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device in (d for d in s.devices if d != "cpu"):
        ids = [int(i) for i in device.split(",")]
        if not count:
            results.append((False, f"device {device}: torch sees no CUDA device (torch {torch.__version__}, "
                                   f"CUDA build {torch.version.cuda or 'none'}): install the CUDA build of "
                                   'torch for your driver, or set LORABOT_DEVICES=["cpu"]'))  # fmt: skip
            continue
        absent = [i for i in ids if i >= count]
        names = "" if absent else ", ".join(torch.cuda.get_device_name(i) for i in ids)
        text = (f"no CUDA device {absent[0]} (there are {count}: 0-{count - 1}): list only those in "
                "LORABOT_DEVICES") if absent else names  # fmt: skip
        results.append((not absent, f"device {device}: {text}"))
    return results


def _check_cluster(s: Settings) -> list[Result]:
    if not s.ray_address:
        return []
    from ..cluster.report import check_cluster  # Ray only when a cluster is configured

    return check_cluster(s)


def _check_discord(s: Settings) -> list[Result]:
    token = s.discord_token.get_secret_value() if s.discord_token else ""
    if not token.strip():
        return [(None, "discord token: LORABOT_DISCORD_TOKEN is not set ('run' needs it; 'worker' and 'demo' do not)")]  # fmt: skip
    if token != token.strip() or token.lower().startswith("bot "):
        return [(False, "discord token: remove the spaces or the 'Bot ' prefix around it")]
    shape = "" if token.count(".") == 2 else " (it does not look like a bot token: three parts with dots)"
    return [(None if shape else True, f"discord token is set (not checked online){shape}")]


def _check_http(s: Settings) -> list[Result]:
    import errno
    import socket

    host, _, port = s.http_bind.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, int(port)))
        bind: Result = (True, f"http bind {s.http_bind} is free")
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        bind = (None if in_use else False, f"http bind {s.http_bind}: " +
                ("the port is in use (the bot running?)" if in_use else
                 f"{exc.strerror or exc}: set LORABOT_HTTP_BIND to a free host:port of this machine"))  # fmt: skip
    url = s.base_url()
    local = re.match(r"https?://(127\.|localhost|\[?::1\]?|0\.0\.0\.0)", url)
    if local:
        return [bind, (None, f"download links point at {url}, which members cannot open: "
                             "set LORABOT_PUBLIC_URL (a reverse proxy with TLS in front of the bind)")]  # fmt: skip
    return [bind, (True if url.startswith("https://") else None, f"download links point at {url}")]


def _check_trainer(s: Settings, timeout: float) -> list[Result]:
    import shlex
    import subprocess

    argv = s.trainer_argv() or [sys.executable, "-m", "trainer"]
    shown = shlex.join(argv)
    try:
        done = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return [(False, f"trainer command '{shown}': {argv[0]} not found: {_TRAINER_FIX}")]
    except subprocess.TimeoutExpired:
        return [(False, f"trainer command '{shown} --help' did not finish in {timeout:g} s: give it longer "
                        f"(check --timeout), or {_TRAINER_FIX}")]  # fmt: skip
    except OSError as exc:
        return [(False, f"trainer command '{shown}': {exc.strerror or exc}: {_TRAINER_FIX}")]
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [(False, f"trainer command '{shown} --help' exited {done.returncode}: {last}: {_TRAINER_FIX}")]
    return [(True, f"trainer command '{shown}' runs")]
