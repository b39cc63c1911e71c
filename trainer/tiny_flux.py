"""A tiny Flux.1-shaped pipeline built from config with seeded random weights.

The Flux counterpart of ``trainer/tiny.py``: a diffusers ``FluxPipeline`` folder (MMDiT
transformer with double- and single-stream blocks, CLIP-L-like and T5-like text encoders,
16-channel VAE with Flux's scale and shift, dynamically shifted flow-matching scheduler)
at a width that renders on a CPU in well under a second. ``flux_full_config()`` gives the
real Flux.1-dev transformer's config for shape tests on the meta device.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .tiny import TEXT_SHAPES, VAE_SHAPES, make_text_encoder, write_byte_level_tokenizer

#: Flux's VAE normalization: latents = (vae_latents - shift_factor) * scaling_factor.
FLUX_VAE_SCALING_FACTOR = 0.3611
FLUX_VAE_SHIFT_FACTOR = 0.1159
FLUX_LATENT_CHANNELS = 16
VARIANTS = ("dev", "schnell")
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5's own vocabulary
_T5_CHARS = [chr(c) for c in range(ord("!"), ord("~") + 1)]
_T5_WORD_STARTS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]

#: ``(size, variant)`` -> FluxTransformer2DModel config. in_channels = 16 latent channels x 2x2
#: packing; axes_dims_rope (time, row, column) sum to the head dim.
_TRANSFORMER_SHAPES = {
    "tiny": {
        "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
        "axes_dims_rope": (4, 6, 6),
    },
    "full": {
        "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
        "axes_dims_rope": (16, 56, 56),
    },
}  # fmt: skip
_T5_SHAPES = {
    "tiny": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
    "full": {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64},  # T5-XXL
}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown Flux variant {variant!r}: dev or schnell")


def flux_transformer_config(size: str = "tiny", variant: str = "dev") -> dict:
    """The transformer config for ``size`` (tiny | full) and ``variant`` (dev | schnell).

    dev is guidance-distilled (``guidance_embeds=True``: it takes the guidance scale as an
    input); schnell is timestep-distilled and has no guidance embedder.
    """
    _check_variant(variant)
    text_width = TEXT_SHAPES["tiny" if size == "tiny" else "clip_l"].hidden
    return {
        "patch_size": 1,
        "in_channels": FLUX_LATENT_CHANNELS * 4,
        "joint_attention_dim": _T5_SHAPES[size]["d_model"],
        "pooled_projection_dim": text_width,  # CLIP's pooled output, no projection
        "guidance_embeds": variant == "dev",
        **_TRANSFORMER_SHAPES[size],
    }


def flux_full_config() -> dict:
    """The real Flux.1-dev transformer config (about 11.9B parameters): build it on the meta device."""
    return flux_transformer_config("full", "dev")


def write_t5_tokenizer(out_dir: Path) -> int:
    """Write a T5 tokenizer (Unigram, like T5's SentencePiece model) over printable ASCII.

    Pieces are the specials, the word-start marker, every printable ASCII character and
    word-start forms of letters and digits, so any ASCII caption encodes without ``<unk>``.
    Returns the vocabulary size.
    """
    from transformers import T5TokenizerFast

    pieces = [(s, 0.0) for s in T5_SPECIALS] + [("▁", -3.0)]
    pieces += [("▁" + c, -2.0) for c in _T5_WORD_STARTS] + [(c, -2.5) for c in _T5_CHARS]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    tok.save_pretrained(out_dir)
    return len(pieces)


def _t5_encoder(vocab_size: int, size: str):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL
        relative_attention_num_buckets=8 if size == "tiny" else 32,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
        **_T5_SHAPES[size],
    )
    return T5EncoderModel(config)


def _flux_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=FLUX_LATENT_CHANNELS,
        sample_size=64,
        scaling_factor=FLUX_VAE_SCALING_FACTOR,
        shift_factor=FLUX_VAE_SHIFT_FACTOR,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **VAE_SHAPES["tiny"],
    )


def flux_scheduler(variant: str = "dev"):
    """Flux's FlowMatchEulerDiscreteScheduler: dev shifts by image size (mu from 256..4096 tokens)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0 if variant == "dev" else 1.0,
        use_dynamic_shifting=variant == "dev",
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_flux(tok_dir: Path, variant: str = "dev"):
    """The tiny pipeline, unsaved; tokenizers are written under ``tok_dir`` and read back."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5TokenizerFast

    clip_vocab = write_byte_level_tokenizer(tok_dir / "clip")
    t5_vocab = write_t5_tokenizer(tok_dir / "t5")
    return FluxPipeline(
        scheduler=flux_scheduler(variant),
        vae=_flux_vae(),
        text_encoder=make_text_encoder(clip_vocab, TEXT_SHAPES["tiny"], False),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir / "clip"),
        text_encoder_2=_t5_encoder(t5_vocab, "tiny"),
        tokenizer_2=T5TokenizerFast.from_pretrained(tok_dir / "t5"),
        transformer=FluxTransformer2DModel(**flux_transformer_config("tiny", variant)),
    )


def make_tiny_flux(out: str | Path, size: str = "tiny", *, seed: int = 0, variant: str = "dev") -> Path:
    """Build a tiny Flux.1 ``variant`` (dev | schnell) with seeded weights; save it in diffusers layout.

    ``size="full"`` is refused: the real transformer alone is 12B parameters (and T5-XXL
    4.7B), too big to write as random weights. Shape tests build the transformer from
    ``flux_full_config()`` on the meta device instead.
    """
    if size != "tiny":
        raise ValueError(
            f"size {size!r}: only 'tiny' is saved; build full-size Flux on the meta device from flux_full_config()"
        )
    _check_variant(variant)
    out = Path(out)
    torch.manual_seed(seed)
    tok_dir = out / "_tokenizer_src"
    pipe = build_flux(tok_dir, variant)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(tok_dir)
    return out
