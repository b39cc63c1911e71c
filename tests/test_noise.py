"""Noise offset, pyramid noise and Min-SNR-gamma weights, each against a reference computed here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from trainer.noise import (
    diffusion_loss,
    min_snr_weights,
    offset_noise,
    pyramid_noise,
    snr,
    training_noise,
)

TIMESTEPS = [0, 10, 250, 500, 999]
GAMMA = 5.0


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module")
def sd_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000
    )


def hand_snr(timesteps: list[int]) -> torch.Tensor:
    """SD's scaled_linear schedule by hand, in float64: betas, then cumprod(1 - beta), then a / (1 - a)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    a = torch.cumprod(1.0 - betas, dim=0)[timesteps]
    return a / (1.0 - a)


# The scheduler keeps alphas_cumprod in float32, so 1 - a at t=0 (about 8.5e-4) carries a relative
# rounding error near 6e-8 / 8.5e-4 ~ 7e-5; 1e-3 leaves a wide margin while catching any formula slip.
RTOL = 1e-3


# Min-SNR-gamma ------------------------------------------------------------------------------------


def test_snr_matches_hand_computed_schedule(sd_scheduler):
    t = torch.tensor(TIMESTEPS)
    got = snr(t, sd_scheduler.alphas_cumprod)
    assert got.dtype == torch.float32 and got.device == t.device
    torch.testing.assert_close(got.double(), hand_snr(TIMESTEPS), rtol=RTOL, atol=0)
    assert torch.all(got[:-1] > got[1:])  # SNR falls with t


def test_snr_takes_any_integer_timesteps_and_float64_alphas(sd_scheduler):
    t = torch.tensor(TIMESTEPS, dtype=torch.int32)
    got = snr(t, sd_scheduler.alphas_cumprod.double())
    torch.testing.assert_close(got.double(), hand_snr(TIMESTEPS), rtol=RTOL, atol=0)


def test_min_snr_weights_epsilon_follow_the_paper(sd_scheduler):
    s = hand_snr(TIMESTEPS)
    expected = torch.minimum(s, torch.full_like(s, GAMMA)) / s
    got = min_snr_weights(torch.tensor(TIMESTEPS), sd_scheduler, GAMMA, v_prediction=False)
    torch.testing.assert_close(got.double(), expected, rtol=RTOL, atol=0)
    high_snr = s > GAMMA  # t = 0 and 10: SNR about 1175 and 104
    assert high_snr.tolist() == [True, True, False, False, False]
    assert torch.all(got[high_snr] < 0.05)  # the easy, almost clean steps are down-weighted
    assert torch.all(got[~high_snr] == 1.0)  # the rest keep weight exactly 1


def test_min_snr_weights_v_prediction_follow_the_paper(sd_scheduler):
    s = hand_snr(TIMESTEPS)
    expected = torch.minimum(s, torch.full_like(s, GAMMA)) / (s + 1.0)
    got = min_snr_weights(torch.tensor(TIMESTEPS), sd_scheduler, GAMMA, v_prediction=True)
    torch.testing.assert_close(got.double(), expected, rtol=RTOL, atol=0)
    assert torch.all(got < 1.0)
    # Below gamma the weight is snr / (snr + 1): the v loss rescaled to the epsilon loss.
    torch.testing.assert_close(got[2:].double(), s[2:] / (s[2:] + 1), rtol=RTOL, atol=0)


def test_min_snr_weights_reject_non_positive_gamma(sd_scheduler):
    with pytest.raises(ValueError, match="min_snr_gamma"):
        min_snr_weights(torch.tensor([1]), sd_scheduler, 0.0, v_prediction=False)


@pytest.mark.parametrize("v_prediction", [False, True])
def test_min_snr_loss_is_the_weighted_mean_of_per_sample_mse(sd_scheduler, v_prediction):
    g = gen(3)
    pred = torch.randn((len(TIMESTEPS), 4, 8, 8), generator=g).to(torch.bfloat16)
    target = torch.randn((len(TIMESTEPS), 4, 8, 8), generator=g)
    t = torch.tensor(TIMESTEPS)
    loss = diffusion_loss(pred, target, t, sd_scheduler, min_snr_gamma=GAMMA, v_prediction=v_prediction)

    s = hand_snr(TIMESTEPS)
    clipped = torch.minimum(s, torch.full_like(s, GAMMA))
    weights = clipped / (s + 1.0) if v_prediction else clipped / s
    per_sample = ((pred.double() - target.double()) ** 2).mean(dim=(1, 2, 3))
    expected = (per_sample * weights).mean()
    assert loss.dtype == torch.float32 and loss.ndim == 0
    torch.testing.assert_close(loss.double(), expected, rtol=RTOL, atol=0)
    assert loss < F.mse_loss(pred.float(), target.float())  # all weights <= 1, two well below


def test_loss_without_gamma_is_plain_mse_bit_for_bit(sd_scheduler):
    g = gen(4)
    pred = torch.randn((3, 4, 16, 16), generator=g).to(torch.float16)
    target = torch.randn((3, 4, 16, 16), generator=g)
    t = torch.tensor([5, 500, 900])
    for v_prediction in (False, True):
        loss = diffusion_loss(pred, target, t, sd_scheduler, min_snr_gamma=None, v_prediction=v_prediction)
        assert torch.equal(loss, F.mse_loss(pred.float(), target.float()))


# Off means bit-identical ---------------------------------------------------------------------------


def test_training_noise_off_draws_exactly_what_randn_draws():
    shape = (2, 4, 64, 48)
    a, b = gen(1234), gen(1234)
    got = training_noise(shape, "cpu", a)
    expected = torch.randn(shape, generator=b)
    assert torch.equal(got, expected)
    assert torch.equal(a.get_state(), b.get_state())
    # Explicit zeros are "off" as well, and a discount alone changes nothing.
    c = gen(1234)
    got = training_noise(
        torch.Size(shape), "cpu", c, noise_offset=0.0, multires_iterations=0, multires_discount=0.8
    )
    assert torch.equal(got, expected) and torch.equal(c.get_state(), b.get_state())


# Noise offset --------------------------------------------------------------------------------------


def test_offset_noise_is_randn_plus_one_shift_per_sample_and_channel():
    shape = (3, 4, 8, 8)
    got = training_noise(shape, "cpu", gen(7), noise_offset=0.1)
    g = gen(7)
    base = torch.randn(shape, generator=g)
    shift = torch.randn((3, 4, 1, 1), generator=g)
    torch.testing.assert_close(got, base + 0.1 * shift, rtol=0, atol=0)
    diff = got - base
    assert torch.allclose(diff, diff[..., :1, :1].expand_as(diff), atol=1e-6)  # constant over H, W


def test_offset_noise_statistics():
    b, c, h, w, offset = 2048, 4, 32, 32, 0.3
    plain = torch.randn((b, c, h, w), generator=gen(11))
    shifted = offset_noise(plain, offset, gen(12))
    # The spatial mean of a (sample, channel) is N(0, 1/(H*W)) for white noise, plus N(0, offset^2)
    # with the offset. Over n = B*C = 8192 means, a sample std has relative standard error
    # 1/sqrt(2n) ~ 0.8%; a 5% tolerance is over 6 standard errors.
    plain_means = plain.mean(dim=(2, 3))
    shifted_means = shifted.mean(dim=(2, 3))
    assert plain_means.std().item() == pytest.approx(1 / math.sqrt(h * w), rel=0.05)
    assert shifted_means.std().item() == pytest.approx(math.sqrt(offset**2 + 1 / (h * w)), rel=0.05)
    assert shifted_means.std().item() == pytest.approx(offset, rel=0.05)  # the offset dominates
    # The offset is zero-mean: each channel's overall mean has std sqrt(offset^2/B + 1/(B*H*W))
    # (~0.0066); allow 6 of those.
    bound = 6 * math.sqrt(offset**2 / b + 1 / (b * h * w))
    assert shifted.mean(dim=(0, 2, 3)).abs().max().item() < bound
    assert plain is not shifted and not torch.equal(plain, shifted)


# Pyramid noise -------------------------------------------------------------------------------------


def reference_pyramid(noise: torch.Tensor, iterations: int, discount: float, g: torch.Generator):
    """The multi-resolution recipe written out step by step; returns the noise and the level sizes."""
    b, c, h, w = noise.shape
    up = torch.nn.Upsample(size=(h, w), mode="bilinear")
    total, levels = noise.clone(), []
    for i in range(iterations):
        r = torch.rand((), generator=g, dtype=torch.float64).item() * 2 + 2
        hn, wn = max(1, int(h / (r**i))), max(1, int(w / (r**i)))
        levels.append((hn, wn))
        total += up(torch.randn((b, c, hn, wn), generator=g)) * discount**i
        if hn == 1 or wn == 1:
            break
    return total / total.std(), levels


def low_high_ratio(x: torch.Tensor, low: float = 2.0, high: float = 24.0) -> float:
    """Mean |FFT|^2 of the lowest non-zero frequencies (radius <= low, in cycles per image) over the
    highest (radius >= high); about 1 for white noise."""
    power = torch.fft.fft2(x.double()).abs().pow(2).mean(dim=(0, 1))
    h, w = x.shape[-2:]
    ky, kx = torch.fft.fftfreq(h) * h, torch.fft.fftfreq(w) * w
    radius = (ky[:, None] ** 2 + kx[None, :] ** 2).sqrt()
    return (power[(radius > 0) & (radius <= low)].mean() / power[radius >= high].mean()).item()


def test_pyramid_noise_matches_the_reference_and_the_generator():
    shape = (2, 4, 64, 40)
    got_gen, ref_gen = gen(5), gen(5)
    got = training_noise(shape, "cpu", got_gen, multires_iterations=6, multires_discount=0.3)
    ref, levels = reference_pyramid(torch.randn(shape, generator=ref_gen), 6, 0.3, ref_gen)
    torch.testing.assert_close(got, ref)
    assert torch.equal(got_gen.get_state(), ref_gen.get_state())  # same draws, same count
    assert levels[0] == (64, 40)


def test_offset_comes_before_pyramid():
    shape = (2, 4, 32, 32)
    got = training_noise(shape, "cpu", gen(6), noise_offset=0.1, multires_iterations=4, multires_discount=0.3)
    g = gen(6)
    shifted = offset_noise(torch.randn(shape, generator=g), 0.1, g)
    ref, _ = reference_pyramid(shifted, 4, 0.3, g)
    torch.testing.assert_close(got, ref)


def test_pyramid_noise_has_unit_std_and_does_not_touch_its_input():
    noise = torch.randn((8, 4, 64, 64), generator=gen(8))
    before = noise.clone()
    out = pyramid_noise(noise, 6, 0.3, gen(9))
    assert out.std().item() == pytest.approx(1.0, abs=1e-5)
    assert abs(out.mean().item()) < 0.2  # coarse levels are shared by many pixels: a loose bound
    assert torch.equal(noise, before)


def test_pyramid_noise_stops_at_one_pixel():
    noise = torch.randn((2, 4, 8, 8), generator=gen(10))
    out = pyramid_noise(noise, 10, 0.3, gen(11))
    ref, levels = reference_pyramid(noise, 10, 0.3, gen(11))
    assert out.shape == noise.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    assert len(levels) < 10 and 1 in levels[-1]  # stopped after the first 1-px level
    assert all(1 not in level for level in levels[:-1])


def test_pyramid_noise_moves_energy_to_low_frequencies():
    shape = (32, 4, 64, 64)
    white = low_high_ratio(torch.randn(shape, generator=gen(0)))
    assert white == pytest.approx(1.0, abs=0.1)

    def ratio(iterations: int, discount: float) -> float:
        return low_high_ratio(
            training_noise(shape, "cpu", gen(0), multires_iterations=iterations, multires_discount=discount)
        )

    # Level 0 is only more white noise; each coarser level adds low-frequency energy. At 64 px,
    # level 4 may already be the 1-px level that ends the loop, so later counts change nothing.
    by_iterations = [ratio(n, 0.5) for n in (1, 2, 3, 4, 6)]
    assert by_iterations[0] == pytest.approx(white, abs=0.1)
    assert by_iterations[1] > 1.2 * by_iterations[0]
    assert by_iterations[2] > 1.2 * by_iterations[1]
    assert by_iterations[4] >= by_iterations[3] >= by_iterations[2]
    assert by_iterations[4] > 2 * white  # clearly more low-frequency energy than white noise

    by_discount = [ratio(6, d) for d in (0.2, 0.4, 0.6, 0.8)]
    assert by_discount[0] > white
    assert all(b > 1.2 * a for a, b in zip(by_discount[:-1], by_discount[1:], strict=True))


def test_pyramid_noise_is_deterministic_per_seed():
    shape = (2, 4, 32, 32)
    kw = {"noise_offset": 0.05, "multires_iterations": 6, "multires_discount": 0.3}
    first = training_noise(shape, "cpu", gen(21), **kw)
    again = training_noise(shape, "cpu", gen(21), **kw)
    other = training_noise(shape, "cpu", gen(22), **kw)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
