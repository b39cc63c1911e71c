"""The trainer's one error base: its message is for the member, and it is caught by class, never
by name (a new subclass needs no list updated)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

from trainer.errors import TrainerError


def _error_classes() -> dict[type[Exception], type[Exception]]:
    """Each trainer error and the builtin base callers already catch it by."""
    from trainer.contract import JobError
    from trainer.data import DatasetError
    from trainer.generate import GenerateError
    from trainer.models import ModelLoadError
    from trainer.optim import OptimizerUnavailable
    from trainer.run import TrainError
    from trainer.tagger import TaggerError
    from trainer.text import ClipSkipError

    return {
        JobError: ValueError, DatasetError: ValueError, ClipSkipError: ValueError,
        ModelLoadError: RuntimeError, TrainError: RuntimeError, GenerateError: RuntimeError,
        TaggerError: RuntimeError, OptimizerUnavailable: RuntimeError,
    }  # fmt: skip


def test_every_trainer_error_derives_from_the_base_and_keeps_its_builtin_base():
    from trainer.cli import user_message

    for cls, builtin in _error_classes().items():
        error = cls(["line one"]) if cls.__name__ == "JobError" else cls("fix the dataset")
        assert isinstance(error, TrainerError) and isinstance(error, builtin), cls
        assert user_message(error) == str(error), cls  # the member reads it as it is
    assert user_message(KeyError("x")) == "KeyError: 'x'"  # a bug says what it is


def test_serve_keeps_the_model_after_any_trainer_error_and_drops_it_after_a_bug(monkeypatch, tmp_path):
    """Caught by class: a new TrainerError subclass (a name no list knows) keeps the model too."""
    import torch

    import trainer.generate as generate
    from trainer.events import EventWriter
    from trainer.serve import Server

    class BrandNewError(TrainerError):
        pass

    loads = []

    def fake_load(job):
        loads.append(job.prompt)
        return SimpleNamespace(key=generate.pipeline_key(job), pipe=SimpleNamespace(), device=torch.device("cpu"))

    def fake_render(loaded, job, events, stop):
        if job.prompt == "wrong":
            raise BrandNewError("the job asks for something this model cannot do")
        if job.prompt == "bug":
            raise RuntimeError("an index out of range somewhere")
        events.emit("started", total_steps=1, total_epochs=0)
        events.emit("done", files=[])
        return 0

    monkeypatch.setattr(generate, "load_for_job", fake_load)
    monkeypatch.setattr(generate, "render_job", fake_render)
    stream = io.StringIO()
    server = Server(EventWriter(stream))
    job = {"base_model": "m", "output_dir": str(tmp_path), "prompt": "p"}
    for rid, prompt in (("a", "p"), ("b", "wrong"), ("c", "p"), ("d", "bug"), ("e", "p")):
        server.handle_line(json.dumps({"id": rid, "job": {**job, "prompt": prompt}}))
    server.end_of_input()
    assert server.run() == 0
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    started = {e["request"]: e["model_cached"] for e in events if e["event"] == "started"}
    assert started == {"a": False, "c": True, "e": False}  # kept after "wrong", reloaded after "bug"
    failed = {e["request"]: e["message"] for e in events if e["event"] == "failed"}
    assert failed == {
        "b": "the job asks for something this model cannot do",
        "d": "RuntimeError: an index out of range somewhere",
    }
