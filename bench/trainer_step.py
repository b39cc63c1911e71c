"""Training-step overhead: our real loop against a bare loop on the same model.

ours: the trainer's own epoch loop (``trainer.train.train_epoch``): bucketed batches,
caption shuffling, text conditioning, noise, loss, grad clipping, optimizer, lr
schedule and (throttled) step events; previews off.
bare: the same UNet with the same LoRA modules and optimizer on one in-memory batch
of cached latents and embeddings: forward, loss, backward, step, zero_grad.

Blocks of the two are interleaved so machine noise hits both; the ratio is
ours / bare in steps per second. It is measured twice in one run: with the advanced
options off and all on (``OPTIONS_ON``: min-SNR, noise offset, pyramid noise, 225-token
weighted captions drawn from the text cache, block lr weights); ``ratio`` is the lower.
Ends with one line of key=value pairs.

    python bench/trainer_step.py [--family sd15] [--resolution 128] [--blocks 6] [--options both]
    # on a GPU (the issue's figures):
    python bench/trainer_step.py --full --family sd15 --resolution 512 --precision bf16 --batch-size 4 \
        [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import gc
import io
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/queue.py would shadow the standard
# library's queue module (torch imports it): take the folder off, put the root on.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainer.contract import TrainJob  # noqa: E402
from trainer.contract.families import DEFAULT_FAMILY, FAMILIES  # noqa: E402
from trainer.events import EventWriter, StopFlag  # noqa: E402
from trainer.families import get_family  # noqa: E402
from trainer.models import autocast  # noqa: E402
from trainer.tiny import make_tiny  # noqa: E402
from trainer.train import (  # noqa: E402
    Run,
    batch_conditioning,
    preflight,
    prepare,
    set_up,
    train_epoch,
)  # fmt: skip

IMAGES = 4


def write_images(folder: Path, count: int, size: int) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = Image.new("RGB", (size, size), (40 * i % 255, 90, 180))
        ImageDraw.Draw(img).ellipse((size // 5, size // 5, size // 2, size // 2), fill=(250, 220, 30))
        img.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("tkchar, yellow_disc, blue_background, simple")


def bare_step_fn(run: Run):
    """One fixed batch of cached latents and embeddings; returns a function doing one bare step."""
    if get_family(run.model.family).objective == "flow":
        return bare_flow_step_fn(run)
    item = run.items[0]
    batch = [0] * run.job.batch_size
    latents = torch.stack([item.latent] * run.job.batch_size).to(run.device)
    gen = torch.Generator(run.device).manual_seed(0)
    noise = torch.randn(latents.shape, generator=gen, device=run.device)
    timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=gen, device=run.device)
    noisy = run.noise_scheduler.add_noise(latents, noise, timesteps).to(run.dtype)
    with torch.no_grad(), autocast(run.device, run.dtype):
        cond = batch_conditioning(run, batch, random.Random(0))
    unet, optimizer = run.model.unet, run.optimizer
    # SDXL's text embeds and time ids (set on the items when the latents were cached); None for SD1.5
    added = get_family(run.model.family).training_conditioning([item] * latents.shape[0], cond.pooled)

    def step() -> None:
        with autocast(run.device, run.dtype):
            pred = unet(noisy, timesteps, cond.embeds, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bare_flow_step_fn(run: Run):
    """Flux's bare step: packed noisy latents at fixed noise levels, the transformer, MSE against
    the velocity; the same inputs the trainer builds, made once."""
    from trainer import flow
    from trainer.families.flux import variant

    latents = torch.stack([run.items[0].latent] * run.job.batch_size).to(run.device)
    b, _, h, w = latents.shape
    gen = torch.Generator("cpu").manual_seed(0)
    noise = torch.randn(latents.shape, generator=gen).to(run.device)
    sigmas = torch.rand(b, generator=gen).to(run.device)
    noisy = flow.pack_latents(flow.noisy_input(latents, noise, sigmas)).to(run.dtype)
    target = flow.pack_latents(flow.flow_target(latents, noise))
    with torch.no_grad(), autocast(run.device, run.dtype):
        cond = batch_conditioning(run, [0] * b, random.Random(0))
    guidance = flow.guidance_input(variant(run.model.unet) == "dev", 1.0, b, device=run.device)
    txt_ids = flow.text_ids(cond.embeds.shape[1], device=run.device)
    img_ids = flow.latent_image_ids(h, w, device=run.device)
    transformer, optimizer = run.model.unet, run.optimizer

    def step() -> None:
        with autocast(run.device, run.dtype):
            pred = transformer(hidden_states=noisy, timestep=sigmas.to(run.dtype), guidance=guidance,
                               pooled_projections=cond.pooled, encoder_hidden_states=cond.embeds,
                               txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]  # fmt: skip
        loss = F.mse_loss(pred.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: The advanced options of the guide's step 5, all on ("--options on"): loss weighting, noise,
#: long weighted captions from the text cache with shuffled variants, block-wise lr weights.
OPTIONS_ON = {
    "min_snr_gamma": 5.0, "noise_offset": 0.05, "multires_noise_iterations": 6, "multires_noise_discount": 0.3,
    "weighted_captions": True, "max_token_length": 225, "caption_variants": 4, "shuffle_tags": True,
    "down_lr_weight": "sine", "up_lr_weight": "cosine+0.5",
}  # fmt: skip
#: Flux's own options on: flux_shift noise levels, a guidance input, a short T5, cached variants.
OPTIONS_ON_FLOW = {"timestep_sampling": "flux_shift", "guidance_scale": 1.0, "t5_max_length": 128,
                   "caption_variants": 4, "shuffle_tags": True}  # fmt: skip


def measure(args, tmp: Path, model: Path, options: dict, label: str) -> dict[str, float]:
    """Interleaved blocks of our epoch loop and the bare loop on one prepared job."""
    job = TrainJob(
        dataset_dir=str(tmp / "data"), base_model=str(model), output_dir=str(tmp / f"out-{label}"),
        resolution=args.resolution, repeats=max(1, args.steps * args.batch_size // IMAGES), epochs=args.blocks + 1,
        batch_size=args.batch_size, mixed_precision=args.precision, optimizer=args.optimizer, unet_only=True,
        previews=False, lr_scheduler="constant", seed=0, device=args.device,
        gradient_checkpointing=args.gradient_checkpointing, **options,
    )  # fmt: skip
    run = prepare(job)
    set_up(run)
    preflight(run)
    events, stop = EventWriter(io.StringIO()), StopFlag()
    bare = bare_step_fn(run)
    steps = run.steps_per_epoch
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_epoch(run, 0, events, stop, None)  # warm-up of both, not measured
    for _ in range(steps):
        bare()
    ours_rates, bare_rates = [], []
    for block in range(1, args.blocks + 1):
        sync(run.device)
        t0 = time.perf_counter()
        train_epoch(run, block, events, stop, None)
        sync(run.device)
        t1 = time.perf_counter()
        for _ in range(steps):
            bare()
        sync(run.device)
        t2 = time.perf_counter()
        ours_rates.append(steps / (t1 - t0))
        bare_rates.append(steps / (t2 - t1))
        print(
            f"{label} block {block}: ours {ours_rates[-1]:.2f} steps/s, bare {bare_rates[-1]:.2f} steps/s",
            file=sys.stderr,
        )
    ours, bare_rate = statistics.median(ours_rates), statistics.median(bare_rates)
    out = {"ratio": ours / bare_rate, "ours_steps_s": ours, "bare_steps_s": bare_rate}
    if run.device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del run, bare
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=list(FAMILIES), default=DEFAULT_FAMILY)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=6, help="measured blocks of each loop")
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--optimizer", default="AdamW")
    ap.add_argument("--device", default=None)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument(
        "--options",
        choices=["off", "on", "both"],
        default="both",
        help="the advanced options (min-SNR, noise, long weighted cached captions, block lr) off, on or both",
    )
    ap.add_argument(
        "--full", action="store_true", help="full-size random-init model (GPU): SD1.5 or SDXL widths"
    )
    args = ap.parse_args()
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    model = make_tiny(args.family, tmp / "model", size="full" if args.full else "tiny")
    flow_family = get_family(args.family).objective == "flow"
    options_on = OPTIONS_ON_FLOW if flow_family else OPTIONS_ON
    write_images(tmp / "data", IMAGES, args.resolution)
    labels = ["off", "on"] if args.options == "both" else [args.options]
    results = {
        label: measure(args, tmp, model, options_on if label == "on" else {}, label) for label in labels
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs = [f"ratio={min(r['ratio'] for r in results.values()):.3f}"]
    for label, r in results.items():
        pairs += [
            f"{key}_{label}={value:.3f}" if key == "ratio" else f"{key}_{label}={value:.2f}"
            for key, value in r.items()
        ]
    pairs += [
        f"peak_rss_mb={peak:.0f}", f"family={args.family}", f"resolution={args.resolution}",
        f"batch_size={args.batch_size}", f"precision={args.precision}",
        f"gradient_checkpointing={int(args.gradient_checkpointing)}", f"device={args.device or 'auto'}",
    ]  # fmt: skip
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
