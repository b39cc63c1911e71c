"""Every ``ss_*`` key sd-scripts' train_network.py writes is in our files, with this run's value."""

from __future__ import annotations

import hashlib
import json

import pytest
from safetensors import safe_open

from trainer.metadata import file_hashes

from .conftest import base_job, train_in_process, write_dataset

# The keys kohya-ss/sd-scripts' train_network.py writes in train() at commit
# 48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16): the ``metadata = {...}`` dict, the
# dataset keys of both its paths (a train_data_dir folder and a dataset config), the network args,
# the model hashes and the per-save keys. SD1.5 and SDXL add no keys of their own (update_metadata).
TRAIN_NETWORK_KEYS = {
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate",
    "ss_text_encoder_lr", "ss_unet_lr", "ss_num_train_images", "ss_num_validation_images",
    "ss_num_reg_images", "ss_num_batches_per_epoch", "ss_num_epochs", "ss_gradient_checkpointing",
    "ss_gradient_accumulation_steps", "ss_max_train_steps", "ss_lr_warmup_steps", "ss_lr_scheduler",
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_dropout",
    "ss_mixed_precision", "ss_full_fp16", "ss_v2", "ss_base_model_version", "ss_clip_skip",
    "ss_max_token_length", "ss_cache_latents", "ss_seed", "ss_lowram", "ss_noise_offset",
    "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_adaptive_noise_scale",
    "ss_zero_terminal_snr", "ss_training_comment", "ss_sd_scripts_commit_hash", "ss_optimizer",
    "ss_max_grad_norm", "ss_caption_dropout_rate", "ss_caption_dropout_every_n_epochs",
    "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range", "ss_prior_loss_weight",
    "ss_min_snr_gamma", "ss_scale_weight_norms", "ss_ip_noise_gamma", "ss_debiased_estimation",
    "ss_noise_offset_random_strength", "ss_ip_noise_gamma_random_strength", "ss_loss_type",
    "ss_huber_schedule", "ss_huber_scale", "ss_huber_c", "ss_fp8_base", "ss_fp8_base_unet",
    "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps",
    "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation",
    # dataset config path
    "ss_datasets", "ss_tag_frequency", "ss_dataset_dirs",
    # train_data_dir path
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug",
    "ss_flip_aug", "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket",
    "ss_bucket_no_upscale", "ss_min_bucket_reso", "ss_max_bucket_reso", "ss_keep_tokens",
    "ss_reg_dataset_dirs", "ss_bucket_info",
    # conditional
    "ss_network_args", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name",
    "ss_vae_hash", "ss_new_vae_hash", "ss_vae_name",
    # per save
    "ss_training_finished_at", "ss_steps", "ss_epoch",
}  # fmt: skip
#: Written by sd-scripts only with --vae (we have no separate VAE) or --network_args (none here).
NOT_WRITTEN = {"ss_vae_hash", "ss_new_vae_hash", "ss_vae_name", "ss_network_args"}
#: This project's own keys, beyond train_network.py's.
PROJECT_KEYS = {
    "ss_save_precision", "ss_weighted_captions", "ss_network_train_unet_only",
    "ss_network_train_text_encoder_only", "ss_cache_text_encoder_outputs",
    "ss_cache_text_encoder_outputs_variants",
}  # fmt: skip
# Images for three buckets at resolution 128: square, 3:1 and 1:3, one 10:9 (not quite square).
SIZES = [(96, 96), (192, 64), (64, 192), (100, 90)]
REPEATS = 2


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_train_network_key_with_the_runs_values(family, request, tmp_path):
    model = request.getfixturevalue(f"tiny_{family}")
    data = write_dataset(tmp_path / "chars", count=len(SIZES), sizes=SIZES, caption="TkChar, Yellow_Disc, a")
    job = base_job(model, data, tmp_path / "out", resolution=128, repeats=REPEATS, noise_offset=0.05)
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    with safe_open(str(tmp_path / "out" / "test.safetensors"), framework="pt") as f:
        meta = f.metadata()

    assert {k for k in meta if k.startswith("ss_")} == (TRAIN_NETWORK_KEYS - NOT_WRITTEN) | PROJECT_KEYS
    steps = str(len(SIZES) * REPEATS)  # batch size 1, one epoch
    assert meta["ss_epoch"] == "1" and meta["ss_steps"] == meta["ss_max_train_steps"] == steps
    assert meta["ss_noise_offset"] == "0.05" and meta["ss_max_grad_norm"] == "1.0"
    assert meta["ss_num_train_images"] == steps and meta["ss_num_reg_images"] == "0"
    assert meta["ss_loss_type"] == "l2" and meta["ss_training_comment"] == "None"
    assert meta["ss_validation_split"] == "0.0" and meta["ss_gradient_accumulation_steps"] == "1"
    assert meta["ss_zero_terminal_snr"] == "False" and meta["ss_resize_interpolation"] == "lanczos"
    assert meta["ss_min_bucket_reso"] == "64" and meta["ss_max_bucket_reso"] == "256"
    assert 0 <= int(meta["ss_session_id"]) <= 2**32
    assert meta["ss_sd_model_hash"] == meta["ss_new_sd_model_hash"] == "IsADirectory"  # a diffusers folder

    buckets = json.loads(meta["ss_bucket_info"])
    assert buckets["buckets"] == {
        "0": {"resolution": [64, 192], "count": REPEATS},
        "1": {"resolution": [128, 128], "count": 2 * REPEATS},
        "2": {"resolution": [192, 64], "count": REPEATS},
    }
    assert sum(b["count"] for b in buckets["buckets"].values()) == len(SIZES) * REPEATS
    assert buckets["mean_img_ar_error"] == pytest.approx((100 / 90 - 1) / len(SIZES))

    folder = {"n_repeats": REPEATS, "img_count": len(SIZES)}
    assert json.loads(meta["ss_dataset_dirs"]) == {"chars": folder}
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {}
    tags = {"chars": {"tkchar": 4, "yellow_disc": 4, "a": 4}}
    assert json.loads(meta["ss_tag_frequency"]) == tags
    [dataset] = json.loads(meta["ss_datasets"])
    assert dataset["bucket_info"] == buckets and dataset["tag_frequency"] == tags
    assert dataset["resolution"] == [128, 128] and dataset["num_train_images"] == len(SIZES) * REPEATS
    [subset] = dataset["subsets"]
    assert subset["image_dir"] == "chars" and subset["img_count"] == len(SIZES) and not subset["is_reg"]


def test_checkpoint_hashes_are_sd_scripts_model_hash_and_sha256(tmp_path):
    blob = bytes(range(256)) * 5000  # 1.2 MB: past the legacy hash's 64 KiB at 1 MiB
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    legacy, full = file_hashes(str(path), len(blob), 0)
    assert legacy == hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    assert full == hashlib.sha256(blob).hexdigest()
    assert file_hashes(str(tmp_path), 0, 0) == ("IsADirectory", "IsADirectory")


class _Killed(Exception):
    pass


def test_a_resumed_job_keeps_its_session_id(monkeypatch, tiny_sd15, tmp_path):
    """sd-scripts' ss_session_id names the group of epochs a file came from: one job, resumed or not."""
    import trainer.train

    save_state = trainer.train.save_training_state

    def save_then_die(run):
        save_state(run)
        raise _Killed  # the process dies right after epoch 1's file and state are written

    job = base_job(tiny_sd15, write_dataset(tmp_path / "data", count=2), tmp_path / "out", epochs=2)
    monkeypatch.setattr(trainer.train, "save_training_state", save_then_die)
    with pytest.raises(_Killed):
        train_in_process(job)
    monkeypatch.setattr(trainer.train, "save_training_state", save_state)
    events, code = train_in_process({**job, "resume": True})
    assert code == 0, events[-1]
    metas = []
    for epoch in (1, 2):
        with safe_open(str(tmp_path / "out" / f"test-{epoch:06d}.safetensors"), framework="pt") as f:
            metas.append(f.metadata())
    assert metas[0]["ss_session_id"] == metas[1]["ss_session_id"]
    assert metas[0]["ss_training_started_at"] == metas[1]["ss_training_started_at"]
    assert [m["ss_epoch"] for m in metas] == ["1", "2"] and metas[1]["ss_steps"] == "4"
