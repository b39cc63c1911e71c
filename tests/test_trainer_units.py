"""Pure pieces of the trainer: buckets, exact step counts, sd-scripts names, file hashes, grids."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
import torch
from PIL import Image
from safetensors.torch import load, save

from trainer.contract import steps_per_epoch
from trainer.data import TrainItem, epoch_batches, make_buckets, nearest_bucket, resize_and_crop
from trainer.families.sdxl import original_path as sdxl_unet_original_path
from trainer.kohya import text_encoder_key, unet_key
from trainer.metadata import addnet_hashes, save_lora
from trainer.render import make_grid


def test_buckets_match_sd_scripts_defaults_at_512():
    buckets = make_buckets(512)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    assert (384, 640) in buckets and (640, 384) in buckets and (448, 576) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= 512 * 512
        assert 256 <= w <= 1024 and 256 <= h <= 1024


def test_an_image_goes_to_the_bucket_nearest_its_aspect():
    buckets = make_buckets(512)
    assert nearest_bucket(1000, 1000, buckets) == (512, 512)
    assert nearest_bucket(600, 1000, buckets) == (384, 640)
    img = Image.new("RGB", (600, 1000))
    crop, (top, left) = resize_and_crop(img, (384, 640))
    assert crop.size == (384, 640) and left == 0 and top >= 0


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_epoch_batches_are_exactly_the_promised_count(batch_size):
    sizes = [(512, 512)] * 5 + [(384, 640)] * 3 + [(640, 384)] * 2
    items = [TrainItem(image_path=None, caption="", bucket=b) for b in sizes]
    for repeats in (1, 3, 7):
        want = steps_per_epoch(len(items), repeats, batch_size)
        batches = epoch_batches(items, repeats, batch_size, want, random.Random(repeats))
        assert len(batches) == want
        for batch in batches:
            assert 1 <= len(batch) <= batch_size
            assert len({items[i].bucket for i in batch}) == 1  # one bucket per batch


def test_sdxl_names_use_the_original_block_numbering():
    # Real SDXL: 3 levels, layers_per_block 2: attention at input 4,5,7,8, middle 1, output 0-5.
    assert sdxl_unet_original_path("down_blocks.1.attentions.0.proj_in", 2) == "input_blocks.4.1.proj_in"
    assert sdxl_unet_original_path("down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k", 2) == (
        "input_blocks.8.1.transformer_blocks.3.attn2.to_k"
    )
    assert sdxl_unet_original_path("mid_block.attentions.0.proj_out", 2) == "middle_block.1.proj_out"
    assert sdxl_unet_original_path("up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2", 2) == (
        "output_blocks.5.1.transformer_blocks.0.ff.net.2"
    )
    assert unet_key("up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", "sdxl", 2) == (
        "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_out_0"
    )
    assert (
        unet_key("down_blocks.0.attentions.1.proj_in", "sd15", 2)
        == "lora_unet_down_blocks_0_attentions_1_proj_in"
    )


def test_text_encoder_names_add_text_model_back():
    # transformers 5's CLIPTextModel has no .text_model; CLIPTextModelWithProjection keeps it.
    assert text_encoder_key("encoder.layers.0.self_attn.q_proj", "sd15", 0) == (
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    )
    assert text_encoder_key("text_model.encoder.layers.11.mlp.fc2", "sdxl", 1) == (
        "lora_te2_text_model_encoder_layers_11_mlp_fc2"
    )
    assert (
        text_encoder_key("encoder.layers.3.mlp.fc1", "sdxl", 0)
        == "lora_te1_text_model_encoder_layers_3_mlp_fc1"
    )


def test_addnet_hashes_are_computed_as_sd_scripts_does(tmp_path):
    tensors = {f"lora_unet_x{i}.lora_down.weight": torch.randn(64, 1024) for i in range(8)}  # > 1.1 MiB
    meta = {"ss_network_dim": "64", "modelspec.title": "not hashed"}
    model_hash, legacy = addnet_hashes(tensors, meta)
    blob = save(tensors, {"ss_network_dim": "64"})
    n = int.from_bytes(blob[:8], "little")
    assert model_hash == hashlib.sha256(blob[8 + n :]).hexdigest()
    buf = io.BytesIO(blob)
    buf.seek(0x100000)
    assert legacy == hashlib.sha256(buf.read(0x10000)).hexdigest()[:8]
    path = tmp_path / "x.safetensors"
    save_lora(path, tensors, meta)
    assert set(load(path.read_bytes())) == set(tensors)
    assert not list(tmp_path.glob("*.tmp"))


def test_grid_has_one_cell_per_image_and_room_for_labels():
    images = [[Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]]
    grid = make_grid(images, ["weight 0.7", "weight 0.8", "weight 1"], title="epoch 1")
    assert grid.width >= 3 * 192  # tiny cells are enlarged to stay readable
    px = grid.load()
    assert px[grid.width - 5, grid.height - 5] == (0, 0, 255)
    assert any(px[x, 8] != (255, 255, 255) for x in range(grid.width))  # the title is drawn


def test_family_detection_from_folders_and_checkpoint_keys(tmp_path, tiny_sd15, tiny_sdxl):
    from safetensors.torch import save_file

    from trainer.models import ModelLoadError, detect_family

    assert detect_family(str(tiny_sd15)) == "sd15"
    assert detect_family(str(tiny_sdxl)) == "sdxl"
    xl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2)}, str(xl))
    assert detect_family(str(xl)) == "sdxl"
    v1 = tmp_path / "v1.safetensors"
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)}, str(v1))
    assert detect_family(str(v1)) == "sd15"
    odd = tmp_path / "odd.safetensors"
    save_file({"something": torch.zeros(2)}, str(odd))
    with pytest.raises(ModelLoadError, match="set model_family"):
        detect_family(str(odd))
    with pytest.raises(ModelLoadError, match="model_index.json"):
        detect_family(str(tmp_path))


def test_step_events_are_throttled_unless_every_n_steps():
    from trainer.events import EventWriter

    now = [0.0]  # the writer's clock, moved by hand: 0.3 s a step
    writer = EventWriter(io.StringIO(), interval=1.0, clock=lambda: now[0])
    written = []
    for s in range(1, 101):
        written.append(writer.step(s, 100, epoch=1, loss=0.1, lr=1e-4))
        now[0] += 0.3
    # the first, then one each 1.0 s (every 4th step at 0.3 s a step), and the last
    assert [s for s, w in zip(range(1, 101), written, strict=True) if w] == [*range(1, 101, 4), 100]
    quiet = EventWriter(io.StringIO(), interval=3600, clock=lambda: 12.0)  # any clock, even one near 0
    written = [quiet.step(s, 100, epoch=1, loss=0.1, lr=1e-4) for s in range(1, 101)]
    assert written.count(True) == 2 and written[0] and written[-1]  # the first and the last
    every = EventWriter(io.StringIO(), every_n_steps=10)
    assert sum(every.step(s, 100, epoch=1, loss=0.1, lr=1e-4) for s in range(1, 101)) == 10


def test_unreadable_image_is_a_dataset_error(tmp_path):
    from trainer.data import DatasetError, assign_buckets, scan_dataset

    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png is not a readable image"):
        assign_buckets(scan_dataset(tmp_path), 512)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "missing")


@pytest.mark.parametrize(
    ("family", "unet_params_m", "unet_modules", "te_modules"),
    [("sd15", 859.52, 192, [72]), ("sdxl", 2567.46, 722, [72, 192])],
)
def test_full_size_shapes_match_the_real_models_and_sd_scripts_module_counts(
    family, unet_params_m, unet_modules, te_modules
):
    """The real architectures (built on the meta device): sd-scripts makes 192+72 LoRA modules for
    SD1.5 and 722+72+192 for SDXL; our targeting must find exactly those."""
    from diffusers import UNet2DConditionModel

    from trainer.families import get_family
    from trainer.lora import text_encoder_target_modules, unet_target_modules
    from trainer.tiny import TEXT_SHAPES, make_text_encoder

    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **get_family(family).unet_config("full"))
        shapes = ["clip_l"] if family == "sd15" else ["clip_l", "clip_g"]
        encoders = [make_text_encoder(49408, TEXT_SHAPES[s], i == 1) for i, s in enumerate(shapes)]
    assert sum(p.numel() for p in unet.parameters()) / 1e6 == pytest.approx(unet_params_m, abs=0.01)
    assert len(unet_target_modules(unet)) == unet_modules
    assert [len(text_encoder_target_modules(te)) for te in encoders] == te_modules
