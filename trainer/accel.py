"""Speed and memory: gradient checkpointing, SDPA attention, torch.compile, latent placement, and
running out of memory with a message a member can act on.

Everything here works in place on the trainer's modules (the UNet and text encoders the pipeline,
the LoRA exporter and the preview renderer share), so names, parameters and peft layers stay as they
are. GPU-only paths check the device and do nothing (or say why) on a CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from .render import release_memory

__all__ = [
    "COMPILE_RECOMPILE_LIMIT",
    "LATENT_FREE_FRACTION",
    "MIN_COMPILE_STEPS",
    "compile_skip_reason",
    "eager",
    "enable_gradient_checkpointing",
    "is_compiled",
    "is_out_of_memory",
    "latent_bytes",
    "latents_on_device",
    "maybe_compile",
    "oom_advice",
    "peak_memory_mb",
    "place_latent",
    "release_memory",
    "reset_peak_memory",
    "stack_latents",
    "text_checkpointing_method",
    "triton_available",
    "use_sdpa",
]

# torch.compile pays back only on long jobs. Compiling an SDXL UNet takes ~60-90 s, and the second
# bucket shape triggers one more (shape-generic) compile: ~90 s in all (SD1.5 about half). It saves
# ~10-25% of a step: ~0.1 s of a ~0.6 s SDXL step (24 GiB card, 1024 px, batch 1), ~0.04 s of a
# ~0.2 s SD1.5 step. 90 s / 0.1 s = 900 steps (SD1.5: 45 s / 0.04 s = ~1100 steps), so below about
# 1000 steps compiling makes the job slower, not faster. The guide's job (700 steps) stays eager.
MIN_COMPILE_STEPS = 1000
# Buckets give the UNet several (batch, height, width) shapes. With dynamic=None the first shape
# compiles a static graph, and each size that then changes for the first time (width, height, the
# batch of a partial batch) is marked dynamic and compiles once more: 4 compiles, after which one
# graph fits every bucket. On a CPU, conv-backend size thresholds add a guard or two (measured: 6
# compiles over 9 shapes; tests/test_accel.py checks the pattern); CUDA takes cuDNN at every size.
# The cap leaves room for that and stops a pathological job from paying a ~1 min recompile per
# shape: past it, dynamo runs the extra shapes eagerly.
COMPILE_RECOMPILE_LIMIT = 6
COMPILE_BACKEND = "inductor"
# Cached latents stay on the GPU when they take under this share of its free memory; otherwise they
# wait in pinned CPU memory and move per batch (asynchronously).
LATENT_FREE_FRACTION = 0.10

_OOM_MESSAGES = (
    "out of memory",  # CUDA ("CUDA out of memory"), HIP, MPS ("MPS backend out of memory")
    "can't allocate memory",  # CPU: "DefaultCPUAllocator: can't allocate memory"
    "cublas_status_alloc_failed",  # cuBLAS could not get its workspace: memory is full
)


# Gradient checkpointing -------------------------------------------------------------------------


def enable_gradient_checkpointing(
    unet: nn.Module, text_encoders: Sequence[nn.Module], trains_text_encoder: bool
) -> None:
    """Recompute activations in the backward pass instead of keeping them.

    The UNet is always checkpointed (its activations dominate, and the backward to a trained text
    encoder goes through it): diffusers checkpoints every resnet and transformer block with
    ``use_reentrant=False``. The text encoders only when trained, also non-reentrant: a frozen base
    with LoRA feeds checkpointed layers inputs that do not require grad, and reentrant
    checkpointing would then silently drop the LoRA gradients.
    """
    unet.enable_gradient_checkpointing()
    if not trains_text_encoder:
        return
    for te in text_encoders:
        method = text_checkpointing_method(type(te))  # (activation|gradient)_checkpointing_enable
        getattr(te, method)(**{method.replace("_enable", "_kwargs"): {"use_reentrant": False}})


def text_checkpointing_method(cls: type) -> str:
    """transformers 5 renamed ``gradient_checkpointing_enable`` (which now warns) to
    ``activation_checkpointing_enable``; 4.x has only the old name."""
    if hasattr(cls, "activation_checkpointing_enable"):
        return "activation_checkpointing_enable"
    return "gradient_checkpointing_enable"


# Attention -------------------------------------------------------------------------------------


def use_sdpa(unet: nn.Module) -> str:
    """Route the UNet's attention through ``F.scaled_dot_product_attention`` (``AttnProcessor2_0``).

    Only plain processors (``AttnProcessor``, ``SlicedAttnProcessor``) are swapped; SDPA ones and
    others (xformers, trainable processors) are kept. Processors live beside the q/k/v/out linears
    that peft wraps, so LoRA layers are untouched. Returns a line for the log.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor

    processors = unet.attn_processors
    plain = [name for name, p in processors.items() if type(p) in (AttnProcessor, SlicedAttnProcessor)]
    if plain:
        sdpa = AttnProcessor2_0()
        unet.set_attn_processor({n: sdpa if n in plain else p for n, p in processors.items()})
    kinds = Counter(type(p).__name__ for p in unet.attn_processors.values())
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if plain:
        return f"attention: {len(plain)} of {len(processors)} layers switched to torch SDPA ({summary})"
    return f"attention: {summary} (unchanged)"


# torch.compile ---------------------------------------------------------------------------------


def triton_available() -> bool:
    """Inductor generates GPU kernels with triton; without it a compile fails at the first step."""
    return importlib.util.find_spec("triton") is not None


def compile_skip_reason(enabled: bool, device: torch.device, total_steps: int) -> str | None:
    """Why the UNet is not compiled, or None when it is."""
    if not enabled:
        return "compile_unet is off"
    if device.type != "cuda":
        return f"it needs a CUDA GPU (this job runs on {device.type})"
    if not triton_available():
        return "triton is not installed"
    if total_steps < MIN_COMPILE_STEPS:
        return (
            f"the job has {total_steps} steps; compiling (~1-2 min) pays back only from "
            f"{MIN_COMPILE_STEPS} steps"
        )
    return None


def maybe_compile(
    unet: nn.Module,
    *,
    enabled: bool,
    device: torch.device,
    total_steps: int,
    log: logging.Logger | logging.LoggerAdapter,
) -> bool:
    """``torch.compile`` the UNet's forward in place when it pays (see :data:`MIN_COMPILE_STEPS`).

    ``nn.Module.compile`` compiles ``__call__`` lazily (at the first step) and keeps the module,
    its parameter names and the peft layers, so saving and previews work as before. Returns
    whether it compiled; otherwise logs why not.
    """
    reason = compile_skip_reason(enabled, device, total_steps)
    if reason is not None:
        (log.warning if enabled else log.debug)("torch.compile skipped: %s", reason)
        return False
    import torch._dynamo

    dynamo_config = torch._dynamo.config
    limit_name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit_name, COMPILE_RECOMPILE_LIMIT)
    unet.compile(backend=COMPILE_BACKEND, dynamic=None)
    log.info(
        "torch.compile: the UNet compiles at its first step (~1-2 min), and at most %d times in all "
        "as bucket shapes change",
        COMPILE_RECOMPILE_LIMIT,
    )
    return True


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` was called (``torch.compile(module)`` would return a wrapper)."""
    return getattr(module, "_compiled_call_impl", None) is not None


@contextlib.contextmanager
def eager(*modules: nn.Module) -> Iterator[None]:
    """Run these modules eagerly inside, if compiled (previews: new shapes in no-grad mode would
    each cost a compile, for a few dozen calls)."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if set_stance is None or not any(is_compiled(m) for m in modules):
        yield
        return
    with set_stance("force_eager"):
        yield


# Out of memory ---------------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the device or the host running out of memory."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (torch.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(current, RuntimeError) and any(m in str(current).lower() for m in _OOM_MESSAGES):
            return True
        current = current.__cause__  # explicit wrapping (raise ... from oom) only
    return False


def _device_memory(device: torch.device) -> str:
    """``24 GiB card`` on CUDA; empty elsewhere."""
    if device.type != "cuda":
        return ""
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
    except (RuntimeError, AssertionError):  # no driver, or a CPU build
        return ""
    return f"{total / 2**30:.0f} GiB card"


def oom_advice(
    job,
    *,
    batch_size: int,
    bucket: tuple[int, int],
    device: torch.device,
    resolution: int | None = None,
    levers: list[str] = (),
) -> str:
    """What to lower after running out of memory on a batch, strongest effect first.

    ``bucket`` is the (width, height) of the batch that failed; ``resolution`` the job's resolved
    side (default: the job's, else estimated from the bucket's area); ``levers`` the family's own
    (Flux: the T5 length), after gradient checkpointing.
    """
    kind = {"cuda": "GPU", "cpu": "CPU", "mps": "MPS"}.get(device.type, device.type.upper())
    memory = _device_memory(device)
    head = f"out of {kind} memory on a batch of {batch_size} at {bucket[0]}x{bucket[1]}"
    head += f" ({memory})" if memory else ""
    side = resolution or job.resolution or int(math.sqrt(bucket[0] * bucket[1])) // 64 * 64
    steps = []
    if job.batch_size > 1:
        steps.append(f"lower batch_size to {job.batch_size // 2}")
    if side - 64 >= 256:
        steps.append(f"lower resolution to {(side - 1) // 64 * 64}")
    if not job.gradient_checkpointing:
        steps.append("turn on gradient_checkpointing")
    steps += levers
    if job.network_dim > 32:
        steps.append("lower network_dim to 32")
    if job.max_token_length > 75:
        steps.append("lower max_token_length to 75")
    if job.trains_text_encoder() and job.trains_unet():
        steps.append("turn on unet_only (train no text encoder)")
    if job.mixed_precision == "no":
        steps.append("set mixed_precision to fp16 or bf16")
    if not steps:
        return f"{head}: even the smallest settings do not fit; this model needs a device with more memory"
    return f"{head}: " + ", or ".join(steps)


# Memory statistics -----------------------------------------------------------------------------


def peak_memory_mb(device: torch.device) -> float | None:
    """The most memory tensors took on ``device`` since the last reset (CUDA only), in MiB."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# Cached latents --------------------------------------------------------------------------------


def latent_bytes(buckets: Iterable[tuple[int, int]], vae: nn.Module) -> int:
    """Bytes the fp32 latents of images in these (width, height) buckets will take."""
    channels = vae.config.latent_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return sum(channels * (w // factor) * (h // factor) * 4 for w, h in buckets)


def latents_on_device(total_bytes: int, device: torch.device) -> bool:
    """Whether cached latents of ``total_bytes`` should live on ``device`` for the whole job.

    Always on a CPU (and MPS: unified memory). On CUDA only when they take less than
    :data:`LATENT_FREE_FRACTION` of the free memory: a large dataset would otherwise take the room
    the training step needs.
    """
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return total_bytes < LATENT_FREE_FRACTION * free


def place_latent(t: torch.Tensor, device: torch.device, on_device: bool) -> torch.Tensor:
    """One cached latent where it waits: on ``device``, or in (pinned, for CUDA) CPU memory."""
    if on_device:
        return t.to(device)
    t = t.to("cpu")
    return t.pin_memory() if device.type == "cuda" else t


def stack_latents(latents: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A batch on ``device``: pinned latents copy asynchronously, ones already there stay."""
    return torch.stack([t.to(device, non_blocking=True) for t in latents])
