"""Flow-matching helpers for Flux.1 training: packing, position ids, timestep sampling, targets.

Pure torch, following sd-scripts' ``flux_train_utils`` (timestep sampling, ``time_shift``,
the 256 -> 0.5 / 4096 -> 1.15 line for ``mu``) and diffusers' ``FluxPipeline`` (packing,
ids). Conventions, as both use them:

- ``sigma`` in [0, 1] is the noise level: ``x_t = (1 - sigma) * x_0 + sigma * noise``, and
  the model predicts the velocity ``noise - x_0`` (sd-scripts' ``model_prediction_type=raw``).
- diffusers' ``FluxTransformer2DModel`` multiplies ``timestep`` AND ``guidance`` by 1000
  itself, so it takes ``timestep = sigma`` (sd-scripts passes ``timesteps / 1000`` with
  ``timesteps = sigma * 1000``: the same number) and the plain guidance scale (3.5, not 3500).
- dev (``guidance_embeds=True``) needs a guidance tensor; schnell has no guidance embedder
  and must get ``guidance=None`` (a tensor there is a TypeError). sd-scripts trains dev
  with guidance 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

SAMPLING_METHODS = ("sigma", "uniform", "sigmoid", "shift", "flux_shift")
#: sd-scripts' recommended ``--guidance_scale`` for training dev (its default, 3.5, is for sampling).
TRAIN_GUIDANCE_SCALE = 1.0
NUM_TRAIN_TIMESTEPS = 1000


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4): each 2x2 patch becomes one token, channels first."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2, got {h}x{w}")
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(
    packed: torch.Tensor, height: int, width: int, channels: int | None = None
) -> torch.Tensor:
    """(B, H/2 * W/2, C * 4) -> (B, C, H, W); ``height``/``width`` are the LATENT size (pixels / 8).

    diffusers' ``_unpack_latents`` takes the pixel size and the VAE scale factor instead.
    """
    b, tokens, packed_channels = packed.shape
    channels = channels if channels is not None else packed_channels // 4
    if channels * 4 != packed_channels or tokens != (height // 2) * (width // 2):
        raise ValueError(
            f"packed shape {tuple(packed.shape)} does not fit {channels}x{height}x{width} latents"
        )
    patches = packed.view(b, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, channels, height, width)


def latent_image_ids(
    height: int, width: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Position ids of the packed image tokens for latents of ``height`` x ``width`` (unpacked).

    (H/2 * W/2, 3) rows ``(0, row, column)`` of the 2x2 patch grid, in ``pack_latents``' token
    order. 2-D, without a batch dimension: diffusers 0.42's transformer warns on 3-D ids
    (deprecated) and drops their batch dimension.
    """
    rows, cols = height // 2, width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


def text_ids(
    length: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Position ids of the T5 tokens: all zeros, (length, 3), no batch dimension."""
    return torch.zeros(length, 3, device=device, dtype=dtype)


def packed_seq_len(height: int, width: int) -> int:
    """Tokens of packed latents of ``height`` x ``width`` (1024 px -> 128x128 latents -> 4096)."""
    return (height // 2) * (width // 2)


def flux_mu(
    seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The shift exponent ``mu`` on the line through (256, 0.5) and (4096, 1.15) (extrapolated beyond)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (seq_len - base_seq_len)


def time_shift(mu: float, t: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """e^mu / (e^mu + (1/t - 1)^sigma): moves t towards 1 (more noise) for mu > 0."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def discrete_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """shift * t / (1 + (shift - 1) * t): SD3's constant shift (t = 0.5 -> 0.75 at shift 3)."""
    return t * shift / (1 + (shift - 1) * t)


def sample_timesteps(
    method: str,
    batch: int,
    generator: torch.Generator | None = None,
    *,
    sigmoid_scale: float = 1.0,
    discrete_flow_shift: float = 3.0,
    image_seq_len: int | None = None,
) -> torch.Tensor:
    """Draw ``batch`` noise levels (sigmas) as sd-scripts' ``--timestep_sampling`` does.

    uniform: U(0, 1). sigmoid: sigmoid(scale * N(0, 1)). shift: sigmoid sample, then the
    constant ``discrete_flow_shift``. flux_shift: sigmoid sample, then ``time_shift`` with
    ``mu`` from ``image_seq_len`` (required). sigma: uniform over the 1000 discrete,
    shifted sigmas of the training scheduler (sd-scripts' default with no weighting
    scheme; its range is (0, 1], the others' (0, 1)). Returns float32 on the generator's device.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown timestep sampling {method!r}: one of {', '.join(SAMPLING_METHODS)}")
    device = generator.device if generator is not None else None
    if method in ("uniform", "sigma"):
        u = torch.rand(batch, generator=generator, device=device)
        if method == "uniform":
            return u
        steps = (u * NUM_TRAIN_TIMESTEPS).long()  # index into the scheduler's descending sigmas
        return discrete_shift((NUM_TRAIN_TIMESTEPS - steps) / NUM_TRAIN_TIMESTEPS, discrete_flow_shift)
    t = torch.sigmoid(sigmoid_scale * torch.randn(batch, generator=generator, device=device))
    if method == "sigmoid":
        return t
    if method == "shift":
        return discrete_shift(t, discrete_flow_shift)
    if image_seq_len is None:
        raise ValueError("flux_shift needs image_seq_len (packed image tokens, e.g. packed_seq_len(h, w))")
    return time_shift(flux_mu(image_seq_len), t)


def _per_sample(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast over ``like``; scalars pass through."""
    sigmas = torch.as_tensor(sigmas, device=like.device, dtype=like.dtype)
    return sigmas.view(-1, *([1] * (like.ndim - 1))) if sigmas.ndim else sigmas


def noisy_input(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - sigma) * x_0 + sigma * noise, per sample."""
    s = _per_sample(sigmas, latents)
    return (1 - s) * latents + s * noise


def flow_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model learns (d x_t / d sigma): noise - x_0."""
    return noise - latents


def transformer_timestep(sigmas: torch.Tensor) -> torch.Tensor:
    """The ``timestep`` for diffusers' FluxTransformer2DModel: sigma itself (it multiplies by 1000)."""
    return sigmas


def guidance_input(
    guidance_embeds: bool, scale: float, batch: int, *, device: torch.device | str | None = None
) -> torch.Tensor | None:
    """The ``guidance`` argument: the plain scale per sample for dev, None for schnell."""
    if not guidance_embeds:
        return None
    return torch.full((batch,), float(scale), device=device, dtype=torch.float32)


def _vae_factors(vae_config: Mapping) -> tuple[float, float]:
    """(shift, scale) of a VAE config; SD VAEs have ``shift_factor`` None, i.e. 0."""
    return float(vae_config.get("shift_factor") or 0.0), float(vae_config["scaling_factor"])


def to_latent_space(latents: torch.Tensor, vae_config: Mapping) -> torch.Tensor:
    """VAE encoder output -> the model's latent space: (x - shift_factor) * scaling_factor."""
    shift, scale = _vae_factors(vae_config)
    return (latents - shift) * scale


def from_latent_space(latents: torch.Tensor, vae_config: Mapping) -> torch.Tensor:
    """The model's latents -> VAE decoder input: x / scaling_factor + shift_factor."""
    shift, scale = _vae_factors(vae_config)
    return latents / scale + shift
