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

    def clip_skip_metadata(self, clip_skip: int) -> int | None:
        """The clip skip sd-scripts records in the file's metadata."""
        return clip_skip

    # Rendering ----------------------------------------------------------------------------------
    def build_pipeline(self, model: Any, scheduler: Any):
        """A diffusers pipeline over the model's (possibly LoRA-wrapped) modules; no copies."""
        raise NotImplementedError

    def render_inputs(self, cond: Any, uncond: Any) -> dict[str, Any]:
        return dict(prompt_embeds=cond.embeds, negative_prompt_embeds=uncond.embeds)

    # The tiny test model ------------------------------------------------------------------------
    def build_tiny(self, tokenizer_dir: Path, size: str):
        """The family's pipeline with random weights: ``tiny`` for tests, ``full`` for benchmarks."""
        raise NotImplementedError
