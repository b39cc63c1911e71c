"""Flow-matching helpers: packing and ids as diffusers' FluxPipeline, sd-scripts' timestep sampling."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from trainer import flow

N = 20_000  # samples for the median checks: the median's standard error is ~0.005


def _median(method: str, seed: int = 0, **kwargs) -> float:
    return flow.sample_timesteps(method, N, torch.Generator().manual_seed(seed), **kwargs).median().item()


@pytest.mark.parametrize(("h", "w"), [(8, 8), (16, 12), (128, 96)])
def test_packing_equals_the_pipelines(h, w):
    from diffusers import FluxPipeline

    latents = torch.randn(2, 16, h, w, generator=torch.Generator().manual_seed(0))
    packed = flow.pack_latents(latents)
    assert packed.shape == (2, h // 2 * (w // 2), 64)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 16, h, w))
    theirs = FluxPipeline._unpack_latents(packed, h * 8, w * 8, 8)  # they take the pixel size
    assert torch.equal(flow.unpack_latents(packed, h, w, 16), theirs)
    assert torch.equal(flow.unpack_latents(packed, h, w), latents)


def test_packing_refuses_odd_or_mismatched_sizes():
    with pytest.raises(ValueError, match="even"):
        flow.pack_latents(torch.zeros(1, 16, 7, 8))
    with pytest.raises(ValueError, match="does not fit"):
        flow.unpack_latents(torch.zeros(1, 16, 64), 8, 10)


def test_ids_equal_the_pipelines_and_are_2d():
    from diffusers import FluxPipeline

    ids = flow.latent_image_ids(16, 12)
    assert ids.shape == (8 * 6, 3)
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(1, 8, 6, "cpu", torch.float32))
    assert ids[7].tolist() == [0.0, 1.0, 1.0]  # token 7 is row 1, column 1 of the 8x6 patch grid
    assert flow.latent_image_ids(16, 12, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(flow.text_ids(32), torch.zeros(32, 3))
    assert flow.packed_seq_len(128, 128) == 4096


def test_mu_and_time_shift_match_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for seq_len in (16, 256, 1024, 4096, 6000):
        assert flow.flux_mu(seq_len) == pytest.approx(calculate_shift(seq_len))
    assert (flow.flux_mu(256), flow.flux_mu(4096)) == (pytest.approx(0.5), pytest.approx(1.15))
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    sched.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25], mu=flow.flux_mu(1024))
    ours = flow.time_shift(flow.flux_mu(1024), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    assert torch.allclose(sched.sigmas[:4], ours)


def test_sampled_sigmas_lie_in_the_open_interval():
    for method in ("uniform", "sigmoid", "shift", "flux_shift"):
        s = flow.sample_timesteps(method, N, torch.Generator().manual_seed(1), image_seq_len=4096)
        assert s.shape == (N,) and s.dtype == torch.float32
        assert s.min() > 0 and s.max() < 1, method
    s = flow.sample_timesteps("sigma", N, torch.Generator().manual_seed(1))
    assert s.min() > 0 and s.max() <= 1


def test_sampled_medians():
    assert _median("uniform") == pytest.approx(0.5, abs=0.02)
    assert _median("sigmoid") == pytest.approx(0.5, abs=0.02)
    assert _median("shift") == pytest.approx(3 * 0.5 / (1 + 2 * 0.5), abs=0.02)  # 0.75
    assert _median("shift", discrete_flow_shift=1.0) == pytest.approx(0.5, abs=0.02)
    assert _median("sigma") == pytest.approx(0.75, abs=0.02)
    at_256px = _median("flux_shift", image_seq_len=flow.packed_seq_len(32, 32))  # mu 0.5
    at_1024px = _median("flux_shift", image_seq_len=flow.packed_seq_len(128, 128))  # mu 1.15
    assert at_256px == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 1), abs=0.02)
    assert at_1024px == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1), abs=0.02)
    assert at_1024px > at_256px + 0.1


def test_sigmoid_scale_spreads_the_samples():
    narrow = flow.sample_timesteps("sigmoid", N, torch.Generator().manual_seed(0), sigmoid_scale=0.5)
    wide = flow.sample_timesteps("sigmoid", N, torch.Generator().manual_seed(0), sigmoid_scale=2.0)
    assert wide.std() > narrow.std() * 2


def test_sampling_errors_are_clear():
    with pytest.raises(ValueError, match="sigma, uniform, sigmoid, shift, flux_shift"):
        flow.sample_timesteps("logit_normal", 4)
    with pytest.raises(ValueError, match="image_seq_len"):
        flow.sample_timesteps("flux_shift", 4)


def test_seeds_reproduce():
    for method in flow.SAMPLING_METHODS:
        a = flow.sample_timesteps(method, 8, torch.Generator().manual_seed(3), image_seq_len=1024)
        b = flow.sample_timesteps(method, 8, torch.Generator().manual_seed(3), image_seq_len=1024)
        c = flow.sample_timesteps(method, 8, torch.Generator().manual_seed(4), image_seq_len=1024)
        assert torch.equal(a, b) and not torch.equal(a, c), method


def test_noisy_input_and_target():
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 16, 4, 4, generator=gen), torch.randn(3, 16, 4, 4, generator=gen)
    assert torch.equal(flow.noisy_input(latents, noise, torch.zeros(3)), latents)
    assert torch.equal(flow.noisy_input(latents, noise, torch.ones(3)), noise)
    mixed = flow.noisy_input(latents, noise, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(mixed[0], latents[0]) and torch.equal(mixed[2], noise[2])
    assert torch.allclose(mixed[1], (latents[1] + noise[1]) / 2)
    target = flow.flow_target(latents, noise)
    step = flow.noisy_input(latents, noise, torch.full((3,), 0.7)) - flow.noisy_input(latents, noise, 0.2)
    assert torch.allclose(step, 0.5 * target, atol=1e-6)  # the target is d x_t / d sigma
    packed = flow.noisy_input(
        flow.pack_latents(latents), flow.pack_latents(noise), torch.tensor([0.0, 0.5, 1.0])
    )
    assert torch.allclose(flow.unpack_latents(packed, 4, 4), mixed)


def test_latent_space_uses_shift_and_scale():
    flux_vae = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(flow.to_latent_space(x, flux_vae), (x - 0.1159) * 0.3611)
    assert torch.allclose(flow.from_latent_space(flow.to_latent_space(x, flux_vae), flux_vae), x, atol=1e-6)
    sdxl_vae = {"scaling_factor": 0.13025, "shift_factor": None}
    assert torch.allclose(flow.to_latent_space(x, sdxl_vae), x * 0.13025)


def _tiny_transformer(variant: str):
    from diffusers import FluxTransformer2DModel

    from trainer.tiny_flux import flux_transformer_config

    torch.manual_seed(0)
    return FluxTransformer2DModel(**flux_transformer_config("tiny", variant)).eval()


def _call(model, sigmas, guidance):
    latents = torch.randn(2, 16, 4, 6)
    text = torch.randn(2, 5, model.config.joint_attention_dim)
    with torch.no_grad():
        return model(hidden_states=flow.pack_latents(latents), encoder_hidden_states=text,
                     pooled_projections=torch.randn(2, model.config.pooled_projection_dim),
                     timestep=flow.transformer_timestep(sigmas), img_ids=flow.latent_image_ids(4, 6),
                     txt_ids=flow.text_ids(5), guidance=guidance).sample  # fmt: skip


def test_transformer_scales_timestep_and_guidance_by_1000(caplog):
    """diffusers' transformer multiplies both by 1000: pass sigma in [0, 1] and the plain scale."""
    model = _tiny_transformer("dev")
    seen = {}
    model.time_text_embed.register_forward_pre_hook(lambda _m, args: seen.update(args=args))
    sigmas = torch.tensor([0.25, 0.9])
    with caplog.at_level(logging.WARNING):
        out = _call(model, sigmas, flow.guidance_input(True, flow.TRAIN_GUIDANCE_SCALE, 2))
    timestep, guidance, _pooled = seen["args"]
    assert torch.allclose(timestep, sigmas * 1000)
    assert torch.allclose(guidance, torch.full((2,), 1000.0))
    assert out.shape == (2, 6, 64)
    assert "deprecated" not in caplog.text  # 2-D ids, as 0.42 expects


def test_schnell_takes_no_guidance():
    model = _tiny_transformer("schnell")
    assert flow.guidance_input(False, 3.5, 2) is None
    assert _call(model, torch.tensor([0.5, 0.5]), None).shape == (2, 6, 64)
    with pytest.raises(TypeError):
        _call(model, torch.tensor([0.5, 0.5]), torch.full((2,), 3.5))
