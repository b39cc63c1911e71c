"""The trainer as its own process: tiny SD1.5 and SDXL, 2 epochs, files that diffusers loads."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from .conftest import base_job, parse_events, run_trainer, write_dataset, write_job

pytestmark = pytest.mark.slow

SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
REQUIRED_METADATA = (
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_module",
    "ss_base_model_version",
    "ss_sd_model_name",
    "ss_output_name",
    "ss_learning_rate",
    "ss_unet_lr",
    "ss_text_encoder_lr",
    "ss_optimizer",
    "ss_lr_scheduler",
    "ss_num_epochs",
    "ss_epoch",
    "ss_max_train_steps",
    "ss_steps",
    "ss_resolution",
    "ss_clip_skip",
    "ss_seed",
    "ss_tag_frequency",
    "ss_training_started_at",
    "ss_training_finished_at",
    "sshs_model_hash",
    "sshs_legacy_hash",
    "modelspec.sai_model_spec",
    "modelspec.architecture",
    "modelspec.implementation",
    "modelspec.title",
    "modelspec.resolution",
    "modelspec.date",
)


def _linear_or_1x1(module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1)


def expected_sd15_modules(pipe) -> set[str]:
    """sd-scripts' SD1.5 names, derived here from the model's module tree."""
    names = set()
    for name, module in pipe.unet.named_modules():
        if ".attentions." in name and _linear_or_1x1(module) and "time_emb" not in name:
            names.add("lora_unet_" + name.replace(".", "_"))
    te_re = re.compile(r"^encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
    for name, _ in pipe.text_encoder.named_modules():
        if te_re.match(name):
            names.add("lora_te_text_model_" + name.replace(".", "_"))
    return names


def expected_sdxl_modules(pipe) -> set[str]:
    """sd-scripts' SDXL names: the original input/middle/output block numbering, by hand."""
    sgm = {  # tiny SDXL: 3 levels, 2 layers per block, like the real SDXL's block layout
        "down_blocks.1.attentions.0": "input_blocks.4.1",
        "down_blocks.1.attentions.1": "input_blocks.5.1",
        "down_blocks.2.attentions.0": "input_blocks.7.1",
        "down_blocks.2.attentions.1": "input_blocks.8.1",
        "mid_block.attentions.0": "middle_block.1",
        **{
            f"up_blocks.{i}.attentions.{j}": f"output_blocks.{3 * i + j}.1"
            for i in range(2)
            for j in range(3)
        },
    }
    names = set()
    for name, module in pipe.unet.named_modules():
        if ".attentions." not in name or not _linear_or_1x1(module):
            continue
        prefix = (
            ".".join(name.split(".")[:4]) if name.startswith(("down", "up")) else "mid_block.attentions.0"
        )
        rest = name[len(prefix) + 1 :]
        names.add("lora_unet_" + f"{sgm[prefix]}.{rest}".replace(".", "_"))
    te_re = re.compile(r"^(text_model\.)?encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
    for index, te in enumerate((pipe.text_encoder, pipe.text_encoder_2), start=1):
        for name, _ in te.named_modules():
            if te_re.match(name):
                names.add(f"lora_te{index}_text_model_" + name.removeprefix("text_model.").replace(".", "_"))
    return names


def _load_pipeline(family, path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe) -> np.ndarray:
    return pipe(
        "tkchar, yellow_disc",
        num_inference_steps=3,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(7),
        guidance_scale=1.0,
    ).images[0]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_train_two_epochs_and_load_in_diffusers(family, request, tmp_path):
    model = request.getfixturevalue(f"tiny_{family}")
    data = write_dataset(tmp_path / "data", count=3, sizes=[(64, 64), (96, 64), (64, 80)])
    out = tmp_path / "out"
    job = base_job(
        model,
        data,
        out,
        output_name="char",
        epochs=2,
        repeats=2,
        learning_rate=2e-2,
        previews=True,
        preview_weights=[0.7, 0.8, 1.0],
        optimizer="AdamW",
        lr_scheduler="constant",
    )
    proc = run_trainer("train", "--job", str(write_job(tmp_path / "job.json", job)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = parse_events(proc.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    assert events[0]["total_steps"] == 12 and events[0]["total_epochs"] == 2
    assert [e["epoch"] for e in events if e["event"] == "epoch_saved"] == [1, 2]
    for e in events:
        assert {"event", "schema", "time"} <= e.keys()

    files = [out / "char-000001.safetensors", out / "char-000002.safetensors", out / "char.safetensors"]
    assert all(f.is_file() for f in files)
    for epoch in (1, 2):
        grid = Image.open(out / f"char-{epoch:06d}-preview.png")
        assert grid.width >= 3 * 64 and grid.height > 64  # three weights side by side, with labels

    pipe = _load_pipeline(family, model)
    expected = expected_sd15_modules(pipe) if family == "sd15" else expected_sdxl_modules(pipe)
    with safe_open(str(files[-1]), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        alpha = f.get_tensor(next(k for k in keys if k.endswith(".alpha")))
    assert keys == {m + s for m in expected for s in SUFFIXES}
    assert float(alpha) == 16.0 and alpha.dtype == torch.float16
    for key in REQUIRED_METADATA:
        assert key in meta, key
    assert meta["ss_epoch"] == "2" and meta["ss_steps"] == "12" and meta["ss_network_dim"] == "32"
    assert meta["ss_base_model_version"] == ("sd_v1" if family == "sd15" else "sdxl_base_v1-0")
    # sd-scripts: clip skip 2 recorded for SD1.5; SDXL's usual penultimate layer is "None", no encoder_layer
    assert meta["ss_clip_skip"] == ("2" if family == "sd15" else "None")
    assert meta.get("modelspec.encoder_layer") == ("2" if family == "sd15" else None)
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sshs_model_hash"]) and len(meta["sshs_legacy_hash"]) == 8

    from peft.tuners.lora import LoraLayer

    baseline = _render(pipe)
    pipe.load_lora_weights(str(files[-1]), adapter_name="char")
    injected = sum(
        isinstance(m, LoraLayer)
        for part in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
        if part is not None
        for m in part.modules()
    )
    assert injected == len(expected)
    pipe.set_adapters(["char"], adapter_weights=[1.0])
    changed = _render(pipe)
    pipe.set_adapters(["char"], adapter_weights=[0.0])
    off = _render(pipe)
    assert np.abs(changed - baseline).max() > 0.02
    np.testing.assert_allclose(off, baseline, atol=1e-6)


def test_generate_compare_grid(tiny_sd15, tmp_path):
    data = write_dataset(tmp_path / "data", count=2)
    out = tmp_path / "out"
    job = base_job(tiny_sd15, data, out, output_name="g", learning_rate=1e-2, repeats=2)
    assert run_trainer("train", "--job", str(write_job(tmp_path / "job.json", job))).returncode == 0
    gen = {
        "base_model": str(tiny_sd15),
        "output_dir": str(tmp_path / "gen"),
        "output_name": "cmp",
        "prompt": "tkchar, yellow_disc",
        "loras": [{"path": str(out / "g.safetensors")}],
        "compare_weights": [0.7, 0.8, 1.0],
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 5,
        "mixed_precision": "no",
        "sampler": "dpmpp_2m",
    }
    proc = run_trainer("generate", "--job", str(write_job(tmp_path / "gen.json", gen)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = parse_events(proc.stdout)[-1]
    assert done["event"] == "done" and len(done["files"]) == 4
    grid = Image.open(done["files"][-1])
    assert grid.width >= 3 * 64
    singles = [np.asarray(Image.open(p)) for p in done["files"][:3]]
    assert not np.array_equal(singles[0], singles[2])  # weight 0.7 vs 1.0


def test_invalid_job_exits_2_with_a_failed_event(tmp_path):
    path = write_job(
        tmp_path / "job.json", {"dataset_dir": "d", "base_model": "m", "output_dir": "o", "epoch": 3}
    )
    proc = run_trainer("train", "--job", str(path))
    assert proc.returncode == 2
    events = parse_events(proc.stdout)
    assert events[-1]["event"] == "failed" and "unknown option 'epoch'" in events[-1]["message"]
    assert "Traceback" not in proc.stderr


def test_missing_dataset_fails_with_a_readable_message(tiny_sd15, tmp_path):
    job = base_job(tiny_sd15, tmp_path / "nope", tmp_path / "out")
    proc = run_trainer("train", "--job", str(write_job(tmp_path / "job.json", job)))
    assert proc.returncode == 2  # EXIT_INVALID_JOB: the job names a folder that is not there
    assert "does not exist" in parse_events(proc.stdout)[-1]["message"]


def test_demo_trains_and_renders_offline(tmp_path):
    proc = run_trainer("demo", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "step 60/60" in proc.stdout and "files written under" in proc.stdout
    lora_dir = tmp_path / "demo" / "lora"
    assert (lora_dir / "tkmascot.safetensors").is_file()
    assert Image.open(lora_dir / "tkmascot-000002-preview.png").width >= 3 * 128
    assert Image.open(tmp_path / "demo" / "generated" / "compare-grid.png").width >= 3 * 128
