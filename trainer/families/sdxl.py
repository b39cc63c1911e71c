"""SDXL: CLIP-L and OpenCLIP bigG (pooled) text encoders, "text_time" micro-conditioning, and
sd-scripts' keys in the original (SGM) UNet numbering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import ModelFamily

# levels x (layers_per_block + 1) <= 10 keeps diffusers' mapping of sd-scripts' SDXL
# names (input_blocks_N_1 ...) back to diffusers names unambiguous.
TINY_LEVELS = 3
TINY_LAYERS_PER_BLOCK = 2
assert TINY_LEVELS * (TINY_LAYERS_PER_BLOCK + 1) <= 10

_ORIGINAL = [
    (re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$"), "input_blocks"),
    (re.compile(r"^mid_block\.attentions\.0\.(.*)$"), "middle_block"),
    (re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$"), "output_blocks"),
]
_PARTS = (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13))

_BLOCKS = {
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": TINY_LAYERS_PER_BLOCK,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
}
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_BLOCKS, "block_out_channels": (32, 64, 64), "transformer_layers_per_block": (1, 1, 2),
        "attention_head_dim": (2, 4, 4), "cross_attention_dim": 64, "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 8 * 6 + 32, "sample_size": 16,
    },
    "full": {
        **_BLOCKS, "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048, "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    },
}  # fmt: skip


def original_path(name: str, layers_per_block: int) -> str:
    """Map a diffusers SDXL UNet module path to the original SGM path sd-scripts uses."""
    per_level = layers_per_block + 1
    for pattern, kind in _ORIGINAL:
        m = pattern.match(name)
        if not m:
            continue
        if kind == "middle_block":
            return f"middle_block.1.{m.group(1)}"
        level, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if kind == "input_blocks":
            return f"input_blocks.{1 + level * per_level + index}.1.{rest}"
        return f"output_blocks.{level * per_level + index}.1.{rest}"
    raise ValueError(f"no SDXL original name for UNet module {name!r}")


def time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> torch.Tensor:
    """SDXL's micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)."""
    return torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)


class SDXL(ModelFamily):
    key = "sdxl"
    checkpoint_markers = ("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")
    text_encoder_attrs = ("text_encoder", "text_encoder_2")
    tokenizer_attrs = ("tokenizer", "tokenizer_2")
    vae_fp16_safe = False
    base_model_version = "sdxl_base_v1-0"
    architecture = "stable-diffusion-xl-v1-base/lora"
    implementation = "https://github.com/Stability-AI/generative-models"
    clip_final_norm = False

    def matches_index(self, model_index: dict[str, Any]) -> bool:
        return "unet" in model_index and (
            "text_encoder_2" in model_index or "XL" in str(model_index.get("_class_name", ""))
        )

    def pipeline_class(self):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline

    def deepest_clip_skip(self, layers: int) -> int:
        return layers - 1  # SDXL already starts at the penultimate layer

    def clip_hidden_layer(self, clip_skip: int) -> int:
        return -(clip_skip + 1)

    def join_conditioning(self, states, outputs, chunks):
        return torch.cat(states, dim=-1), outputs[1].text_embeds[::chunks]

    def training_conditioning(self, items, pooled):
        return {"text_embeds": pooled, "time_ids": torch.stack([it.time_ids for it in items])}

    def prepare_items(self, items, device) -> None:
        for it in items:
            it.time_ids = time_ids(it.original_size, it.crop_top_left, it.bucket[::-1]).to(device)

    def layers_per_block(self, unet: nn.Module) -> int:
        lpb = unet.config.layers_per_block
        if not isinstance(lpb, int):
            raise ValueError("sd-scripts' SDXL names need an integer layers_per_block")
        return lpb

    def unet_key(self, name: str, layers_per_block: int) -> str:
        return "lora_unet_" + original_path(name, layers_per_block).replace(".", "_")

    def block_index(self, key: str) -> int:
        name = key.removeprefix("lora_unet_")
        if name == key:
            return -1
        if name.startswith(("time_embed_", "label_emb_")):
            return 0
        for prefix, first in _PARTS:
            if name.startswith(prefix):
                return first + int(name[len(prefix) :].split("_", 1)[0])
        return 22 if name.startswith("out_") else -1

    def clip_skip_metadata(self, clip_skip: int) -> int | None:
        return None if clip_skip == 1 else clip_skip  # sd-scripts writes None for the usual layer

    def build_pipeline(self, model: Any, scheduler: Any):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=model.vae,
            unet=model.unet,
            scheduler=scheduler,
            text_encoder=model.text_encoders[0],
            text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0],
            tokenizer_2=model.tokenizers[1],
        )

    def render_inputs(self, cond, uncond) -> dict[str, Any]:
        return dict(
            prompt_embeds=cond.embeds,
            negative_prompt_embeds=uncond.embeds,
            pooled_prompt_embeds=cond.pooled,
            negative_pooled_prompt_embeds=uncond.pooled,
        )

    def unet_config(self, size: str) -> dict[str, Any]:
        return UNET_CONFIGS[size]

    def build_tiny(self, tokenizer_dir: Path, size: str):
        from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTokenizer

        from .. import tiny

        vocab_size = tiny.write_byte_level_tokenizer(tokenizer_dir)
        tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
        first, second = ("tiny", "tiny") if size == "tiny" else ("clip_l", "clip_g")
        return StableDiffusionXLPipeline(
            vae=tiny.make_vae(0.13025, force_upcast=True, size=size),
            text_encoder=tiny.make_text_encoder(vocab_size, tiny.TEXT_SHAPES[first], False),
            text_encoder_2=tiny.make_text_encoder(vocab_size, tiny.TEXT_SHAPES[second], True),
            tokenizer=tok,
            tokenizer_2=tok,
            unet=UNet2DConditionModel(in_channels=4, out_channels=4, **UNET_CONFIGS[size]),
            scheduler=tiny.make_scheduler(),
        )


FAMILY = SDXL()
