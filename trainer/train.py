"""The training loop: load, freeze, add LoRA, cache latents, optimize, save, preview.

One linear pass in the order of diffusers' training examples. The host (the bot's
worker, or a person at a shell) sees only JSON-line events on stdout and the files
in ``output_dir``; SIGTERM stops the loop between steps.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from . import accel, blocks, data, lora, models, noise, optim, render, state
from .caches import cache_latents, cache_text
from .checkpoints import load_init_weights, restore_training_state, save_epoch, save_training_state
from .contract import EXIT_CANCELLED, EXIT_OK, TrainJob, steps_per_epoch, warmup_steps
from .contract.blocks import block_problems
from .contract.families import refused_options
from .events import EventWriter, StopFlag
from .families import get_family
from .models import autocast, load_base_model, pick_device, place, resolved_precision, weight_dtype
from .preview import preview_epoch
from .quantize import require_bitsandbytes
from .run import Cancelled, Run, TrainError, check_stop
from .text import Conditioning, check_clip_skip, encode_texts, parse_prompt_attention, process_caption

log = logging.getLogger(__name__)


# 1. Load, freeze, data --------------------------------------------------------------------------


def prepare(job: TrainJob) -> Run:
    device = pick_device(job.device)
    seed = job.seed if job.seed is not None else random.SystemRandom().randrange(2**32)
    items = data.scan_dataset(job.dataset_dir)
    log.info("loading base model %s", job.base_model)
    model = load_base_model(job.base_model, job.model_family, job.base_model_config)
    job = job.for_family(model.family)
    dtype = weight_dtype(job.mixed_precision, device)
    if problems := refused_options(model.family, job.changed_options()):
        raise TrainError("; ".join(problems))
    if job.quantize_base:  # a missing package fails before anything is placed or cached
        require_bitsandbytes()
    place(model, device, dtype, denoiser=False)  # place_denoiser: once the text is cached
    per_epoch = steps_per_epoch(len(items), job.repeats, job.batch_size)
    check_clip_skip(job.resolved_clip_skip(model.family), model.family, model.text_encoders)
    if problems := block_problems(job, model.family):
        raise TrainError("; ".join(problems))
    if job.weighted_captions:  # a bad weight fails now, not at the first step that draws it
        for item in items:
            try:
                parse_prompt_attention(item.caption)
            except ValueError as exc:
                raise TrainError(f"{item.image_path.name}: {exc}") from None
    run = Run(
        job=job,
        model=model,
        device=device,
        dtype=dtype,
        seed=seed,
        clip_skip=job.resolved_clip_skip(model.family),
        resolution=job.resolved_resolution(model.family),
        items=items,
        steps_per_epoch=per_epoch,
        total_steps=per_epoch * job.epochs,
        optimizer_name=job.optimizer or optim.default_optimizer(),
    )
    from diffusers import DDPMScheduler

    # The job's v_parameterization / zero_terminal_snr override what the model states; the loss, the
    # previews and the file's metadata all read this one config.
    model.scheduler_config = models.prediction_config(
        model.scheduler_config, job.v_parameterization, job.zero_terminal_snr
    )
    if model.zero_terminal_snr and model.prediction_type != "v_prediction":
        log.warning(
            "zero terminal SNR without v-prediction: training will be unexpected (as sd-scripts warns)"
        )
    if job.previews:  # a sampler that cannot sample this schedule fails now, not after an epoch
        render.check_sampler(job.preview_sampler, model.scheduler_config)
    run.noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
    run.noise_gen = torch.Generator("cpu").manual_seed(
        seed + 1
    )  # same noise on any device; resumable anywhere
    run.caption_rng = random.Random(seed + 2)
    return run


# 2. LoRA, optimizer, schedule ---------------------------------------------------------------------


def add_networks(run: Run, init_weights: str | None = None) -> None:
    job, model = run.job, run.model
    torch.manual_seed(run.seed)  # LoRA init is part of what a fixed seed reproduces
    groups = []
    if job.trains_unet():
        groups += blocks.add_unet_lora(model.unet, job, model.family)
    if job.trains_text_encoder():
        params = []
        for te in get_family(model.family).trainable_text_encoders(model.text_encoders):
            lora.add_lora(te, lora.text_encoder_target_modules(te), job.network_dim, job.network_alpha)
            params += lora.lora_parameters(te)
        groups.append({"params": params, "lr": job.resolved_text_encoder_lr()})
    lora.cast_lora_to_fp32([model.unet, *model.text_encoders])
    if init_weights:
        load_init_weights(run, init_weights)
    run.trainable = [p for g in groups for p in g["params"]]
    run.optimizer = optim.build_optimizer(run.optimizer_name, groups, job.resolved_learning_rate())
    run.scheduler = optim.build_scheduler(
        job.lr_scheduler,
        run.optimizer,
        warmup_steps(run.total_steps, job.lr_warmup_percent),
        run.total_steps,
        job.lr_restart_cycles,
    )
    if run.device.type == "cuda" and run.dtype == torch.float16:
        run.scaler = torch.amp.GradScaler("cuda")
    log.info("%s", accel.use_sdpa(model.unet))
    if job.gradient_checkpointing:
        accel.enable_gradient_checkpointing(model.unet, model.text_encoders, job.trains_text_encoder())


def set_up(run: Run, stop: StopFlag | None = None, saved: dict | None = None) -> None:
    """From a prepared run to step 1, in the order memory wants: frozen text encoders encode every
    caption and leave the GPU before the denoiser arrives there (quantized on the way when asked);
    then LoRA (or the saved state) and the latents."""
    if saved is not None:
        run.seed = saved["seed"]  # the caption variants and the LoRA init come from it
    cache_text(run, stop)
    check_stop(stop)
    models.place_denoiser(run.model, run.device, run.dtype, run.job.quantize_base)
    add_networks(run, init_weights=None if saved is not None else run.job.init_weights)
    if saved is not None:
        restore_training_state(run, saved)
        log.info("resuming after epoch %d (step %d)", run.epoch, run.step)
    cache_latents(run, stop)
    check_stop(stop)


# 3. One step -----------------------------------------------------------------------------------


def conditioning(run: Run, captions: list[str]) -> Conditioning:
    """Text embeddings of ``captions`` through the (trained) text encoders."""
    model, job = run.model, run.job
    return encode_texts(
        model.family, model.text_encoders, model.tokenizers, captions, run.clip_skip, run.device,
        max_token_length=job.max_token_length, weighted=job.weighted_captions,
        sequence_length=get_family(model.family).sequence_length(model, job.t5_max_length),
    )  # fmt: skip


def batch_conditioning(run: Run, batch: list[int], caption_rng: random.Random) -> Conditioning:
    """A cached variant per image while the text encoders are frozen, else freshly shuffled captions."""
    if run.text_cache is not None:
        return run.text_cache.draw(batch, caption_rng, run.device)
    job = run.job
    captions = [
        process_caption(run.items[i].caption, job.shuffle_tags, job.keep_tokens, caption_rng) for i in batch
    ]
    return conditioning(run, captions)


def compute_loss(
    run: Run, batch: list[int], gen: torch.Generator, caption_rng: random.Random
) -> torch.Tensor:
    """The diffusion loss of one batch; every random draw comes from ``gen`` and ``caption_rng``."""
    job, items = run.job, [run.items[i] for i in batch]
    latents = accel.stack_latents([it.latent for it in items], run.device)
    family = get_family(run.model.family)
    if family.objective == "flow":
        with autocast(run.device, run.dtype):
            cond = batch_conditioning(run, batch, caption_rng)
            return family.flow_loss(run, latents, cond, gen)
    # Drawn on the CPU generator (device-independent, resumable anywhere), then moved.
    noise_ = noise.training_noise(
        latents.shape, run.device, gen, noise_offset=job.noise_offset,
        multires_iterations=job.multires_noise_iterations, multires_discount=job.multires_noise_discount,
    )  # fmt: skip
    steps = run.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(items),), generator=gen).to(run.device, non_blocking=True)
    noisy = run.noise_scheduler.add_noise(latents, noise_, timesteps)
    v_prediction = run.model.prediction_type == "v_prediction"
    with autocast(run.device, run.dtype):
        cond = batch_conditioning(run, batch, caption_rng)
        added = get_family(run.model.family).training_conditioning(items, cond.pooled)
        pred = run.model.unet(noisy.to(run.dtype), timesteps, cond.embeds, added_cond_kwargs=added).sample
    target = run.noise_scheduler.get_velocity(latents, noise_, timesteps) if v_prediction else noise_
    return noise.diffusion_loss(
        pred,
        target,
        timesteps,
        run.noise_scheduler,
        min_snr_gamma=job.min_snr_gamma,
        v_prediction=v_prediction,
    )


def train_step(run: Run, batch: list[int]) -> float:
    with _out_of_memory_advice(run, batch):
        loss = compute_loss(run, batch, run.noise_gen, run.caption_rng)
        optimizer_step(run, loss)
    return loss.item()


def preflight(run: Run) -> float | None:
    """One forward and backward pass of the largest batch the job will see, before step 1.

    A batch that does not fit fails here in seconds, with what to lower, instead of after a
    long wait in the queue and at some step of the first epoch. Nothing the job keeps is
    touched: its own generators are not drawn from and the gradients are dropped. Returns the
    peak memory in MB on a GPU.
    """
    bucket = max((it.bucket for it in run.items), key=lambda b: (b[0] * b[1], b))
    members = [i for i, it in enumerate(run.items) if it.bucket == bucket]
    batch = [
        members[k % len(members)] for k in range(min(run.job.batch_size, len(members) * run.job.repeats))
    ]
    accel.reset_peak_memory(run.device)
    try:
        with _out_of_memory_advice(run, batch):
            compute_loss(run, batch, torch.Generator("cpu").manual_seed(0), random.Random(0)).backward()
    finally:
        run.optimizer.zero_grad(set_to_none=True)
        accel.release_memory(run.device)
    return accel.peak_memory_mb(run.device)


@contextlib.contextmanager
def _out_of_memory_advice(run: Run, batch: list[int]) -> Iterator[None]:
    """Out of memory inside becomes a TrainError that says what to lower for this job."""
    try:
        yield
    except Exception as exc:
        if not accel.is_out_of_memory(exc):
            raise
        accel.release_memory(run.device)
        advice = accel.oom_advice(
            run.job, batch_size=len(batch), bucket=run.items[batch[0]].bucket, device=run.device,
            resolution=run.resolution, levers=get_family(run.model.family).memory_levers(run.job),
        )  # fmt: skip
        raise TrainError(advice) from None


def optimizer_step(run: Run, loss: torch.Tensor) -> None:
    stepped = True
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.trainable, optim.MAX_GRAD_NORM)
        scale = run.scaler.get_scale()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        stepped = run.scaler.get_scale() >= scale  # a lowered scale means inf/nan grads: step skipped
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.trainable, optim.MAX_GRAD_NORM)
        run.optimizer.step()
    if stepped:  # as accelerate does: a skipped step does not advance the schedule
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


# 4. The loop (saving: checkpoints.py; previews: preview.py) ------------------------------------


def run_training(job: TrainJob, events: EventWriter, stop: StopFlag) -> int:
    """Train ``job``; returns the process exit code. Raises on failure (the CLI reports it)."""
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    run: Run | None = None
    try:
        run = prepare(job)
        check_stop(stop)
        saved = state.load_state(state.state_path(job)) if job.resume else None
        if job.resume and saved is None:
            log.warning("resume: no saved state in %s; starting from the beginning", job.output_dir)
        set_up(run, stop, saved)
        peak = preflight(run)
        compiled = accel.maybe_compile(
            run.model.unet,
            enabled=job.compile_unet,
            device=run.device,
            total_steps=run.total_steps - run.step,
            log=log,
        )
        events.emit(
            "started", total_steps=run.total_steps, total_epochs=job.epochs, steps_per_epoch=run.steps_per_epoch,
            images=len(run.items), seed=run.seed, family=run.model.family, optimizer=run.optimizer_name,
            precision=resolved_precision(job.mixed_precision, run.device), device=str(run.device),
            resumed_from_step=run.step, preflight_peak_mb=peak, compiled=compiled,
            cached_text_outputs=run.text_cache.count if run.text_cache else 0,
        )  # fmt: skip
        _render_missing_preview(run, events, stop)
        _train_epochs(run, events, stop)
    except Cancelled:
        events.emit(
            "cancelled",
            step=run.step if run else 0,
            epoch=run.epoch if run else 0,
            files=run.files if run else [],
        )
        return EXIT_CANCELLED
    events.emit("done", files=run.files, steps=run.step, seconds=round(time.time() - run.started_at, 1))
    return EXIT_OK


def _train_epochs(run: Run, events: EventWriter, stop: StopFlag) -> None:
    job = run.job
    progress = _progress_bar(run)
    try:
        for epoch in range(run.epoch + 1, job.epochs + 1):
            if not train_epoch(run, epoch, events, stop, progress):
                raise Cancelled
            run.epoch = epoch
            if epoch % job.save_every_n_epochs == 0 or epoch == job.epochs:
                path = save_epoch(run, epoch)
                save_training_state(run)
                events.emit("epoch_saved", epoch=epoch, path=str(path), step=run.step)
                if job.previews:
                    _preview(run, epoch, events, stop)
    finally:
        if progress is not None:
            progress.close()


def _render_missing_preview(run: Run, events: EventWriter, stop: StopFlag) -> None:
    """A job killed while rendering its latest preview renders it on resume (the state holds those weights)."""
    if not run.job.previews or run.epoch == 0:
        return
    if not (run.out_dir / f"{run.job.output_name}-{run.epoch:06d}-preview.png").is_file():
        _preview(run, run.epoch, events, stop)


def _preview(run: Run, epoch: int, events: EventWriter, stop: StopFlag) -> None:
    """Render and announce an epoch's preview grid (none when even the smallest size ran out of memory)."""
    path = preview_epoch(run, epoch, stop)
    if path is not None:
        events.emit("preview_ready", epoch=epoch, path=str(path))


def train_epoch(run: Run, epoch: int, events: EventWriter, stop: StopFlag, progress) -> bool:
    """One epoch; False when a stop was requested (between two steps)."""
    order_rng = random.Random(f"{run.seed}-{epoch}")
    batches = data.epoch_batches(
        run.items, run.job.repeats, run.job.batch_size, run.steps_per_epoch, order_rng
    )
    run.model.unet.train()
    for te in run.model.text_encoders:  # a frozen one (Flux's T5: dropout 0.1) stays in eval mode
        te.train(any(True for _ in lora.lora_layers(te)))
    loss_sum = 0.0
    for index, batch in enumerate(batches, start=1):
        if stop.requested:
            return False
        lr = _base_lr(run)
        loss = train_step(run, batch)
        run.step += 1
        loss_sum += loss
        if progress is not None:
            progress.update(1)
            progress.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
        events.step(
            run.step,
            run.total_steps,
            epoch=epoch,
            loss=round(loss, 6),
            lr=lr,
            avg_loss=round(loss_sum / index, 6),
        )
    return True


def _base_lr(run: Run) -> float:
    """The scheduled lr of the job's base learning rate (block lr weights scale groups, not this)."""
    group = run.optimizer.param_groups[0]
    factor = run.scheduler.get_last_lr()[0] / group["initial_lr"] if group["initial_lr"] else 0.0
    job = run.job
    return factor * (job.resolved_unet_lr() if job.trains_unet() else job.resolved_text_encoder_lr())


def _progress_bar(run: Run):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=run.total_steps, initial=run.step, file=sys.stderr, unit="step", desc=run.job.output_name
    )
