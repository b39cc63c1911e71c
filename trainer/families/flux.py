"""Flux.1 (dev and schnell): a FluxTransformer2DModel trained by flow matching, CLIP-L (pooled) and
T5-XXL (sequence) text encoders, a 16-channel VAE with scale and shift, 2x2 latent packing, and
sd-scripts' Flux LoRA file (:mod:`trainer.flux_kohya`).

Training follows sd-scripts' ``flux_train_network.py``: noise levels from ``timestep_sampling``
(default ``shift`` at 3.1582, the setting its Flux docs recommend), the raw velocity as target
(``model_prediction_type raw``), guidance 1.0 for dev, T5 512 tokens for dev and 256 for schnell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import flow
from .base import ModelFamily

DEFAULT_SAMPLING = "shift"
DEFAULT_FLOW_SHIFT = 3.1582
T5_MAX_LENGTH = {"dev": 512, "schnell": 256}


def variant(transformer: nn.Module) -> str:
    """dev (guidance-distilled: a guidance input) or schnell (none)."""
    return "dev" if transformer.config.get("guidance_embeds", False) else "schnell"


class Flux(ModelFamily):
    key = "flux"
    checkpoint_markers = ("double_blocks.", "model.diffusion_model.double_blocks.")
    text_encoder_attrs = ("text_encoder", "text_encoder_2")
    tokenizer_attrs = ("tokenizer", "tokenizer_2")
    denoiser_attr = "transformer"
    objective = "flow"
    base_model_version = "flux1"  # sd-scripts' MODEL_VERSION_FLUX_V1
    architecture = "flux-1-dev/lora"
    implementation = "https://github.com/black-forest-labs/flux"

    def matches_index(self, model_index: dict[str, Any]) -> bool:
        return str(model_index.get("_class_name", "")).startswith("Flux")

    def pipeline_class(self):
        from diffusers import FluxPipeline

        return FluxPipeline

    def pipeline_kwargs(self) -> dict[str, Any]:
        return dict(torch_dtype=torch.bfloat16)  # its published weights; fp32 would take 68 GB of RAM

    # Text: CLIP-L's pooled output and T5's last hidden state; no clip skip ------------------------
    def encode(
        self, text_encoders: list[nn.Module], tokenizers: list, texts: list[str], device, length: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        clip, t5 = text_encoders
        clip_tok, t5_tok = tokenizers
        ids = clip_tok(texts, padding="max_length", max_length=clip_tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.to(device)  # fmt: skip
        pooled = clip(ids, output_hidden_states=False).pooler_output
        length = min(length or 512, t5_tok.model_max_length or 512)
        ids = t5_tok(texts, padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt").input_ids.to(device)  # fmt: skip
        return t5(ids, output_hidden_states=False)[0], pooled

    def trainable_text_encoders(self, text_encoders: list[nn.Module]) -> list[nn.Module]:
        return text_encoders[:1]  # CLIP-L (lora_te1_), as sd-scripts; T5-XXL stays frozen

    def memory_levers(self, job: Any) -> list[str]:
        """After gradient checkpointing: the frozen transformer in 4 bits (24 GB -> about 7), then
        the T5 length (the text is cached, but every step attends over its tokens)."""
        levers = []
        if job.quantize_base != "nf4":
            levers.append("set quantize_base to nf4 (the frozen transformer in 4 bits: 24 GB -> about 7)")
        if job.t5_max_length is None or job.t5_max_length > 256:
            levers.append("lower t5_max_length to 256 (dev's default is 512)")
        return levers

    def sequence_length(self, model: Any, job_length: int | None) -> int | None:
        return job_length or T5_MAX_LENGTH[variant(model.unet)]

    # Training: flow matching on packed latents ---------------------------------------------------
    def flow_loss(self, run: Any, latents: torch.Tensor, cond: Any, gen: torch.Generator) -> torch.Tensor:
        """MSE between the transformer's output and the velocity (noise - latents), sd-scripts' raw
        prediction; every draw from ``gen`` on the CPU (the same on any device, resumable)."""
        job, transformer = run.job, run.model.unet
        b, c, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
        sigmas = flow.sample_timesteps(
            job.timestep_sampling or DEFAULT_SAMPLING, b, gen,
            sigmoid_scale=job.sigmoid_scale or 1.0,
            discrete_flow_shift=job.discrete_flow_shift or DEFAULT_FLOW_SHIFT,
            image_seq_len=flow.packed_seq_len(h, w),
        ).to(latents.device)  # fmt: skip
        noisy = flow.pack_latents(flow.noisy_input(latents, noise, sigmas))
        guidance = flow.guidance_input(
            variant(transformer) == "dev", job.guidance_scale if job.guidance_scale is not None else 1.0,
            b, device=latents.device,
        )  # fmt: skip
        pred = transformer(
            hidden_states=noisy.to(run.dtype),
            timestep=flow.transformer_timestep(sigmas).to(run.dtype),
            guidance=guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.embeds,
            txt_ids=flow.text_ids(cond.embeds.shape[1], device=latents.device),
            img_ids=flow.latent_image_ids(h, w, device=latents.device),
            return_dict=False,
        )[0]
        target = flow.pack_latents(flow.flow_target(latents, noise))
        return F.mse_loss(pred.float(), target.float())

    # The file: sd-scripts' Flux naming --------------------------------------------------------------
    def denoiser_targets(self, denoiser: nn.Module) -> list[str]:
        from ..flux_kohya import flux_target_modules

        return flux_target_modules(denoiser)

    def export_state_dict(self, denoiser, text_encoders, dtype) -> dict[str, torch.Tensor]:
        from ..flux_kohya import export_flux_state_dict

        return export_flux_state_dict(denoiser, text_encoders, dtype)

    def import_state_dict(self, state, denoiser, text_encoders) -> list[str]:
        from ..flux_kohya import import_flux_state_dict

        return import_flux_state_dict(state, denoiser, text_encoders)

    def clip_skip_metadata(self, clip_skip: int | None) -> int | None:
        return None

    def architecture_of(self, model: Any) -> str:
        return f"flux-1-{variant(model.unet)}/lora"  # sd-scripts' flux-1-dev / flux-1-schnell

    def extra_metadata(self, run: Any) -> dict[str, Any]:
        """sd-scripts' ``flux_train_network.py`` ``update_metadata`` keys, with this run's values
        (its weighting is uniform and its logit/mode options unused, as here)."""
        job = run.job
        return {
            "ss_model_type": "flux", "ss_apply_t5_attn_mask": False, "ss_weighting_scheme": "uniform",
            "ss_logit_mean": 0.0, "ss_logit_std": 1.0, "ss_mode_scale": 1.29,
            "ss_guidance_scale": job.guidance_scale if job.guidance_scale is not None else 1.0,
            "ss_timestep_sampling": job.timestep_sampling or DEFAULT_SAMPLING,
            "ss_sigmoid_scale": job.sigmoid_scale or 1.0, "ss_model_prediction_type": "raw",
            "ss_discrete_flow_shift": job.discrete_flow_shift or DEFAULT_FLOW_SHIFT,
        }  # fmt: skip

    # Rendering --------------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str, scheduler_config: dict[str, Any]):
        """Flux samples with its own flow-matching Euler scheduler, whatever the SD sampler name."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)

    def build_pipeline(self, model: Any, scheduler: Any):
        from diffusers import FluxPipeline

        return FluxPipeline(
            scheduler=scheduler,
            vae=model.vae,
            text_encoder=model.text_encoders[0],
            tokenizer=model.tokenizers[0],
            text_encoder_2=model.text_encoders[1],
            tokenizer_2=model.tokenizers[1],
            transformer=model.unet,
        )

    def render_inputs(self, cond, uncond) -> dict[str, Any]:
        return dict(prompt_embeds=cond.embeds, pooled_prompt_embeds=cond.pooled)  # no negative: distilled

    def decode(self, pipe, vae, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The pipeline's packed latents -> pixels (unpacked, then the VAE's shift and scale undone)."""
        scale = pipe.vae_scale_factor
        unpacked = flow.unpack_latents(latents, 2 * (height // (scale * 2)), 2 * (width // (scale * 2)))
        return vae.decode(flow.from_latent_space(unpacked.to(vae.dtype), vae.config)).sample

    def lora_for_diffusers(self, state: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
        """An sd-scripts Flux file as diffusers' peft keys on this transformer, exactly (fused rows
        split by the model's own widths, alpha / rank folded into the up weights): diffusers' own
        kohya-Flux converter hard-codes the full-size widths."""
        from ..flux_kohya import diffusers_lora_state

        return diffusers_lora_state(state, model.unet, model.text_encoders[0])

    # Full-size shapes ---------------------------------------------------------------------------------
    def meta_denoiser(self) -> nn.Module:
        from diffusers import FluxTransformer2DModel

        from ..tiny_flux import flux_full_config

        with torch.device("meta"):
            return FluxTransformer2DModel.from_config(flux_full_config())

    def example_inputs(self, denoiser: nn.Module, side: int, dtype: torch.dtype, device) -> dict[str, Any]:
        """Packed latents at ``side`` px and the T5 sequence of the variant's default length."""
        cfg, lat = denoiser.config, side // 8
        tokens, text = (lat // 2) ** 2, T5_MAX_LENGTH[variant(denoiser)]
        return dict(
            hidden_states=torch.randn(1, tokens, cfg.in_channels, dtype=dtype, device=device),
            encoder_hidden_states=torch.randn(1, text, cfg.joint_attention_dim, dtype=dtype, device=device),
            pooled_projections=torch.randn(1, cfg.pooled_projection_dim, dtype=dtype, device=device),
            timestep=torch.tensor([0.5], device=device),
            img_ids=flow.latent_image_ids(lat, lat, device=device),
            txt_ids=flow.text_ids(text, device=device),
            guidance=torch.tensor([1.0], device=device) if cfg.guidance_embeds else None,
            return_dict=False,
        )

    # The tiny test model ------------------------------------------------------------------------------
    def build_tiny(self, tokenizer_dir: Path, size: str):
        from ..tiny_flux import build_flux

        if size != "tiny":
            raise ValueError(
                "full-size Flux is built on the meta device (trainer.tiny_flux.flux_full_config)"
            )
        return build_flux(tokenizer_dir)


FAMILY = Flux()
