"""Training noise and loss weights as kohya sd-scripts does them.

Noise offset (crosslabs' "diffusion with offset noise"), multi-resolution (pyramid) noise
(johnowhitaker's report) and Min-SNR-gamma loss weighting (Hang et al. 2023), following
sd-scripts' ``library/custom_train_functions.py`` and the order of
``train_util.get_noise_noisy_latents_and_timesteps``: offset first, then pyramid.

Unlike sd-scripts, every random draw (the pyramid's scale factors included) comes from the
caller's CPU ``torch.Generator`` and is then moved to the device, so that a job resumes with
the same draws on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def offset_noise(noise: Tensor, offset: float, generator: torch.Generator) -> Tensor:
    """``noise + offset * randn(B, C, 1, 1)``: one random shift per sample and channel."""
    b, c = noise.shape[:2]
    shift = torch.randn((b, c, 1, 1), generator=generator, dtype=noise.dtype)
    return noise + offset * shift.to(noise.device, non_blocking=True)


def pyramid_noise(noise: Tensor, iterations: int, discount: float, generator: torch.Generator) -> Tensor:
    """Multi-resolution noise: add coarser random grids, upsampled bilinearly, then rescale to unit std.

    Level ``i`` draws ``r ~ U(2, 4)`` and a ``(H / r**i, W / r**i)`` grid (at least 1 px) weighted
    by ``discount**i``; the loop stops after a level that is 1 px high or wide. Returns a new
    tensor (``noise`` is not modified); its global std is 1.
    """
    b, c, h, w = noise.shape
    out = noise
    for i in range(iterations):
        r = 2.0 + 2.0 * torch.rand((), generator=generator, dtype=torch.float64).item()
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        grid = torch.randn((b, c, hn, wn), generator=generator, dtype=noise.dtype)
        grid = grid.to(noise.device, non_blocking=True)
        out = out + F.interpolate(grid, size=(h, w), mode="bilinear") * discount**i
        if hn == 1 or wn == 1:
            break
    return out / out.std()


def training_noise(
    shape: Sequence[int] | torch.Size,
    device: torch.device | str,
    generator: torch.Generator,
    *,
    noise_offset: float = 0.0,
    multires_iterations: int = 0,
    multires_discount: float = 0.3,
) -> Tensor:
    """The noise of one training step, on ``device``: ``randn(shape)``, then offset, then pyramid.

    All draws come from ``generator`` (a CPU generator). With both options off this draws exactly
    what ``torch.randn(shape, generator=generator)`` draws, and nothing more.
    """
    noise = torch.randn(tuple(shape), generator=generator).to(device, non_blocking=True)
    if noise_offset > 0:
        noise = offset_noise(noise, noise_offset, generator)
    if multires_iterations > 0:
        noise = pyramid_noise(noise, multires_iterations, multires_discount, generator)
    return noise


def snr(timesteps: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Signal-to-noise ratio ``a / (1 - a)`` with ``a = alphas_cumprod[t]``, float32, on ``timesteps``' device.

    Our own direct formula (not ``diffusers.training_utils.compute_snr``, which squares
    ``sqrt(a) / sqrt(1 - a)`` and agrees to float rounding). ``alphas_cumprod`` is moved to the
    timesteps' device before indexing, so it may live on the CPU or the accelerator (diffusers'
    ``add_noise`` moves it to the samples' device).
    """
    a = alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
    return a / (1.0 - a)


def min_snr_weights(timesteps: Tensor, noise_scheduler, gamma: float, v_prediction: bool) -> Tensor:
    """Min-SNR-gamma weights: ``min(snr, gamma) / snr`` (epsilon) or ``min(snr, gamma) / (snr + 1)`` (v).

    Both are finite at a zero-terminal-SNR step (snr 0, the last timestep of a rescaled schedule):
    the v weight is 0 there (no division by zero: its denominator is at least 1), and the epsilon
    weight, computed as ``min(gamma / snr, 1)``, equal to the paper's formula for ``snr > 0``, is 1
    (its limit) instead of 0/0. The SNR is the trained schedule's, rescaled betas included;
    sd-scripts computes its table before it rescales them (``prepare_scheduler_for_custom_training``
    runs before ``fix_noise_scheduler_betas_for_zero_terminal_snr``), so its weights never see 0.
    """
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")
    s = snr(timesteps, noise_scheduler.alphas_cumprod)
    if v_prediction:
        return torch.clamp(s, max=gamma) / (s + 1.0)
    return torch.clamp(gamma / s, max=1.0)


def diffusion_loss(
    pred: Tensor,
    target: Tensor,
    timesteps: Tensor,
    noise_scheduler,
    *,
    min_snr_gamma: float | None,
    v_prediction: bool,
) -> Tensor:
    """MSE in float32; with Min-SNR-gamma, the per-sample mean times its weight, then the batch mean.

    ``min_snr_gamma=None`` gives plain ``F.mse_loss(pred.float(), target.float())``.
    """
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=tuple(range(1, per_sample.ndim)))
    weights = min_snr_weights(timesteps, noise_scheduler, min_snr_gamma, v_prediction)
    return (per_sample * weights.to(per_sample.device)).mean()
