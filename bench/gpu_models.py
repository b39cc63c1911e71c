"""Random-weight base models for ``bench/gpu_check.py``, handed to the trainer without a folder.

Full-size models are built from the real configs straight on the device, in the training dtype:
a 12B-parameter Flux transformer initialised on a GPU takes seconds, on a CPU minutes, and written
to disk and read back it would cost more than the whole check. :func:`random_base_model` puts the
build where the trainer reads a folder (``trainer.models.load_pipeline``), so everything after that
(placing, freezing, LoRA, caching, any quantization of the frozen base) is the trainer's own code.

Tokenizers are the small local ones the tiny models use (the text lengths are the real ones: 77
CLIP tokens, 512 T5 tokens for Flux.1-dev), so the text encoders' embedding tables are smaller
than the real vocabularies' (a few hundred MB in all, and frozen encoders wait on the host anyway).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

import trainer.models
from trainer.families import get_family

#: Storage dtypes of a quantized weight (bitsandbytes' nf4 packs into uint8, its int8 is int8).
QUANTIZED_DTYPES = (torch.uint8, torch.int8, torch.float8_e4m3fn, torch.float8_e5m2)
QUANTIZED_LIBRARIES = ("bitsandbytes", "torchao", "optimum.quanto")


@contextlib.contextmanager
def building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on ``device`` in ``dtype`` (and initialised there)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def full_flux(tok_dir: Path):
    """Flux.1-dev at full size: the tiny pipeline's tokenizers and scheduler, with the real
    transformer (``flux_full_config``), CLIP-L, T5-XXL and a full-width 16-channel VAE built in the
    current device and dtype context."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from trainer import tiny, tiny_flux

    with building_on(torch.device("cpu"), torch.float32):
        pipe = tiny_flux.build_flux(tok_dir)  # tiny: only its tokenizers and scheduler are kept
    clip_vocab, t5_vocab = pipe.text_encoder.config.vocab_size, pipe.text_encoder_2.config.vocab_size
    pipe.transformer = FluxTransformer2DModel(**tiny_flux.flux_full_config())
    pipe.text_encoder = tiny.make_text_encoder(clip_vocab, tiny.TEXT_SHAPES["clip_l"], False)
    pipe.text_encoder_2 = tiny_flux._t5_encoder(t5_vocab, "full")
    tiny_vae = pipe.vae
    config = {k: v for k, v in tiny_vae.config.items() if not k.startswith("_")}
    pipe.vae = AutoencoderKL(**{**config, **tiny.VAE_SHAPES["full"]})
    return pipe


#: Families whose full-size pipeline is not their ``build_tiny(..., "full")``.
FULL_BUILDERS = {"flux": full_flux}


def build_pipeline(family: str, size: str, tok_dir: Path, device: torch.device, dtype: torch.dtype):
    """The ``family``'s pipeline with random weights: ``tiny`` (the test model) or ``full`` (the real
    architecture), its parameters created on ``device`` in ``dtype``."""
    torch.manual_seed(0)
    with building_on(device, dtype):
        if size == "full" and family in FULL_BUILDERS:
            return FULL_BUILDERS[family](tok_dir)
        return get_family(family).build_tiny(tok_dir, size)


def release(device: torch.device) -> None:
    """Free what was dropped, and start the peak-memory counters afresh."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@contextlib.contextmanager
def random_base_model(
    size: str, tmp: Path, device: torch.device, dtype: torch.dtype, on_host: bool = False
) -> Iterator[None]:
    """While inside, the trainer's loader builds a random model of the job's family instead of
    reading ``base_model`` (the job must name ``model_family``).

    ``on_host``: the built model is handed over on the CPU, as a loader returns it, so that the
    trainer's own placement (and quantization) is what puts it on the device and is measured.
    """

    def load(source: str, family: str | None = None, config: str | None = None, **_: Any):
        if family is None:
            raise ValueError("the bench's random model needs model_family in the job")
        pipe = build_pipeline(family, size, tmp / f"tokenizers-{family}", device, dtype)
        if on_host:
            pipe.to("cpu")
            release(device)
        return pipe, family

    with mock.patch.object(trainer.models, "load_pipeline", load):
        yield


def is_quantized(module: nn.Module) -> bool:
    """Whether some of ``module``'s weights are stored quantized (8 bits or fewer, or in a module
    of a quantization library)."""
    if any(p.dtype in QUANTIZED_DTYPES for p in module.parameters()):
        return True
    return any(type(m).__module__.startswith(QUANTIZED_LIBRARIES) for m in module.modules())
