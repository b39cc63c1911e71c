"""Shared fixtures: tiny models (built once per session), synthetic datasets, in-process training."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One compute thread per process (this one and every trainer it starts): the tiny models gain
# nothing from more, and with two threads on a busy 2-core machine every step waits for the thread
# that is not scheduled (a 120-step run beside a CPU hog: 39 s with 2 threads, 17 s with 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
#: The per-test limit of a test not marked slow (the ini's ``timeout`` stays the slow tests' limit).
#: A backstop that reports a hang in minutes, not a quarter of an hour: each wait in a test has its
#: own, shorter deadline and says what it waited for.
TIMEOUT_S = 300


def pytest_collection_modifyitems(config, items) -> None:
    """Tests not marked ``slow`` (and without a timeout marker of their own) get ``TIMEOUT_S``,
    unless ``--timeout`` or ``PYTEST_TIMEOUT`` sets one for the run."""
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch):
    """Tests never read the operator's settings: no LORABOT_* from the environment, and no .env in
    the folder pytest runs from (tests that need a .env write one in their own temp folder)."""
    for key in [k for k in os.environ if k.upper().startswith("LORABOT_")]:  # read in any case
        monkeypatch.delenv(key)
    if Path.cwd() == ROOT:
        from bot.settings import Settings

        monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    from trainer.tiny import make_tiny

    return make_tiny("sd15", tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from trainer.tiny import make_tiny

    return make_tiny("sdxl", tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    from trainer.tiny import make_tiny

    return make_tiny("flux", tmp_path_factory.mktemp("models") / "tiny-flux")


def write_dataset(folder: Path, count: int = 4, sizes=None, caption=None) -> Path:
    """Synthetic, learnable images: a yellow disc on a colored ground, with captions."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or [(64, 64)] * count
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        img = Image.new("RGB", (w, h), (30 + 40 * i % 200, 60, 200))
        ImageDraw.Draw(img).ellipse((w // 5, h // 5, w // 2, h // 2), fill=(250, 230, 20))
        img.save(folder / f"img{i:02d}.png")
        text = caption or f"tkchar, yellow_disc, blue_background, simple_background, tag{i}"
        (folder / f"img{i:02d}.txt").write_text(text)
    return folder


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "dataset")


def base_job(model: Path, dataset: Path, out: Path, **overrides) -> dict:
    job = {
        "dataset_dir": str(dataset),
        "base_model": str(model),
        "output_dir": str(out),
        "output_name": "test",
        "repeats": 1,
        "epochs": 1,
        "resolution": 64,
        "mixed_precision": "no",
        "optimizer": "AdamW",
        "seed": 1234,
        "previews": False,
        "preview_steps": 2,
    }
    job.update(overrides)
    return job


def train_in_process(job: dict) -> tuple[list[dict], int]:
    """Run a training job in this process; returns (events, exit code)."""
    from trainer.contract import TrainJob
    from trainer.events import EventWriter, StopFlag
    from trainer.train import run_training

    parsed = TrainJob.model_validate(job)
    stream = io.StringIO()
    writer = EventWriter(stream, every_n_steps=parsed.event_every_n_steps)
    code = run_training(parsed, writer, StopFlag())
    return [json.loads(line) for line in stream.getvalue().splitlines()], code


def first_and_last_fifth(losses: list[float]) -> tuple[float, float]:
    """The mean loss of the first and of the last fifth of the steps."""
    fifth = len(losses) // 5
    return sum(losses[:fifth]) / fifth, sum(losses[-fifth:]) / fifth


def write_job(path: Path, job: dict) -> Path:
    path.write_text(json.dumps(job))
    return path


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


def run_trainer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        trainer_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def parse_events(stdout: str) -> list[dict]:
    from trainer.contract import parse_event

    return [e for e in map(parse_event, stdout.splitlines()) if e is not None]
