"""sd-scripts' ``ss_*`` metadata, the SAI ``modelspec.*`` keys and the ``sshs_*`` hashes.

Every key sd-scripts' ``train_network.py`` writes for an SD1.5/SDXL LoRA is here, with this
run's value: the job's options, the run's progress, the dataset (``metadata_dataset.py``), the
base model's hashes, and sd-scripts' own "off" value for the features a job does not have
(``FEATURES_OFF``). Left out, as sd-scripts leaves them out: ``ss_vae_*`` (no separate VAE),
``ss_network_args`` when there are none, the model hashes for a hub id. A few keys of this
project's own are added (``ss_save_precision``, ``ss_weighted_captions``, ``ss_cache_text_*``...).

Values are strings, as sd-scripts writes them (``str()`` of the value). The two
hashes are the ones sd-webui-additional-networks reads, computed the way
sd-scripts computes them: over the file as it would be with only the ``ss_*``
metadata; the model hash is the SHA-256 of the tensor data after the header, the
legacy hash the first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save, save_file

from . import delivered
from .contract import warmup_steps
from .contract.blocks import network_args
from .families import get_family
from .metadata_dataset import dataset_meta
from .models import resolved_precision
from .optim import MAX_GRAD_NORM, optimizer_description

if TYPE_CHECKING:
    from .train import Run


#: sd-scripts' values (its argument defaults) of the train_network.py keys for features a job
#: does not have: validation, regularization images, caption dropout, Huber loss, fp8 bases...
FEATURES_OFF: dict[str, object] = {
    "ss_num_validation_images": 0,
    "ss_num_reg_images": 0,
    "ss_gradient_accumulation_steps": 1,
    "ss_network_dropout": None,
    "ss_full_fp16": False,
    "ss_lowram": False,
    "ss_adaptive_noise_scale": None,
    "ss_training_comment": None,
    "ss_caption_dropout_rate": 0.0,
    "ss_caption_dropout_every_n_epochs": 0,
    "ss_caption_tag_dropout_rate": 0.0,
    "ss_face_crop_aug_range": None,
    "ss_prior_loss_weight": 1.0,
    "ss_scale_weight_norms": None,
    "ss_ip_noise_gamma": None,
    "ss_ip_noise_gamma_random_strength": False,
    "ss_noise_offset_random_strength": False,
    "ss_debiased_estimation": False,
    "ss_loss_type": "l2",
    "ss_huber_schedule": "snr",
    "ss_huber_scale": 1.0,
    "ss_huber_c": 0.1,
    "ss_fp8_base": False,
    "ss_fp8_base_unet": False,
    "ss_validation_seed": None,
    "ss_validation_split": 0.0,
    "ss_max_validation_steps": None,
    "ss_validate_every_n_epochs": None,
    "ss_validate_every_n_steps": None,
    "ss_sd_scripts_commit_hash": "(unknown)",  # what sd-scripts writes outside a git checkout
}


def build(run: Run, epoch: int, title: str) -> dict[str, str]:
    """The metadata of the file saved after ``epoch``."""
    now = time.time()
    meta = {
        **FEATURES_OFF,
        **_training_meta(run, epoch, now),
        **dataset_meta(run),
        **_base_model_meta(run),
        **_text_cache_meta(run),
        **get_family(run.model.family).extra_metadata(run),
    }
    if args := network_args(run.job):
        meta["ss_network_args"] = json.dumps(args)
    out = {k: str(v) for k, v in meta.items()}
    res = run.resolution
    out.update(modelspec(run.model.family, title, res, run.model.prediction_type, _clip_skip_meta(run), now))
    out["modelspec.architecture"] = get_family(run.model.family).architecture_of(run.model)
    return out


def _training_meta(run: Run, epoch: int, now: float) -> dict[str, object]:
    """The job's options and the run's progress, keyed as sd-scripts keys them."""
    job = run.job
    v_prediction = run.model.prediction_type == "v_prediction"
    return {
        "ss_session_id": run.session_id,
        "ss_network_module": "networks.lora",
        "ss_network_dim": job.network_dim,
        "ss_network_alpha": float(job.network_alpha),
        "ss_base_model_version": get_family(run.model.family).model_version(v_prediction),
        "ss_v2": False,  # sd-scripts' --v2 (the SD2.x architecture): False for SD1.5 and SDXL, v-pred or not
        "ss_output_name": job.output_name,
        "ss_learning_rate": job.resolved_learning_rate(),
        "ss_unet_lr": job.resolved_unet_lr(),
        "ss_text_encoder_lr": job.resolved_text_encoder_lr(),
        "ss_optimizer": optimizer_description(run.optimizer),
        "ss_lr_scheduler": job.lr_scheduler,
        "ss_lr_warmup_steps": warmup_steps(run.total_steps, job.lr_warmup_percent),
        "ss_num_epochs": job.epochs,
        "ss_epoch": epoch,
        "ss_max_train_steps": run.total_steps,
        "ss_steps": run.step,
        "ss_num_batches_per_epoch": run.steps_per_epoch,
        "ss_num_train_images": len(run.items) * job.repeats,
        "ss_batch_size_per_device": job.batch_size,
        "ss_total_batch_size": job.batch_size,
        "ss_resolution": (run.resolution, run.resolution),
        "ss_clip_skip": _clip_skip_meta(run),
        "ss_seed": run.seed,
        "ss_mixed_precision": resolved_precision(job.mixed_precision, run.device),
        "ss_save_precision": job.save_precision,
        "ss_shuffle_caption": job.shuffle_tags,
        "ss_keep_tokens": job.keep_tokens,
        "ss_cache_latents": True,
        "ss_max_grad_norm": MAX_GRAD_NORM,
        "ss_max_token_length": None if job.max_token_length == 75 else job.max_token_length,
        "ss_weighted_captions": job.weighted_captions,
        "ss_min_snr_gamma": job.min_snr_gamma,
        "ss_noise_offset": job.noise_offset or None,
        "ss_multires_noise_iterations": job.multires_noise_iterations or None,
        "ss_multires_noise_discount": job.multires_noise_discount,
        "ss_zero_terminal_snr": bool(run.noise_scheduler.config.get("rescale_betas_zero_snr", False)),
        "ss_gradient_checkpointing": job.gradient_checkpointing,
        "ss_network_train_unet_only": not job.trains_text_encoder(),
        "ss_network_train_text_encoder_only": not job.trains_unet(),
        "ss_training_started_at": run.started_at,
        "ss_training_finished_at": now,
    }


def _base_model_meta(run: Run) -> dict[str, str]:
    """The base model's name and, for a local file or folder, its hashes (as sd-scripts writes them)."""
    meta = {"ss_sd_model_name": run.model.name}
    source = Path(run.job.base_model)
    if source.exists():
        stat = source.stat()
        legacy, sha256 = file_hashes(str(source), stat.st_size, stat.st_mtime_ns)
        meta.update(ss_sd_model_hash=legacy, ss_new_sd_model_hash=sha256)
    return meta


@functools.lru_cache(maxsize=8)
def file_hashes(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    """(legacy 8-hex-digit hash, SHA-256) of a checkpoint, computed once per version of the file.

    sd-scripts' ``model_hash``/``calculate_sha256``: the legacy hash is over the 64 KiB at offset
    1 MiB; a folder (a diffusers model) gets "IsADirectory" for both.
    """
    if Path(path).is_dir():
        return "IsADirectory", "IsADirectory"
    full = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
        f.seek(0)
        while chunk := f.read(1 << 20):
            full.update(chunk)
    return legacy, full.hexdigest()


def _text_cache_meta(run: Run) -> dict[str, object]:
    """Whether text-encoder outputs were cached, and how many shuffled captions per image (at most)."""
    cache = run.text_cache
    return {
        "ss_cache_text_encoder_outputs": cache is not None,
        "ss_cache_text_encoder_outputs_variants": max(map(len, cache.variants)) if cache else None,
    }


def _clip_skip_meta(run: Run) -> int | None:
    """sd-scripts writes None for SDXL (its usual penultimate layer); a deeper skip is recorded."""
    return get_family(run.model.family).clip_skip_metadata(run.clip_skip)


def modelspec(
    family: str, title: str, resolution: int, prediction: str, clip_skip: int | None, ts: float
) -> dict[str, str]:
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": get_family(family).architecture,
        "modelspec.implementation": get_family(family).implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": datetime.fromtimestamp(int(ts)).isoformat(),
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
    }
    if clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(clip_skip)
    return spec


def addnet_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts precomputes them."""
    training_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(tensors, training_only)
    header_len = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + header_len :]).hexdigest()
    legacy_hash = hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the file with its hashes; through a temp name, so a reader never sees half a file."""
    model_hash, legacy_hash = addnet_hashes(tensors, metadata)
    full = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
    tmp = delivered.temp_path(path)
    save_file(tensors, str(tmp), metadata=full)  # mode 0600: publish makes it 0644 as every delivered file
    delivered.publish(tmp, path)
