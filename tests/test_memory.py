"""Memory (trainer/accel.py, trainer/preview.py, trainer/train.py): what counts as out of memory,
the advice a member gets, previews that fall back to a smaller size, peak memory and where cached
latents wait."""

from __future__ import annotations

import logging

import pytest
import torch

from trainer import accel, lora
from trainer.models import load_base_model

from .conftest import base_job, train_in_process

# Out of memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        torch.cuda.OutOfMemoryError("CUDA out of memory."),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes."
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        MemoryError(),
    ],
)
def test_is_out_of_memory(exc):
    from trainer.run import TrainError

    assert accel.is_out_of_memory(exc)
    wrapped = TrainError("step failed")
    wrapped.__cause__ = exc
    assert accel.is_out_of_memory(wrapped)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
        ValueError("out of range"),
        KeyboardInterrupt(),
    ],
)
def test_other_errors_are_not_out_of_memory(exc):
    from trainer.run import Cancelled

    assert not accel.is_out_of_memory(exc)
    assert not accel.is_out_of_memory(Cancelled())


def train_job(tmp_path, **overrides):
    from trainer.contract import TrainJob

    return TrainJob.model_validate(base_job(tmp_path / "m", tmp_path / "d", tmp_path / "o", **overrides))


def fake_card(monkeypatch, gib: int) -> None:
    class Props:
        total_memory = gib * 2**30

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())


def test_oom_advice_names_what_to_lower_strongest_first(monkeypatch, tmp_path):
    fake_card(monkeypatch, 24)
    job = train_job(tmp_path, batch_size=4, resolution=768)  # mixed_precision "no", both networks
    text = accel.oom_advice(job, batch_size=4, bucket=(768, 1024), device=torch.device("cuda"))
    assert text.startswith("out of GPU memory on a batch of 4 at 768x1024 (24 GiB card): ")
    steps = [
        "lower batch_size to 2",
        "lower resolution to 704",
        "turn on gradient_checkpointing",
        "turn on unet_only",
        "set mixed_precision to fp16 or bf16",
    ]
    where = [text.index(s) for s in steps]
    assert where == sorted(where)
    assert "network_dim" not in text and "max_token_length" not in text


def test_oom_advice_leaves_out_what_is_already_low(monkeypatch, tmp_path):
    fake_card(monkeypatch, 12)
    job = train_job(
        tmp_path,
        batch_size=1,
        gradient_checkpointing=True,
        network_dim=64,
        network_alpha=32,
        max_token_length=150,
        unet_only=True,
        mixed_precision="fp16",
    )
    text = accel.oom_advice(
        job, batch_size=1, bucket=(448, 576), device=torch.device("cuda:0"), resolution=512
    )
    assert "(12 GiB card)" in text
    assert "lower resolution to 448, or lower network_dim to 32, or lower max_token_length to 75" in text
    for absent in ("batch_size", "gradient_checkpointing", "unet_only", "mixed_precision"):
        assert absent not in text


def test_oom_advice_when_nothing_is_left_to_lower_and_through_the_cli(tmp_path):
    from trainer.cli import user_message
    from trainer.run import TrainError

    job = train_job(
        tmp_path, resolution=256, gradient_checkpointing=True, unet_only=True, mixed_precision="bf16"
    )
    text = accel.oom_advice(job, batch_size=1, bucket=(256, 256), device=torch.device("cpu"))
    assert text.startswith("out of CPU memory on a batch of 1 at 256x256: ")
    assert "needs a device with more memory" in text
    # the CLI replaces messages that say "out of memory" with a generic line: the advice must survive
    advice = accel.oom_advice(
        train_job(tmp_path, batch_size=2), batch_size=2, bucket=(64, 64), device=torch.device("cpu")
    )
    assert user_message(TrainError(advice)) == advice


# Previews that run out of memory ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sizes"),
    [(512, [512, 384, 256]), (1024, [1024, 768, 512]), (640, [640, 448, 320]), (320, [320, 256]), (64, [64])],
)
def test_fallback_sizes(size, sizes):
    from trainer.preview import fallback_sizes

    assert fallback_sizes(size) == sizes


def oom_above(
    monkeypatch, limit: int | None, tried: list[int], error: type[BaseException] = torch.OutOfMemoryError
):
    """Patch the renderer: out of memory above ``limit`` px (always when None)."""
    from trainer import render

    real = render.render

    def fake(*args, width, **kwargs):
        tried.append(width)
        if limit is None or width > limit:
            raise error("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, width=width, **kwargs)

    monkeypatch.setattr(render, "render", fake)


def test_preview_out_of_memory_falls_back_to_a_smaller_size(
    monkeypatch, tiny_sd15, dataset, tmp_path, caplog
):
    from PIL import Image
    from safetensors.torch import load_file

    tried: list[int] = []
    oom_above(monkeypatch, 384, tried)
    caplog.set_level(logging.WARNING, logger="trainer.preview")
    common = dict(epochs=2, learning_rate=1e-3, preview_size=512, preview_weights=[0.5, 1.0])
    events, code = train_in_process(base_job(tiny_sd15, dataset, tmp_path / "a", previews=True, **common))
    assert code == 0
    previews = [e for e in events if e["event"] == "preview_ready"]
    assert [e["epoch"] for e in previews] == [1, 2]
    assert tried == [512, 384, 384] * 2  # the whole grid again at 384
    with Image.open(previews[0]["path"]) as grid:
        assert grid.width == 2 * 384
    assert "rendered at 384 px instead of 512" in caplog.text
    # weights and train mode were reset after the fallback: training went on exactly as without previews
    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "b", previews=False, **common))[1] == 0
    a, b = load_file(tmp_path / "a" / "test.safetensors"), load_file(tmp_path / "b" / "test.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def prepared_run(model, dataset, tmp_path, **overrides):
    from trainer.contract import TrainJob
    from trainer.train import add_networks, prepare

    job = TrainJob.model_validate(base_job(model, dataset, tmp_path / "out", previews=True, **overrides))
    run = prepare(job)
    add_networks(run)
    (tmp_path / "out").mkdir(exist_ok=True)
    return run


def lora_state(run):
    modules = [run.model.unet, *run.model.text_encoders]
    scales = [dict(layer.scaling) for m in modules for _, layer in lora.lora_layers(m)]
    return scales, [m.training for m in modules]


@pytest.mark.parametrize(("error", "outcome"), [(torch.OutOfMemoryError, None), (ValueError, ValueError)])
def test_preview_resets_weights_on_every_path(
    error, outcome, monkeypatch, tiny_sd15, dataset, tmp_path, caplog
):
    from trainer.preview import preview_epoch

    run = prepared_run(tiny_sd15, dataset, tmp_path, preview_size=512, preview_weights=[0.5, 1.0])
    for m in (run.model.unet, *run.model.text_encoders):
        m.train()
    before = lora_state(run)
    tried: list[int] = []
    oom_above(monkeypatch, None, tried, error)
    if outcome is None:
        assert preview_epoch(run, 1) is None
        assert tried == [512, 384, 256]
        assert "skipped: out of memory even at 256 px" in caplog.text
        assert not list((tmp_path / "out").glob("*preview*"))
    else:
        with pytest.raises(ValueError):
            preview_epoch(run, 1)
        assert tried == [512]  # not out of memory: no retry
    assert lora_state(run) == before


def test_preview_fallback_still_stops_on_cancel(monkeypatch, tiny_sd15, dataset, tmp_path):
    from trainer import render
    from trainer.contract import EXIT_CANCELLED, TrainJob
    from trainer.events import EventWriter, StopFlag
    from trainer.train import run_training

    stop = StopFlag()

    def fake(*args, width, **kwargs):  # out of memory, and a SIGTERM arrives meanwhile
        stop.set()
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(render, "render", fake)
    job = TrainJob.model_validate(
        base_job(tiny_sd15, dataset, tmp_path / "o", previews=True, preview_size=512)
    )
    import io

    stream = io.StringIO()
    assert run_training(job, EventWriter(stream), stop) == EXIT_CANCELLED
    assert '"event":"cancelled"' in stream.getvalue()


def test_preview_out_of_memory_at_every_size_skips_that_epoch(monkeypatch, tiny_sd15, dataset, tmp_path):
    """Needs train.py to emit preview_ready only for a rendered preview (preview_epoch returns None)."""
    tried: list[int] = []
    oom_above(monkeypatch, None, tried)
    events, code = train_in_process(
        base_job(tiny_sd15, dataset, tmp_path / "o", previews=True, preview_size=512)
    )
    assert code == 0
    assert tried == [512, 384, 256]
    assert [e["event"] for e in events if e["event"] in ("epoch_saved", "preview_ready", "done")] == [
        "epoch_saved",
        "done",
    ]
    assert not list((tmp_path / "o").glob("*preview*.png"))


def test_preview_error_that_is_not_memory_fails_the_job(monkeypatch, tiny_sd15, dataset, tmp_path):
    tried: list[int] = []
    oom_above(monkeypatch, None, tried, ValueError)
    with pytest.raises(ValueError, match="Tried to allocate"):
        train_in_process(base_job(tiny_sd15, dataset, tmp_path / "o", previews=True, preview_size=512))
    assert tried == [512]


def test_training_out_of_memory_says_what_to_lower(monkeypatch, tiny_sd15, dataset, tmp_path):
    from diffusers import UNet2DConditionModel

    from trainer.cli import user_message
    from trainer.run import TrainError

    def forward(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    with pytest.raises(TrainError) as caught:
        train_in_process(base_job(tiny_sd15, dataset, tmp_path / "o", batch_size=2))
    text = str(caught.value)
    assert text.startswith("out of CPU memory on a batch of 2 at 64x64: lower batch_size to 1, or ")
    assert "turn on gradient_checkpointing" in text
    assert user_message(caught.value) == text


# Memory statistics and latent placement -----------------------------------------------------------------


def test_peak_memory_only_on_cuda(monkeypatch):
    resets = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    assert accel.peak_memory_mb(torch.device("cpu")) is None
    accel.reset_peak_memory(torch.device("cpu"))
    assert resets == []
    assert accel.peak_memory_mb(torch.device("cuda")) == 3.0
    accel.reset_peak_memory(torch.device("cuda"))
    assert resets == [torch.device("cuda")]


def test_latents_on_device_follows_free_memory(monkeypatch):
    free = 10 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 24 * 2**30))
    cuda = torch.device("cuda")
    assert accel.latents_on_device(500 * 2**20, cuda)
    assert not accel.latents_on_device(2 * 2**30, cuda)
    assert not accel.latents_on_device(int(accel.LATENT_FREE_FRACTION * free), cuda)
    assert accel.latents_on_device(10**15, torch.device("cpu"))


def test_latent_bytes_matches_the_cached_latents(tiny_sdxl, tmp_path):
    from trainer import data

    from .conftest import write_dataset

    folder = write_dataset(tmp_path / "d", count=3, sizes=[(64, 64), (96, 48), (40, 80)])
    model = load_base_model(str(tiny_sdxl))
    items = data.scan_dataset(folder)
    data.assign_buckets(items, 64)
    data.cache_latents(items, model.vae, torch.device("cpu"), torch.Generator().manual_seed(0))
    real = sum(it.latent.numel() * it.latent.element_size() for it in items)
    assert accel.latent_bytes([it.bucket for it in items], model.vae) == real


def test_place_latent_pins_what_stays_on_the_host(monkeypatch):
    pinned = []

    def pin_memory(self):
        pinned.append(self.shape)
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    t = torch.randn(4, 8, 8)
    kept = accel.place_latent(t, torch.device("cuda"), on_device=False)
    assert kept.device.type == "cpu" and torch.equal(kept, t) and pinned == [(4, 8, 8)]
    assert accel.place_latent(t, torch.device("cpu"), on_device=False) is t and len(pinned) == 1
    assert accel.place_latent(t, torch.device("cpu"), on_device=True).device.type == "cpu"
    batch = accel.stack_latents([t, t * 2], torch.device("cpu"))
    assert torch.equal(batch, torch.stack([t, t * 2]))


def test_release_memory_is_the_renderers():
    from trainer import render

    assert accel.release_memory is render.release_memory
