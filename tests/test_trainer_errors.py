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
        return SimpleNamespace(
            key=generate.pipeline_key(job), pipe=SimpleNamespace(), device=torch.device("cpu")
        )

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


# A job file's missing paths: one clear line each, no traceback ----------------------------------


def test_missing_paths_of_a_job_file(tmp_path, monkeypatch):
    from trainer.cli import missing_paths
    from trainer.contract import GenerateJob, TrainJob, parse_job

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()

    def train(**values):
        return missing_paths(parse_job({"dataset_dir": "data", "base_model": "model", "output_dir": "o", **values}, TrainJob))  # fmt: skip

    assert train() == []
    assert train(base_model="owner/name", model_family="sdxl") == []  # a hub id with its family
    here = f"(relative paths are from {tmp_path})"
    assert train(dataset_dir="nope") == [f"dataset_dir: the folder nope does not exist {here}"]
    assert train(base_model="models/tiny-sd15") == [
        "base_model: models/tiny-sd15 is not a file or folder here, so it is taken as a hub id: fix the path, "
        f"or give model_family for a hub model {here}"
    ]
    assert train(base_model="/m/x.safetensors", model_family="sd15") == [
        "base_model: /m/x.safetensors does not exist"
    ]
    assert train(base_model="a/b/c") == [
        f"base_model: a/b/c does not exist (nor is it a hub id like owner/name) {here}"
    ]
    assert "write the full path" in train(base_model="~/models/x.safetensors")[0]
    assert train(init_weights="e1.safetensors")[0].startswith(
        "init_weights: the file e1.safetensors does not exist"
    )
    assert train(init_weights="e1.safetensors", resume=True) == []  # a resumed job starts from its state
    gen = parse_job({"base_model": "model", "output_dir": "o", "prompt": "p", "loras": [{"path": "/l.safetensors"}]},
                    GenerateJob)  # fmt: skip
    assert missing_paths(gen) == ["loras: the file /l.safetensors does not exist"]


def _train(tmp_path, job: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "job.toml").write_text(job)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "trainer", "train", "--job", "job.toml"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)  # fmt: skip


def test_a_job_file_with_a_missing_dataset_and_model_is_one_line_each(tmp_path):
    from trainer.contract import EXIT_INVALID_JOB

    done = _train(
        tmp_path, 'dataset_dir = "datasets/mychar"\nbase_model = "models/tiny-sd15"\noutput_dir = "out"\n'
    )
    assert done.returncode == EXIT_INVALID_JOB and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 2
        and "ERROR trainer: dataset_dir: the folder datasets/mychar does not exist" in lines[0]
    )
    assert "base_model: models/tiny-sd15 is not a file or folder here" in lines[1]
    (event,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert event["event"] == "failed" and event["message"].startswith("invalid job: dataset_dir: the folder")


def test_a_trainer_error_at_run_time_is_one_line_too(tmp_path):
    from trainer.contract import EXIT_FAILED

    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    done = _train(
        tmp_path, 'dataset_dir = "empty"\nbase_model = "model"\nmodel_family = "sd15"\noutput_dir = "o"\n'
    )
    assert done.returncode == EXIT_FAILED and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "dataset folder empty has no images" in errors[0]
