"""Training-step overhead: our real loop against a bare loop on the same model.

ours: the trainer's own epoch loop (``trainer.train.train_epoch``): bucketed batches,
caption shuffling, text conditioning, noise, loss, grad clipping, optimizer, lr
schedule and (throttled) step events; previews off.
bare: the same UNet with the same LoRA modules and optimizer on one in-memory batch
of cached latents and embeddings: forward, loss, backward, step, zero_grad.

Blocks of the two are interleaved so machine noise hits both; the ratio is
ours / bare in steps per second. Ends with one line of key=value pairs.

    python bench/trainer_step.py [--family sd15] [--resolution 128] [--blocks 6]
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.contract import TrainJob  # noqa: E402
from trainer.events import EventWriter, StopFlag  # noqa: E402
from trainer.text import sdxl_time_ids  # noqa: E402
from trainer.tiny import make_tiny  # noqa: E402
from trainer.train import Run, add_networks, cache_latents, conditioning, prepare, train_epoch  # noqa: E402


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
    item = run.items[0]
    latents = torch.stack([item.latent] * run.job.batch_size)
    gen = torch.Generator(run.device).manual_seed(0)
    noise = torch.randn(latents.shape, generator=gen, device=run.device)
    timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=gen, device=run.device)
    noisy = run.noise_scheduler.add_noise(latents, noise, timesteps).to(run.dtype)
    with torch.no_grad():
        cond = conditioning(run, [item.caption] * latents.shape[0])
    unet, optimizer = run.model.unet, run.optimizer
    added = None
    if run.model.family == "sdxl":
        ids = sdxl_time_ids(item.original_size, item.crop_top_left, item.bucket[::-1])
        added = {"text_embeds": cond.pooled, "time_ids": torch.stack([ids] * latents.shape[0]).to(run.device)}

    def step() -> None:
        ctx = torch.autocast(run.device.type, run.dtype) if run.dtype != torch.float32 else _null()
        with ctx:
            pred = unet(noisy, timesteps, cond.embeds, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=6, help="measured blocks of each loop")
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--optimizer", default="AdamW")
    ap.add_argument("--device", default=None)
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
    images = 4
    write_images(tmp / "data", images, args.resolution)
    job = TrainJob(
        dataset_dir=str(tmp / "data"), base_model=str(model), output_dir=str(tmp / "out"),
        resolution=args.resolution, repeats=max(1, args.steps // images), epochs=args.blocks + 1,
        mixed_precision=args.precision, optimizer=args.optimizer, unet_only=True, previews=False,
        lr_scheduler="constant", seed=0, device=args.device,
    )  # fmt: skip
    run = prepare(job)
    add_networks(run)
    cache_latents(run)
    events, stop = EventWriter(io.StringIO()), StopFlag()
    bare = bare_step_fn(run)
    steps = run.steps_per_epoch

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
            f"block {block}: ours {ours_rates[-1]:.2f} steps/s, bare {bare_rates[-1]:.2f} steps/s",
            file=sys.stderr,
        )

    ours, bare_rate = statistics.median(ours_rates), statistics.median(bare_rates)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = ""
    if run.device.type == "cuda":
        extra = f" peak_cuda_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}"
    print(
        f"ratio={ours / bare_rate:.3f} ours_steps_s={ours:.2f} bare_steps_s={bare_rate:.2f} "
        f"peak_rss_mb={peak:.0f} family={args.family} resolution={args.resolution} device={run.device}{extra}"
    )


if __name__ == "__main__":
    main()
