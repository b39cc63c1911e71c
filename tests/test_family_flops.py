"""The cost rates of the family table come from bench/family_flops.py's count: a row whose rate
drifts from the compute of its step (relative to the reference family) fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trainer.contract.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("family_flops", ROOT / "bench" / "family_flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flux_rates_are_sdxls_scaled_by_counted_compute():
    bench = _bench()
    flops = {(key, 1024): bench.forward_flops(key, 1024) for key in ("sdxl", "flux")}
    ratio = flops[("flux", 1024)] / flops[("sdxl", 1024)]
    assert 8 < ratio < 14, ratio  # 11.0 counted: a 12B transformer over 4096 + 512 tokens
    sdxl, flux = FAMILIES["sdxl"], FAMILIES["flux"]
    assert flux.step_cost == pytest.approx(sdxl.step_cost * ratio, rel=0.01)
    assert flux.steps_per_s == pytest.approx(sdxl.steps_per_s / ratio, rel=0.01)
    pictures = bench.render_flops(flops, "flux") / bench.render_flops(flops, "sdxl")
    assert flux.image_cost == pytest.approx(sdxl.image_cost * pictures, abs=0.5)


def test_every_family_gives_full_size_shapes_and_inputs_on_the_meta_device():
    """The hooks the FLOP count and the GPU check use: a forward runs on shapes alone."""
    import torch

    from trainer.families import get_family

    for key in FAMILIES:
        family = get_family(key)
        denoiser = family.meta_denoiser()
        assert all(p.device.type == "meta" for p in denoiser.parameters())
        with torch.no_grad():
            out = denoiser(**family.example_inputs(denoiser, 256, torch.float32, "meta"))
        sample = out[0] if isinstance(out, tuple) else out.sample
        assert sample.device.type == "meta" and sample.shape[0] == 1
