"""Tiny models of each family built from config with seeded random weights.

Nothing on this project's machines can download weights, so tests and the offline
demo build these and then load them through exactly the code that loads a real
model (a diffusers folder). They keep the real architectures' module layout and
naming (cross-attention transformer blocks, conv or linear proj_in, two text
encoders and "text_time" conditioning for SDXL) at a tiny width.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .families import get_family


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_byte_level_tokenizer(out_dir: Path) -> int:
    """Write a CLIP tokenizer whose vocabulary is the 256 byte symbols (and their word-final forms).

    Without merges every character is one token; that is all a tiny model needs, and it
    exercises the same CLIPTokenizer code (BOS/EOS, padding to 77) as the real vocabulary.
    Returns the vocabulary size.
    """
    from transformers import CLIPTokenizer

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tok.save_pretrained(out_dir)
    return len(vocab)


@dataclass(frozen=True)
class TextShape:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    projection: int


TEXT_SHAPES = {
    "tiny": TextShape(32, 4, 4, 64, 32),
    "clip_l": TextShape(768, 12, 12, 3072, 768),  # SD1.5's encoder, SDXL's first
    "clip_g": TextShape(1280, 32, 20, 5120, 1280),  # SDXL's second (OpenCLIP bigG)
}
VAE_SHAPES = {
    "tiny": {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8},
    "full": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
}


def make_text_encoder(vocab_size: int, shape: TextShape, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=77,
        projection_dim=shape.projection,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def make_vae(scaling_factor: float, force_upcast: bool, size: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=64,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
        **VAE_SHAPES[size],
    )


def make_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def make_tiny(family: str, out: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Build the model of ``family`` (a key of the family table) with random weights; save it in
    diffusers layout.

    ``size="full"`` gives the real architectures' widths and depths (random weights; for
    GPU benchmarks), ``"tiny"`` the small test model.
    """
    out = Path(out)
    torch.manual_seed(seed)
    tok_dir = out / "_tokenizer_src"
    pipe = get_family(family).build_tiny(tok_dir, size)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(tok_dir)
    return out
