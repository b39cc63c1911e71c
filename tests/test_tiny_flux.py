"""The tiny Flux.1 pipeline: loads offline through FluxPipeline, renders, and is reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.tiny_flux import (
    FLUX_VAE_SCALING_FACTOR,
    FLUX_VAE_SHIFT_FACTOR,
    flux_full_config,
    make_tiny_flux,
)

CAPTION = "tkchar, 1girl, red hair"


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory) -> Path:
    return make_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(scope="module")
def pipe(tiny_flux):
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(tiny_flux)


def _render(pipe, guidance_scale: float = 3.5):
    generator = torch.Generator().manual_seed(0)
    out = pipe(CAPTION, height=64, width=64, num_inference_steps=2, guidance_scale=guidance_scale,
               max_sequence_length=32, generator=generator, output_type="np")  # fmt: skip
    return out.images[0]


def test_loads_offline_and_renders_an_image(pipe):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest before any hub import
    assert type(pipe.transformer).__name__ == "FluxTransformer2DModel"
    assert pipe.vae_scale_factor == 8
    image = _render(pipe)
    assert image.shape == (64, 64, 3)
    assert image.std() > 0.01  # not a constant image


def test_folder_is_small(tiny_flux):
    size = sum(f.stat().st_size for f in tiny_flux.rglob("*") if f.is_file())
    assert size < 4 * 2**20
    assert not (tiny_flux / "_tokenizer_src").exists()


def test_t5_tokenizer_encodes_captions_without_unk(pipe):
    tok = pipe.tokenizer_2
    ids = tok(CAPTION).input_ids
    assert ids[-1] == tok.eos_token_id == 1
    assert tok.unk_token_id not in ids
    assert tok.pad_token_id == 0
    padded = tok(CAPTION, padding="max_length", max_length=32, truncation=True).input_ids
    assert len(padded) == 32 and padded[-1] == tok.pad_token_id
    assert max(ids) < pipe.text_encoder_2.config.vocab_size


def test_vae_and_scheduler_have_flux_config(pipe):
    vae = pipe.vae.config
    assert vae.latent_channels == 16
    assert vae.scaling_factor == FLUX_VAE_SCALING_FACTOR == 0.3611
    assert vae.shift_factor == FLUX_VAE_SHIFT_FACTOR == 0.1159
    sched = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert sched.use_dynamic_shifting and sched.shift == 3.0
    assert (sched.base_shift, sched.max_shift) == (0.5, 1.15)
    assert (sched.base_image_seq_len, sched.max_image_seq_len) == (256, 4096)


def test_transformer_shapes_fit_the_encoders(pipe):
    config = pipe.transformer.config
    assert config.in_channels == 64 and config.guidance_embeds
    assert config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert sum(config.axes_dims_rope) == config.attention_head_dim


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {
        f"{f.parent.name}/{k}": v
        for f in sorted(folder.rglob("*.safetensors"))
        for k, v in load_file(f).items()
    }


def test_building_twice_gives_identical_weights(tiny_flux, tmp_path):
    first, second = _weights(tiny_flux), _weights(make_tiny_flux(tmp_path / "again"))
    assert first.keys() == second.keys() and len(first) > 50
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _weights(make_tiny_flux(tmp_path / "seed1", seed=1))
    assert not torch.equal(first["transformer/proj_out.weight"], other["transformer/proj_out.weight"])


def test_schnell_has_no_guidance_and_renders(tmp_path):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(make_tiny_flux(tmp_path / "schnell", variant="schnell"))
    assert not pipe.transformer.config.guidance_embeds
    assert not pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.shift == 1.0
    assert _render(pipe, guidance_scale=0.0).std() > 0.01


def test_full_size_is_refused_and_builds_on_meta():
    from diffusers import FluxTransformer2DModel

    with pytest.raises(ValueError, match="flux_full_config"):
        make_tiny_flux("/nonexistent", size="full")
    with pytest.raises(ValueError, match="schnell"):
        make_tiny_flux("/nonexistent", variant="pro")
    with torch.device("meta"):
        model = FluxTransformer2DModel(**flux_full_config())
    assert sum(p.numel() for p in model.parameters()) == 11_901_408_320  # Flux.1-dev's transformer
    assert (len(model.transformer_blocks), len(model.single_transformer_blocks)) == (19, 38)
    assert model.single_transformer_blocks[0].proj_mlp.weight.shape == (12288, 3072)
    assert model.x_embedder.weight.shape == (3072, 64)
    assert model.context_embedder.weight.shape == (3072, 4096)
    assert hasattr(model.time_text_embed, "guidance_embedder")
