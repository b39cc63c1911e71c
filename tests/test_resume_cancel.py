"""Killed jobs resume to the same result; SIGTERM cancels cleanly between steps."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading

import pytest
import torch
from safetensors.torch import load_file

from trainer.run import TrainError

from .conftest import (
    ROOT,
    base_job,
    parse_events,
    train_in_process,
    trainer_cmd,
    write_dataset,
    write_job,
)

pytestmark = pytest.mark.slow


def start_and_wait_for(job_path, kind: str, stall_s: float = 180):
    """Start the trainer; return (process, events so far, rest) once an event of ``kind`` arrived.

    It may take as long as the trainer keeps talking (AssertionError after ``stall_s`` seconds of
    silence); ``rest(timeout)`` returns the events after those, up to the end of its output.
    """
    proc = subprocess.Popen(
        trainer_cmd("train", "--job", str(job_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def next_line(timeout: float, waiting_for: str) -> str | None:
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"timed out after {timeout:g} s of silence waiting for {waiting_for}") from None

    def rest(timeout: float) -> list[dict]:
        out = []
        while (line := next_line(timeout, "the end of the trainer's output")) is not None:
            out += parse_events(line)
        return out

    events: list[dict] = []
    while (line := next_line(stall_s, f"a {kind} event (last: {events[-1:]})")) is not None:
        events += parse_events(line)
        if events and events[-1]["event"] == kind:
            return proc, events, rest
    raise AssertionError(f"the trainer ended before a {kind} event: {events[-1:]}")


def _job(model, tmp_path, out, **extra):
    data = tmp_path / "data"
    if not data.exists():
        write_dataset(data, count=3)
    options = {"epochs": 3, "repeats": 4, "learning_rate": 1e-3, **extra}
    return base_job(model, data, out, **options)


def test_sigkill_after_an_epoch_then_resume_matches_an_uninterrupted_run(tiny_sd15, tmp_path):
    full_events, code = train_in_process(_job(tiny_sd15, tmp_path, tmp_path / "full"))
    assert code == 0, full_events[-1:]
    full_done = full_events[-1]

    job = _job(tiny_sd15, tmp_path, tmp_path / "killed")
    proc, _, _ = start_and_wait_for(write_job(tmp_path / "k.json", job), "epoch_saved")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "killed" / "test.safetensors").exists()

    events, code = train_in_process({**job, "resume": True})
    assert code == 0, events[-1:]
    assert events[0]["resumed_from_step"] >= 12  # at least the first epoch (3 images x 4 repeats)
    done = events[-1]
    assert done["event"] == "done" and done["steps"] == full_done["steps"] == 36
    names = lambda folder: sorted(p.name for p in folder.glob("*.safetensors"))  # noqa: E731
    assert names(tmp_path / "killed") == names(tmp_path / "full")
    a, b = (
        load_file(tmp_path / "full" / "test.safetensors"),
        load_file(tmp_path / "killed" / "test.safetensors"),
    )
    for key in a:  # same seed and restored RNG/optimizer state: the same weights
        torch.testing.assert_close(a[key], b[key], atol=1e-3, rtol=1e-2)


def test_resume_with_other_settings_is_refused(tiny_sd15, tmp_path):
    job = _job(tiny_sd15, tmp_path, tmp_path / "out", epochs=1)
    assert train_in_process(job)[1] == 0
    with pytest.raises(TrainError, match="the saved state belongs to a job with other settings"):
        train_in_process({**job, "resume": True, "network_dim": 8})  # the CLI's exit 1 with this message


def test_sigterm_cancels_between_steps_and_keeps_saved_epochs(tiny_sd15, tmp_path):
    job = _job(tiny_sd15, tmp_path, tmp_path / "out", epochs=50, event_every_n_steps=1)
    proc, events, rest = start_and_wait_for(write_job(tmp_path / "job.json", job), "epoch_saved")
    proc.send_signal(signal.SIGTERM)
    events += rest(120)
    assert proc.wait(timeout=30) == 3
    assert events[-1]["event"] == "cancelled"
    assert events[-1]["step"] < 50 * 12
    saved = [e["path"] for e in events if e["event"] == "epoch_saved"]
    assert saved and all(load_file(p) for p in saved)
    assert not list((tmp_path / "out").glob("*.tmp"))
