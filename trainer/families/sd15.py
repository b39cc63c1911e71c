"""Stable Diffusion 1.x: one CLIP-L text encoder, epsilon (or v) UNet, sd-scripts' diffusers-path keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import ModelFamily

# sd-scripts' RE_UPDOWN, on SD1.5 keys (diffusers paths with "_").
_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")

_BLOCKS = {
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_BLOCKS, "block_out_channels": (32, 64, 64), "layers_per_block": 1, "attention_head_dim": 4,
        "cross_attention_dim": 32, "sample_size": 16,
    },
    "full": {
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "attention_head_dim": 8,
        "cross_attention_dim": 768, "sample_size": 64,
    },
}  # fmt: skip


class SD15(ModelFamily):
    key = "sd15"
    checkpoint_markers = ("cond_stage_model.transformer.", "cond_stage_model.model.")
    base_model_version = "sd_v1"
    architecture = "stable-diffusion-v1/lora"
    implementation = "diffusers"

    def matches_index(self, model_index: dict[str, Any]) -> bool:
        return (
            "unet" in model_index
            and "text_encoder_2" not in model_index
            and "XL" not in str(model_index.get("_class_name", ""))
        )

    def pipeline_class(self):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def pipeline_kwargs(self) -> dict[str, Any]:
        return dict(safety_checker=None, requires_safety_checker=False)

    def model_version(self, v_prediction: bool) -> str:
        return self.base_model_version + ("_v" if v_prediction else "")  # sd-scripts' "sd_v1_v"

    def text_encoder_prefix(self, index: int) -> str:
        return "lora_te_"

    def block_index(self, key: str) -> int:
        m = _UPDOWN.search(key)
        if m:
            kind, level, part, index = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
            idx = 3 * level + (2 if part.endswith("samplers") else index)
            return 1 + idx if kind == "down" else 13 + idx
        return 12 if "mid_block_" in key else -1

    def build_pipeline(self, model: Any, scheduler: Any):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=model.vae,
            unet=model.unet,
            scheduler=scheduler,
            text_encoder=model.text_encoders[0],
            tokenizer=model.tokenizers[0],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def unet_config(self, size: str) -> dict[str, Any]:
        return UNET_CONFIGS[size]

    def build_tiny(self, tokenizer_dir: Path, size: str):
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTokenizer

        from .. import tiny

        vocab_size = tiny.write_byte_level_tokenizer(tokenizer_dir)
        text_shape = tiny.TEXT_SHAPES["tiny" if size == "tiny" else "clip_l"]
        return StableDiffusionPipeline(
            vae=tiny.make_vae(0.18215, force_upcast=False, size=size),
            text_encoder=tiny.make_text_encoder(vocab_size, text_shape, False),
            tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
            unet=UNet2DConditionModel(in_channels=4, out_channels=4, **UNET_CONFIGS[size]),
            scheduler=tiny.make_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


FAMILY = SD15()
