"""What a model family's module provides: one small class per family, no mixin towers.

The trainer asks the family (``get_family(key)``) instead of comparing family names: how to
detect and load it, which text-encoder layers and outputs condition it, how its LoRA keys are
named in sd-scripts' files, its block numbering, its metadata values, how it renders, and its tiny
test model. The torch-free facts (label, default side, costs, refused options) are its row in
:mod:`trainer.contract.families`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..contract.families import FamilyInfo, family_info
from .prediction import Prediction, read_prediction


class ModelFamily:
    """A family's hooks; subclasses set the class facts and override what differs."""

    key: ClassVar[str]
    #: tensor-name prefixes that mark a single-file checkpoint of this family
    checkpoint_markers: ClassVar[tuple[str, ...]] = ()
    #: the diffusers pipeline's text encoders and tokenizers, in conditioning order
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_attrs: ClassVar[tuple[str, ...]] = ("tokenizer",)
    #: whether the VAE may run in fp16 (SDXL's overflows: it stays fp32 there)
    vae_fp16_safe: ClassVar[bool] = True
    #: the pipeline's denoiser (held as ``BaseModel.unet``): a UNet, or a transformer
    denoiser_attr: ClassVar[str] = "unet"
    #: "noise" (epsilon / v prediction on a DDPM schedule) or "flow" (flow matching: ``flow_loss``)
    objective: ClassVar[str] = "noise"
    #: the family's own export / import of sd-scripts' file (None: trainer.kohya's UNet naming)
    export_state_dict: ClassVar[Any] = None
    import_state_dict: ClassVar[Any] = None
    #: the family's own text encoding ``encode(encoders, tokenizers, texts, device, length)`` ->
    #: (embeds, pooled), or None: CLIP hidden states with clip skip (``join_conditioning``)
    encode: ClassVar[Any] = None
    #: sd-scripts' ``ss_base_model_version`` and the modelspec architecture and implementation
    base_model_version: ClassVar[str]
    architecture: ClassVar[str]
    implementation: ClassVar[str]

    @property
    def info(self) -> FamilyInfo:
        return family_info(self.key)

    # Detection and loading ----------------------------------------------------------------------
    def matches_index(self, model_index: dict[str, Any]) -> bool:
        """Whether a diffusers folder's ``model_index.json`` is this family's."""
        raise NotImplementedError

    def pipeline_class(self):
        raise NotImplementedError

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {}

    # Prediction type and noise schedule ---------------------------------------------------------
    def read_prediction(self, source: str) -> Prediction:
        """What the model at ``source`` states of v-prediction and zero terminal SNR (a folder's
        scheduler config; a checkpoint's ``v_pred`` / ``ztsnr`` markers): see :mod:`.prediction`."""
        return read_prediction(source)

    def model_version(self, v_prediction: bool) -> str:
        """sd-scripts' ``ss_base_model_version`` of a LoRA trained with or without v-prediction."""
        return self.base_model_version

    # Text conditioning --------------------------------------------------------------------------
    def deepest_clip_skip(self, layers: int) -> int:
        """The largest clip_skip a text encoder of ``layers`` layers allows."""
        return layers

    def clip_hidden_layer(self, clip_skip: int) -> int:
        """The hidden-state index the conditioning is read from (negative, from the end)."""
        return -clip_skip

    #: whether the chosen hidden state goes through the encoder's final layer norm
    clip_final_norm: ClassVar[bool] = True

    def join_conditioning(
        self, states: list[torch.Tensor], outputs: list[Any], chunks: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeds, pooled) from each encoder's hidden states and outputs (``chunks`` of 75 tokens)."""
        return states[0], None

    def training_conditioning(self, items: list[Any], pooled: torch.Tensor | None) -> dict | None:
        """Extra UNet inputs of a training batch (SDXL's text embeds and time ids), or None."""
        return None

    def prepare_items(self, items: list[Any], device: torch.device) -> None:
        """Per-image conditioning computed once, after the latents are cached."""

    def sequence_length(self, model: Any, job_length: int | None) -> int | None:
        """The text sequence length a job encodes at (families with a T5); None: CLIP's."""
        return None

    def flow_loss(self, run: Any, latents: torch.Tensor, cond: Any, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{self.key} trains by noise prediction")

    def trainable_text_encoders(self, text_encoders: list[nn.Module]) -> list[nn.Module]:
        """The text encoders that get LoRA when the job trains them."""
        return text_encoders

    def memory_levers(self, job: Any) -> list[str]:
        """What else a job of this family can lower after running out of memory."""
        return []

    def denoiser_targets(self, denoiser: nn.Module) -> list[str]:
        """The denoiser's modules that get LoRA (sd-scripts' targets)."""
        from ..lora import unet_target_modules

        return unet_target_modules(denoiser)

    # sd-scripts' file ---------------------------------------------------------------------------
    def layers_per_block(self, unet: nn.Module) -> int:
        """The UNet's layers per block where its key names need it; else 0."""
        return 0

    def unet_key(self, name: str, layers_per_block: int) -> str:
        """sd-scripts' key of the UNet module at diffusers path ``name``."""
        return "lora_unet_" + name.replace(".", "_")

    def text_encoder_prefix(self, index: int) -> str:
        return f"lora_te{index + 1}_"

    def block_index(self, key: str) -> int:
        """sd-scripts' block index of a UNet module from its kohya key; -1 if none."""
        return -1

    def architecture_of(self, model: Any) -> str:
        """The modelspec architecture of a LoRA on ``model`` (a family's variants may differ)."""
        return self.architecture

    def extra_metadata(self, run: Any) -> dict[str, Any]:
        """The ``ss_*`` keys sd-scripts' trainer for this family adds (its ``update_metadata``)."""
        return {}

    def clip_skip_metadata(self, clip_skip: int | None) -> int | None:
        """The clip skip sd-scripts records in the file's metadata."""
        return clip_skip

    # Rendering ----------------------------------------------------------------------------------
    def build_pipeline(self, model: Any, scheduler: Any):
        """A diffusers pipeline over the model's (possibly LoRA-wrapped) modules; no copies."""
        raise NotImplementedError

    def make_scheduler(self, sampler: str, scheduler_config: dict[str, Any]):
        """The sampler named in a job (euler_a, dpmpp_2m, ...) on the model's noise schedule."""
        from ..render import make_sampler

        return make_sampler(sampler, scheduler_config)

    def render_inputs(self, cond: Any, uncond: Any) -> dict[str, Any]:
        return dict(prompt_embeds=cond.embeds, negative_prompt_embeds=uncond.embeds)

    def decode(
        self, pipe: Any, vae: nn.Module, latents: torch.Tensor, width: int, height: int
    ) -> torch.Tensor:
        """The pipeline's latents -> pixels in [-1, 1] (``vae`` in its own dtype)."""
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample

    def lora_for_diffusers(self, state: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
        """A LoRA file as ``load_lora_weights`` should get it. diffusers 0.42 gives attention
        modules the file's most common alpha, so per-module alphas (block_alphas) are folded into
        the up weights first and each module keeps its strength."""
        from ..kohya import uniform_alpha

        return uniform_alpha(state)

    # Full-size shapes (benchmarks, FLOP counts: bench/family_flops.py) ---------------------------
    def meta_denoiser(self) -> nn.Module:
        """The full-size denoiser on the meta device: its shapes, no weights."""
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):
            return UNet2DConditionModel.from_config(self.unet_config("full"))

    def example_inputs(self, denoiser: nn.Module, side: int, dtype: torch.dtype, device) -> dict[str, Any]:
        """Random inputs of one training forward at ``side`` px, batch 1 (77 CLIP tokens)."""
        cfg, lat = denoiser.config, side // 8
        inputs: dict[str, Any] = dict(
            sample=torch.randn(1, cfg.in_channels, lat, lat, dtype=dtype, device=device),
            timestep=torch.tensor([500], device=device),
            encoder_hidden_states=torch.randn(1, 77, cfg.cross_attention_dim, dtype=dtype, device=device),
        )
        if cfg.addition_embed_type == "text_time":  # SDXL-style pooled text and size conditioning
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            inputs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(1, pooled, dtype=dtype, device=device),
                "time_ids": torch.randn(1, 6, dtype=dtype, device=device),
            }
        return inputs

    def unet_config(self, size: str) -> dict[str, Any]:
        """The UNet's diffusers config at ``size`` ("tiny" or "full")."""
        raise NotImplementedError

    # The tiny test model ------------------------------------------------------------------------
    def build_tiny(self, tokenizer_dir: Path, size: str):
        """The family's pipeline with random weights: ``tiny`` for tests, ``full`` for benchmarks."""
        raise NotImplementedError
