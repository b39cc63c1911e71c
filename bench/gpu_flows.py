"""The tiny end-to-end flows of ``bench/gpu_check.py``, each a child process on the chosen device:
``python -m trainer train`` on a tiny model (fp16, bf16; SD1.5 and Flux.1) and the offline demo
(the whole dispatcher flow of ``python -m bot demo``) with its worker on that device."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]


class FlowFailed(RuntimeError):
    """A flow ran but did not do what it should; the message is one short line."""


def child_env() -> dict[str, str]:
    """This environment, offline (the machine has no internet: a hub lookup would only hang)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return env


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-160:] if lines else "no output"


def run_child(command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; past ``timeout_s`` the whole group (a demo's
    trainers too) is killed and ``subprocess.TimeoutExpired`` raised."""
    proc = subprocess.Popen(
        command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except BaseException:  # the timeout, or the section's own alarm: no child outlives its section
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def trainer_job(model: Path, data: Path, out: Path, device: str, precision: str) -> dict:
    """A short job on a tiny model: 2 epochs of 4 steps, a preview grid per epoch (a render too)."""
    return {
        "dataset_dir": str(data), "base_model": str(model), "output_dir": str(out), "output_name": "gpucheck",
        "device": device, "mixed_precision": precision, "epochs": 2, "repeats": 2, "batch_size": 1,
        "resolution": 64, "network_dim": 4, "network_alpha": 4, "optimizer": "AdamW", "seed": 0,
        "previews": True, "preview_steps": 2, "preview_size": 64, "preview_weights": [1.0],
    }  # fmt: skip


def run_trainer(job: dict, folder: Path, timeout_s: float) -> dict[str, str]:
    """``python -m trainer train`` on ``job``: pass when it exits 0 with ``done``, trained on the
    job's device, and its last loss is finite."""
    folder.mkdir(parents=True, exist_ok=True)
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    started = time.perf_counter()
    proc = run_child([sys.executable, "-m", "trainer", "train", "--job", str(job_file)], timeout_s)
    seconds = time.perf_counter() - started
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_kind = {e.get("event"): e for e in events}
    if proc.returncode != 0 or "done" not in by_kind:
        failed = by_kind.get("failed", {}).get("message") or _tail(proc.stderr)
        raise FlowFailed(f"exit {proc.returncode}: {failed}")
    device = str(by_kind["started"].get("device", ""))
    if not device.startswith(job["device"]):
        raise FlowFailed(f"trained on {device}, not {job['device']}")
    losses = [e["loss"] for e in events if e.get("event") == "step" and "loss" in e]
    if not losses or not math.isfinite(losses[-1]):
        raise FlowFailed(f"last loss {losses[-1] if losses else None}")
    return {"": "pass", "s": f"{seconds:.1f}", "loss": f"{losses[-1]:.4f}"}


def worker_id(device: str) -> str:
    """The bot's name of a device (``LORABOT_DEVICES``): "cpu", or a CUDA index."""
    return "cpu" if device == "cpu" else (device.partition(":")[2] or "0")


def run_dispatcher(out: Path, device: str, timeout_s: float) -> dict[str, str]:
    """The offline demo with its worker on ``device``, in a child process (:func:`demo_child`)."""
    started = time.perf_counter()
    script = Path(__file__).with_name("gpu_check.py")
    proc = run_child([sys.executable, str(script), "--demo-child", str(out), "--device", device], timeout_s)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise FlowFailed(f"exit {proc.returncode}: {_tail(proc.stderr + proc.stdout)}")
    jobs = [json.loads(p.read_text()) for p in (out / "data" / "jobs").glob("*/job.json")]
    devices = sorted({job.get("device", "?") for job in jobs})
    expected = "cpu" if device == "cpu" else "cuda"
    if devices != [expected]:
        raise FlowFailed(f"the trainer ran on {','.join(devices) or 'nothing'}, not {expected}")
    return {"": "pass", "s": f"{seconds:.1f}", "device": expected}


def demo_child(out: str, device: str) -> int:
    """``python -m bot demo`` with its worker on ``device``. The demo takes the built-in settings
    only (its devices are ["cpu"], whatever LORABOT_DEVICES says), so they are given the device."""
    import bot.settings
    from bot.demo import run_demo

    base = bot.settings.Settings

    class OnDevice(base):  # type: ignore[misc, valid-type]
        def __init__(self, **values) -> None:
            super().__init__(**{**values, "devices": [worker_id(device)]})

    with mock.patch.object(bot.settings, "Settings", OnDevice):
        return asyncio.run(run_demo(out))
