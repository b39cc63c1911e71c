"""quantize_base: the frozen base in NF4 or int8 (bitsandbytes), LoRA on top (QLoRA).

bitsandbytes runs its 4- and 8-bit layers on the CPU too, so the whole path (quantize, add LoRA,
train, save, preview) is checked here on the tiny Flux; on a GPU the same code quantizes each layer
as it moves there (bench/gpu_check.py measures the memory).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from peft.tuners.lora import bnb as peft_bnb
from safetensors import safe_open
from torch import nn

from trainer import lora
from trainer.contract import JobError, TrainJob, parse_job
from trainer.models import load_base_model, place, place_denoiser
from trainer.quantize import QuantizeUnavailable, is_quantized

from .conftest import base_job, train_in_process, write_dataset


def _transformer_input(model, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    cfg = model.unet.config
    tokens, text = 16, 8
    return dict(
        hidden_states=torch.randn(1, tokens, cfg.in_channels, generator=gen).bfloat16(),
        encoder_hidden_states=torch.randn(1, text, cfg.joint_attention_dim, generator=gen).bfloat16(),
        pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=gen).bfloat16(),
        timestep=torch.tensor([0.5]).bfloat16(),
        img_ids=torch.zeros(tokens, 3),
        txt_ids=torch.zeros(text, 3),
        guidance=torch.tensor([1.0]) if cfg.guidance_embeds else None,
        return_dict=False,
    )


@pytest.mark.parametrize(("mode", "ratio", "tolerance"), [("nf4", 0.25, 0.25), ("int8", 0.5, 0.03)])
def test_every_linear_is_quantized_smaller_and_close(tiny_flux, mode, ratio, tolerance):
    model = load_base_model(str(tiny_flux))
    place(model, torch.device("cpu"), torch.bfloat16, denoiser=False)
    model.unet.to(torch.bfloat16)
    inputs = _transformer_input(model)
    with torch.no_grad():
        before = model.unet(**inputs)[0].float()
    linears = sum(type(m) is nn.Linear for m in model.unet.modules())
    done = place_denoiser(model, torch.device("cpu"), torch.bfloat16, mode)
    assert done.layers == linears and not any(type(m) is nn.Linear for m in model.unet.modules())
    assert done.mb_after <= done.mb_before * ratio + 0.01, done.describe()
    assert is_quantized(model.unet)
    with torch.no_grad():
        after = model.unet(**inputs)[0].float()
    error = (after - before).norm() / before.norm()
    assert error < tolerance, f"{mode}: relative error {error:.3f}"


def test_lora_wraps_the_quantized_layers_and_only_lora_learns(tiny_flux):
    from trainer.families import get_family

    model = load_base_model(str(tiny_flux))
    place(model, torch.device("cpu"), torch.bfloat16, denoiser=False)
    place_denoiser(model, torch.device("cpu"), torch.bfloat16, "nf4")
    targets = get_family("flux").denoiser_targets(model.unet)
    lora.add_lora(model.unet, targets, 4, 4.0)
    wrapped = dict(lora.lora_layers(model.unet))
    assert set(wrapped) == set(targets)
    assert all(isinstance(layer, peft_bnb.Linear4bit) for layer in wrapped.values())  # peft's QLoRA layer
    lora.cast_lora_to_fp32([model.unet])
    for layer in wrapped.values():  # a non-zero up weight, so the down weights get gradients too
        nn.init.normal_(layer.lora_B[lora.ADAPTER].weight, std=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.unet(**_transformer_input(model))[0]
    out.float().pow(2).mean().backward()
    trained = [n for n, p in model.unet.named_parameters() if p.grad is not None]
    assert trained and all("lora_" in n for n in trained)
    assert len(trained) == 2 * len(targets)


def test_a_quantized_flux_job_trains_previews_and_writes_the_same_file(tiny_flux, tmp_path):
    data = write_dataset(tmp_path / "data", count=3)
    job = dict(epochs=1, repeats=2, seed=5, previews=True, preview_steps=1)
    plain, code = train_in_process(base_job(tiny_flux, data, tmp_path / "plain", **job))
    assert code == 0
    events, code = train_in_process(base_job(tiny_flux, data, tmp_path / "nf4", **job, quantize_base="nf4"))
    assert code == 0 and [e["event"] for e in events][-3:] == ["epoch_saved", "preview_ready", "done"]
    files = {}
    for name in ("plain", "nf4"):
        with safe_open(str(tmp_path / name / "test.safetensors"), "pt") as f:
            files[name] = {k: f.get_tensor(k).shape for k in f.keys()}
    assert files["nf4"] == files["plain"]  # the file does not know the base was quantized


def test_an_sd15_job_trains_on_an_int8_base(tiny_sd15, tmp_path):
    data = write_dataset(tmp_path / "data", count=2)
    events, code = train_in_process(
        base_job(tiny_sd15, data, tmp_path / "out", epochs=1, repeats=2, quantize_base="int8")
    )
    assert code == 0 and events[-1]["event"] == "done"
    assert (tmp_path / "out" / "test.safetensors").is_file()


def test_a_missing_bitsandbytes_says_how_to_install_it(tiny_flux, tmp_path, monkeypatch):
    real = importlib.import_module

    def no_bitsandbytes(name, *args, **kwargs):
        if name.split(".")[0] == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_bitsandbytes)
    data = write_dataset(tmp_path / "data", count=1)
    with pytest.raises(
        QuantizeUnavailable, match=r"quantize_base needs the package 'bitsandbytes'.*pip install"
    ):
        train_in_process(base_job(tiny_flux, data, tmp_path / "out", epochs=1, quantize_base="nf4"))
    assert not (tmp_path / "out" / "test.safetensors").exists()


def test_the_contract_takes_only_nf4_and_int8():
    base = {"dataset_dir": "d", "output_dir": "o", "base_model": "m"}
    assert parse_job({**base, "quantize_base": "nf4"}, TrainJob).quantize_base == "nf4"
    with pytest.raises(JobError, match="quantize_base"):
        parse_job({**base, "quantize_base": "fp4"}, TrainJob)
