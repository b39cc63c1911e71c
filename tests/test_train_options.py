"""Each training option proves its effect (in-process runs on the tiny models)."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.text import process_caption

from .conftest import base_job, first_and_last_fifth, train_in_process, write_dataset

SCHEDULERS = ["cosine_with_restarts", "cosine", "linear", "polynomial", "constant_with_warmup", "constant"]
OPTIMIZERS = ["AdamW", "AdamW8bit", "Adafactor", "Lion", "DAdaptation", "DAdaptAdam", "Prodigy"]


def reference_lrs(name: str, base_lr: float, warmup: int, total: int, cycles: int) -> list[float]:
    from diffusers.optimization import get_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    sched = get_scheduler(
        name, opt, num_warmup_steps=warmup, num_training_steps=total, num_cycles=cycles, power=1.0
    )
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_lr_follows_diffusers_schedule(scheduler, tiny_sd15, dataset, tmp_path):
    warmup_percent = 0 if scheduler == "constant" else 20
    job = base_job(
        tiny_sd15,
        dataset,
        tmp_path / "out",
        repeats=5,
        lr_scheduler=scheduler,
        lr_warmup_percent=warmup_percent,
        lr_restart_cycles=2,
        learning_rate=3e-4,
        event_every_n_steps=1,
        unet_only=True,
    )
    events, code = train_in_process(job)
    assert code == 0
    got = [e["lr"] for e in events if e["event"] == "step"]
    want = reference_lrs(scheduler, 3e-4, 4 if warmup_percent else 0, 20, 2)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_steps_and_is_recorded(optimizer, tiny_sd15, dataset, tmp_path):
    job = base_job(
        tiny_sd15, dataset, tmp_path / "out", optimizer=optimizer, save_precision="fp32", unet_only=True
    )
    if optimizer not in ("DAdaptation", "DAdaptAdam", "Prodigy"):
        job["learning_rate"] = 1e-3
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    path = tmp_path / "out" / "test.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        ups = [f.get_tensor(k) for k in f.keys() if k.endswith("lora_up.weight")]
    expected_class = {"DAdaptation": "DAdaptAdamPreprint", "AdamW8bit": "AdamW8bit"}.get(optimizer, optimizer)
    assert meta["ss_optimizer"].endswith(expected_class)
    assert any(u.abs().max() > 0 for u in ups), "lora_up starts at zero: a step must move it"


def test_missing_optimizer_package_is_a_clear_error(monkeypatch):
    import builtins

    from trainer.optim import OptimizerUnavailable, build_optimizer

    real_import = builtins.__import__

    def no_lion(name, *args, **kwargs):
        if name.startswith("lion_pytorch"):
            raise ImportError("No module named 'lion_pytorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lion)
    monkeypatch.delitem(__import__("sys").modules, "lion_pytorch", raising=False)
    with pytest.raises(OptimizerUnavailable, match="pip install 'lion-pytorch'"):
        build_optimizer("Lion", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], 1e-4)


@pytest.mark.parametrize(("option", "absent"), [("unet_only", "lora_te"), ("text_encoder_only", "lora_unet")])
def test_unet_only_and_text_encoder_only(option, absent, tiny_sdxl, dataset, tmp_path):
    events, code = train_in_process(base_job(tiny_sdxl, dataset, tmp_path / "out", **{option: True}))
    assert code == 0
    keys = load_file(tmp_path / "out" / "test.safetensors").keys()
    assert keys and not any(k.startswith(absent) for k in keys)


def test_keep_tokens_keeps_the_first_tags_under_shuffle():
    caption = "trigger, second, a, b, c, d, e, f"
    rng = random.Random(0)
    outs = [process_caption(caption, True, 2, rng) for _ in range(50)]
    assert all(o.startswith("trigger, second, ") for o in outs)
    assert len(set(outs)) > 5  # the rest is shuffled
    assert process_caption(caption, False, 2, rng) == caption
    assert {process_caption(caption, True, 0, rng).split(", ")[0] for _ in range(50)} != {"trigger"}


def test_fixed_seed_gives_identical_files(tiny_sd15, dataset, tmp_path):
    files = []
    for run in ("a", "b"):
        job = base_job(tiny_sd15, dataset, tmp_path / run, repeats=2, learning_rate=1e-3)
        assert train_in_process(job)[1] == 0
        files.append(load_file(tmp_path / run / "test.safetensors"))
    assert files[0].keys() == files[1].keys()
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_save_precision(precision, dtype, tiny_sd15, dataset, tmp_path):
    job = base_job(tiny_sd15, dataset, tmp_path / "out", save_precision=precision, unet_only=True)
    assert train_in_process(job)[1] == 0
    assert {t.dtype for t in load_file(tmp_path / "out" / "test.safetensors").values()} == {dtype}


def test_save_every_n_epochs_and_final_copy(tiny_sd15, dataset, tmp_path):
    job = base_job(tiny_sd15, dataset, tmp_path / "out", epochs=3, save_every_n_epochs=2, unet_only=True)
    events, code = train_in_process(job)
    assert code == 0
    assert [e["epoch"] for e in events if e["event"] == "epoch_saved"] == [2, 3]
    names = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert names == ["test-000002.safetensors", "test-000003.safetensors", "test.safetensors"]


def test_bf16_mixed_precision_trains(tiny_sd15, dataset, tmp_path):
    events, code = train_in_process(base_job(tiny_sd15, dataset, tmp_path / "out", mixed_precision="bf16"))
    assert code == 0 and events[0]["precision"] == "bf16"
    assert all(
        torch.isfinite(t.float()).all() for t in load_file(tmp_path / "out" / "test.safetensors").values()
    )


def test_init_weights_starts_from_an_earlier_lora(tiny_sd15, dataset, tmp_path):
    first = base_job(tiny_sd15, dataset, tmp_path / "a", learning_rate=1e-2, save_precision="fp32")
    assert train_in_process(first)[1] == 0
    source = tmp_path / "a" / "test.safetensors"
    further = base_job(
        tiny_sd15,
        dataset,
        tmp_path / "b",
        learning_rate=1e-12,
        save_precision="fp32",
        init_weights=str(source),
        network_alpha=8,  # another alpha: the effect must be kept
    )
    assert train_in_process(further)[1] == 0
    a, b = load_file(source), load_file(tmp_path / "b" / "test.safetensors")
    for key in a:
        if key.endswith("lora_up.weight"):
            torch.testing.assert_close(b[key] * 8 / 32, a[key] * 16 / 32, atol=1e-6, rtol=1e-4)


def test_init_weights_of_another_rank_is_refused(tiny_sd15, dataset, tmp_path):
    from trainer.train import TrainError

    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "a", network_dim=4))[1] == 0
    job = base_job(tiny_sd15, dataset, tmp_path / "b", init_weights=str(tmp_path / "a" / "test.safetensors"))
    with pytest.raises(TrainError, match="rank 4 in the file, 32 in the job"):
        train_in_process(job)


@pytest.mark.slow
def test_loss_goes_down_on_a_learnable_dataset(tiny_sd15, tmp_path):
    data = write_dataset(tmp_path / "data", count=4, caption="tkchar, yellow_disc")
    job = base_job(
        tiny_sd15,
        data,
        tmp_path / "out",
        repeats=75,
        learning_rate=2e-3,
        lr_scheduler="constant",
        event_every_n_steps=1,
        unet_only=True,
    )
    events, code = train_in_process(job)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert code == 0 and len(losses) == 300
    first, last = first_and_last_fifth(losses)
    assert last < 0.8 * first, (first, last)


def test_previews_keep_nothing_between_epochs(tiny_sd15, dataset, tmp_path):
    """Each preview builds its pipeline over the training modules and drops it: memory stays flat."""
    import gc

    from diffusers import DiffusionPipeline

    job = base_job(tiny_sd15, dataset, tmp_path / "out", epochs=3, previews=True, preview_weights=[0.5, 1.0])
    events, code = train_in_process(job)
    assert code == 0
    assert [e["epoch"] for e in events if e["event"] == "preview_ready"] == [1, 2, 3]
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, DiffusionPipeline)]


class StopAfter:
    """An event sink that requests a stop once an event of ``kind`` was written (a SIGTERM stand-in)."""

    def __init__(self, kind: str):
        import io

        from trainer.events import EventWriter, StopFlag

        self.stop, self.stream, self.kind = StopFlag(), io.StringIO(), kind
        self.writer = EventWriter(self.stream)
        original = self.writer.emit

        def emit(kind, **fields):
            event = original(kind, **fields)
            if kind == self.kind:
                self.stop.set()
            return event

        self.writer.emit = emit

    def events(self) -> list[dict]:
        import json

        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


def test_train_further_job_is_resumable_and_renders_a_lost_preview(tiny_sd15, dataset, tmp_path):
    from trainer.contract import EXIT_CANCELLED, TrainJob
    from trainer.train import run_training

    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "a", learning_rate=1e-2))[1] == 0
    job = base_job(
        tiny_sd15,
        dataset,
        tmp_path / "b",
        epochs=2,
        previews=True,
        init_weights=str(tmp_path / "a" / "test.safetensors"),
    )
    sink = StopAfter("epoch_saved")  # stopped before epoch 1's preview was rendered
    assert run_training(TrainJob.model_validate(job), sink.writer, sink.stop) == EXIT_CANCELLED
    assert sink.events()[-1]["event"] == "cancelled"
    assert not (tmp_path / "b" / "test-000001-preview.png").exists()

    events, code = train_in_process({**job, "resume": True})
    assert code == 0
    previews = [e["epoch"] for e in events if e["event"] == "preview_ready"]
    assert previews == [1, 2] and events[0]["resumed_from_step"] == 4
    assert events[-1]["steps"] == 8


def test_clip_skip_deeper_than_the_encoder_is_refused(tiny_sd15, dataset, tmp_path):
    from trainer.text import ClipSkipError

    with pytest.raises(ClipSkipError, match="at most 4"):
        train_in_process(base_job(tiny_sd15, dataset, tmp_path / "out", clip_skip=5))


def test_init_weights_with_text_encoder_keys_into_a_unet_only_job(tiny_sd15, dataset, tmp_path):
    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "a", learning_rate=1e-2))[1] == 0
    source = tmp_path / "a" / "test.safetensors"
    job = base_job(
        tiny_sd15, dataset, tmp_path / "b", unet_only=True, init_weights=str(source), learning_rate=1e-12
    )
    assert train_in_process(job)[1] == 0
    out = load_file(tmp_path / "b" / "test.safetensors")
    assert not any(k.startswith("lora_te") for k in out)
    src = load_file(source)
    key = next(k for k in out if k.endswith("lora_up.weight"))
    torch.testing.assert_close(out[key].float(), src[key].float(), atol=1e-3, rtol=1e-2)
