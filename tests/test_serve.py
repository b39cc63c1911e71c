"""``python -m trainer serve`` as a real process: requests on stdin, events on stdout."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.contract import EXIT_CANCELLED, parse_event

from .conftest import ROOT, base_job, train_in_process, trainer_cmd, write_dataset

TERMINAL = ("done", "cancelled", "failed")


class Server:
    """A running ``serve`` process; events are read on a thread into a queue."""

    def __init__(self, log_path: Path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.stderr = open(log_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            trainer_cmd("serve"),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        self.log_path = log_path
        self.events: queue.Queue = queue.Queue()
        self.by_request: dict[str | None, list[dict]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = parse_event(line)
            if event is not None:
                self.events.put(event)

    def send(self, obj: dict | str) -> None:
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 120) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event in time; stderr:\n" + self.log_path.read_text()[-3000:]) from None

    def until_terminal(self, request: str) -> list[dict]:
        """This request's events up to its done/cancelled/failed (others' are kept for later)."""
        while not (self.by_request.get(request) and self.by_request[request][-1]["event"] in TERMINAL):
            event = self.next_event()
            self.by_request.setdefault(event.get("request"), []).append(event)
        return self.by_request[request]

    def close(self, timeout: float = 60) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.stderr.close()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "serve.log")
    yield srv
    if srv.proc.poll() is None:
        srv.close()


def gen_job(model: Path, out: Path, **overrides) -> dict:
    job = {
        "base_model": str(model),
        "output_dir": str(out),
        "prompt": "tkchar, yellow_disc",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 11,
        "mixed_precision": "no",
    }
    job.update(overrides)
    return job


def one_shot(job: dict) -> list[np.ndarray]:
    """The same job through ``run_generate`` in this process: its images as arrays."""
    from trainer.contract import GenerateJob
    from trainer.events import EventWriter, StopFlag
    from trainer.generate import run_generate

    stream = io.StringIO()
    assert run_generate(GenerateJob.model_validate(job), EventWriter(stream), StopFlag()) == 0
    done = json.loads(stream.getvalue().splitlines()[-1])
    return [pixels(p) for p in done["files"]]


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def done_files(events: list[dict]) -> list[str]:
    assert events[-1]["event"] == "done", events[-1]
    return events[-1]["files"]


def test_ready_cache_and_one_shot_equality(server, tiny_sd15, tmp_path):
    assert server.next_event()["event"] == "ready"
    server.send({"id": "a", "job": gen_job(tiny_sd15, tmp_path / "a")})
    server.send({"id": "b", "job": gen_job(tiny_sd15, tmp_path / "b", count=2, sampler="dpmpp_2m")})
    first, second = server.until_terminal("a"), server.until_terminal("b")
    assert first[0]["event"] == "started" and first[0]["model_cached"] is False and first[0]["load_s"] > 0
    assert second[0]["event"] == "started" and second[0]["model_cached"] is True
    assert second[0]["load_s"] == 0
    assert [e["event"] for e in second] == ["started", "image_ready", "image_ready", "image_ready", "done"]
    assert all(e["request"] == "b" for e in second)
    expected = one_shot(gen_job(tiny_sd15, tmp_path / "one-shot", count=2, sampler="dpmpp_2m"))
    got = [pixels(p) for p in done_files(second)]
    assert len(got) == len(expected) == 3  # two images and the grid
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert server.close() == 0


def test_lora_does_not_leak_and_failures_do_not_stop_the_server(server, tiny_sd15, tmp_path):
    data = write_dataset(tmp_path / "data", count=2)
    train = base_job(tiny_sd15, data, tmp_path / "lora", output_name="l", learning_rate=1e-2, repeats=2)
    assert train_in_process(train)[1] == 0
    lora = str(tmp_path / "lora" / "l.safetensors")
    assert server.next_event()["event"] == "ready"
    plain = gen_job(tiny_sd15, tmp_path / "plain")
    server.send({"id": "plain", "job": plain})
    server.send({"id": "lora", "job": gen_job(tiny_sd15, tmp_path / "with", loras=[{"path": lora}])})
    server.send({"id": "after", "job": gen_job(tiny_sd15, tmp_path / "after")})
    server.send(
        {"id": "missing", "job": gen_job(tiny_sd15, tmp_path / "m", loras=[{"path": "/no/x.safetensors"}])}
    )
    server.send("this is not json")
    server.send({"id": "bad", "job": {**plain, "steps": 0}})
    server.send({"id": "next", "job": gen_job(tiny_sd15, tmp_path / "next")})
    base = pixels(done_files(server.until_terminal("plain"))[0])
    with_lora = pixels(done_files(server.until_terminal("lora"))[0])
    assert not np.array_equal(base, with_lora)
    np.testing.assert_array_equal(pixels(done_files(server.until_terminal("after"))[0]), base)
    missing = server.until_terminal("missing")
    assert [e["event"] for e in missing] == ["failed"] and "does not exist" in missing[0]["message"]
    bad = server.until_terminal("bad")
    assert bad[0]["event"] == "failed" and bad[0]["message"].startswith("invalid job: steps")
    after_failure = server.until_terminal("next")
    assert after_failure[0]["model_cached"] is True
    np.testing.assert_array_equal(pixels(done_files(after_failure)[0]), base)
    assert server.close() == 0
    assert "not a JSON line" in server.log_path.read_text()


def test_cancel_running_and_waiting(server, tiny_sd15, tmp_path):
    assert server.next_event()["event"] == "ready"
    slow = gen_job(tiny_sd15, tmp_path / "slow", count=4, steps=30)
    server.send({"id": "slow", "job": slow})
    server.send({"id": "queued", "job": gen_job(tiny_sd15, tmp_path / "queued")})
    server.send({"id": "last", "job": gen_job(tiny_sd15, tmp_path / "last")})
    assert server.next_event()["event"] == "started"
    server.send({"cancel": "queued"})
    queued = server.until_terminal("queued")
    assert [e["event"] for e in queued] == ["cancelled"] and queued[0]["step"] == 0
    server.send({"cancel": "slow"})
    events = server.until_terminal("slow")
    assert events[-1]["event"] == "cancelled" and events[-1]["step"] < 4
    assert len(events[-1]["files"]) == events[-1]["step"]
    assert server.until_terminal("last")[-1]["event"] == "done"
    assert server.close() == 0


def test_sigterm_cancels_the_running_request(server, tiny_sd15, tmp_path):
    assert server.next_event()["event"] == "ready"
    server.send({"id": "r", "job": gen_job(tiny_sd15, tmp_path / "r", count=4, steps=30)})
    server.send({"id": "w", "job": gen_job(tiny_sd15, tmp_path / "w")})
    assert server.next_event()["event"] == "started"
    server.proc.send_signal(signal.SIGTERM)
    assert server.until_terminal("r")[-1]["event"] == "cancelled"
    assert [e["event"] for e in server.until_terminal("w")] == ["cancelled"]
    assert server.proc.wait(timeout=60) == EXIT_CANCELLED


# In-process: the line protocol and the failure policy, without a model. -----------------------


def _in_process_server():
    from trainer.events import EventWriter
    from trainer.serve import Server

    stream = io.StringIO()
    return Server(EventWriter(stream)), stream


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bad_lines_get_failed_events_with_the_id_when_readable(tmp_path):
    server, stream = _in_process_server()
    job = {"base_model": "m", "output_dir": str(tmp_path), "prompt": "p"}
    for line in (
        "{not json",
        "[1, 2]",
        json.dumps({"job": job}),
        json.dumps({"id": 7, "job": job}),
        json.dumps({"id": "x", "job": job, "priority": 1}),
        json.dumps({"id": "y"}),
        json.dumps({"id": "z", "job": {**job, "stepz": 3}}),
        json.dumps({"cancel": "a", "id": "b"}),
        json.dumps({"id": "ok", "job": job}),
        json.dumps({"id": "ok", "job": job}),
        json.dumps({"cancel": "nobody"}),
        "",
    ):
        server.handle_line(line)
    events = _events(stream)
    assert all(e["event"] == "failed" for e in events)
    assert [e.get("request") for e in events] == [None, None, None, 7, "x", "y", "z", "a", "ok"]
    assert "did you mean 'steps'" in events[6]["message"]
    assert "already waiting or running" in events[-1]["message"]
    assert server.queue.qsize() == 1  # the first "ok"
    server.cancel("ok")  # still waiting: cancelled at once
    last = _events(stream)[-1]
    assert (last["event"], last["request"], last["step"], last["files"]) == ("cancelled", "ok", 0, [])


def test_out_of_memory_fails_the_request_and_drops_the_model(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import torch

    import trainer.generate as generate

    loads = []

    def fake_load(job):
        loads.append(job.base_model)
        return SimpleNamespace(
            key=generate.pipeline_key(job), pipe=SimpleNamespace(), device=torch.device("cpu")
        )

    def fake_render(loaded, job, events, stop):
        if job.prompt == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        events.emit("started", total_steps=1, total_epochs=0)
        events.emit("done", files=[])
        return 0

    monkeypatch.setattr(generate, "load_for_job", fake_load)
    monkeypatch.setattr(generate, "render_job", fake_render)
    server, stream = _in_process_server()
    job = {"base_model": "m", "output_dir": str(tmp_path), "prompt": "p"}
    for rid, prompt in (("a", "p"), ("b", "p"), ("c", "oom"), ("d", "p")):
        server.handle_line(json.dumps({"id": rid, "job": {**job, "prompt": prompt}}))
    server.end_of_input()
    assert server.run() == 0
    events = _events(stream)
    assert events[0]["event"] == "ready"
    started = {e["request"]: e["model_cached"] for e in events if e["event"] == "started"}
    assert started == {"a": False, "b": True, "d": False}  # reloaded after the OOM
    failed = [e for e in events if e["event"] == "failed"]
    assert failed[0]["request"] == "c" and failed[0]["message"].startswith("out of GPU memory")
    assert len(loads) == 2
