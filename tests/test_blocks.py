"""Block-wise lr weights, ranks and alphas on the UNet (sd-scripts' down/mid/up_lr_weight, block_dims, block_alphas).

Every expectation is computed here, independently of the trainer: sd-scripts' formulas and its
block numbering (networks/lora.py: get_block_lr_weight, get_block_index) rewritten from its source,
and the SGM <-> diffusers names of the SDXL attention blocks written out as a table.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from trainer.contract.blocks import layout

from .test_block_options import COUNTS, job, ref_full_weights, ref_preset


def ref_block_of_key(key: str, family: str) -> int:
    """sd-scripts' get_block_index."""
    if family == "sd15":
        m = re.search(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_", key)
        if m:
            i, j = int(m.group(2)), int(m.group(4))
            idx = 3 * i + (2 if m.group(3) in ("upsamplers", "downsamplers") else j)
            return 1 + idx if m.group(1) == "down" else 12 + 1 + idx
        return 12 if "mid_block_" in key else -1
    name = key[len("lora_unet_") :]
    if name.startswith("input_blocks_"):
        return 1 + int(name.split("_")[2])
    if name.startswith("middle_block_"):
        return 10 + int(name.split("_")[2])
    if name.startswith("output_blocks_"):
        return 13 + int(name.split("_")[2])
    return -1


#: diffusers attention block -> SGM block, for SDXL (layers_per_block 2; the tiny SDXL has the same).
SDXL_SGM = {
    "down_blocks.1.attentions.0": "input_blocks.4.1",
    "down_blocks.1.attentions.1": "input_blocks.5.1",
    "down_blocks.2.attentions.0": "input_blocks.7.1",
    "down_blocks.2.attentions.1": "input_blocks.8.1",
    "mid_block.attentions.0": "middle_block.1",
    **{f"up_blocks.0.attentions.{j}": f"output_blocks.{j}.1" for j in range(3)},
    **{f"up_blocks.1.attentions.{j}": f"output_blocks.{3 + j}.1" for j in range(3)},
}


def ref_key(name: str, family: str) -> str:
    if family == "sdxl":
        head = next(h for h in SDXL_SGM if name.startswith(h + "."))
        name = SDXL_SGM[head] + name[len(head) :]
    return "lora_unet_" + name.replace(".", "_")


def ref_block(name: str, family: str) -> int:
    return ref_block_of_key(ref_key(name, family), family)


def unet_modules(unet) -> list[str]:
    """sd-scripts' UNet targets: Linear / 1x1 Conv2d inside Transformer2DModel."""
    names = []
    for parent_name, parent in unet.named_modules():
        if type(parent).__name__ != "Transformer2DModel":
            continue
        for child_name, child in parent.named_modules():
            if isinstance(child, torch.nn.Linear) or (
                isinstance(child, torch.nn.Conv2d) and child.kernel_size == (1, 1)
            ):
                names.append(f"{parent_name}.{child_name}")
    return names


def lora_modules(model) -> dict[str, object]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer) and "default" in m.lora_A}


# Block numbering of the real UNets ------------------------------------------------------------------


def _full_unet(family):
    from diffusers import UNet2DConditionModel

    from trainer.families import get_family

    with torch.device("meta"):
        return UNet2DConditionModel(in_channels=4, out_channels=4, **get_family(family).unet_config("full"))


@pytest.mark.parametrize(
    ("family", "examples", "holding"),
    [
        (
            "sd15",
            {
                "down_blocks.0.attentions.0.proj_in": 1,
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": 4,
                "down_blocks.2.attentions.1.proj_out": 8,
                "mid_block.attentions.0.transformer_blocks.0.ff.net.2": 12,
                "up_blocks.1.attentions.0.proj_in": 16,
                "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0": 24,
            },
            {1, 2, 4, 5, 7, 8, 12, *range(16, 25)},
        ),
        (
            "sdxl",
            {
                "down_blocks.1.attentions.0.proj_in": 5,  # input_blocks_4_1
                "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_k": 9,  # input_blocks_8_1
                "mid_block.attentions.0.transformer_blocks.3.ff.net.0.proj": 11,  # middle_block_1
                "up_blocks.0.attentions.0.proj_out": 13,  # output_blocks_0_1
                "up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_v": 18,  # output_blocks_5_1
            },
            {5, 6, 8, 9, 11, *range(13, 19)},
        ),
    ],
)
def test_block_index_of_every_full_size_unet_module_is_sd_scripts(family, examples, holding):
    from trainer.blocks import unet_block_index
    from trainer.kohya import unet_key

    unet = _full_unet(family)
    names = unet_modules(unet)
    assert len(names) == (192 if family == "sd15" else 722)
    lpb = unet.config.layers_per_block
    got = {name: unet_block_index(name, family, lpb) for name in names}
    for name in names:
        assert unet_key(name, family, lpb) == ref_key(name, family)
        assert got[name] == ref_block(name, family), name
    for name, index in examples.items():
        assert got[name] == index, name
    assert set(got.values()) == holding == layout(family).lora_blocks


def test_block_index_of_other_keys():
    from trainer.blocks import kohya_block_index

    assert kohya_block_index("lora_unet_down_blocks_1_downsamplers_0_conv", "sd15") == 6
    assert kohya_block_index("lora_unet_up_blocks_0_resnets_2_conv1", "sd15") == 15
    assert kohya_block_index("lora_unet_time_embed_0", "sdxl") == 0
    assert kohya_block_index("lora_unet_out_2", "sdxl") == 22
    assert kohya_block_index("lora_te1_text_model_encoder_layers_0_mlp_fc1", "sdxl") == -1


# Param groups on the tiny models ---------------------------------------------------------------------


def tiny_model(request, family):
    from trainer.models import load_base_model

    return load_base_model(str(request.getfixturevalue(f"tiny_{family}")))


#: per family: block_dims, block_alphas and lr weights that leave some LoRA blocks out two ways.
TINY_OPTIONS = {
    # tiny SD1.5 holds LoRA in blocks 1, 4, 12, 16, 17, 19, 20
    "sd15": {
        "dims": {1: 4, 4: 0, 12: 2, 16: 8, 17: 3, 19: 6, 20: 1},
        "alphas": {1: 2.0, 12: 0.0, 16: 4.0, 17: 1.0, 19: 12.0, 20: 0.5},
        "down_lr_weight": "linear+0.5",
        "mid_lr_weight": [0.5],
        "up_lr_weight": [1.0, 1.0, 1.0, 2.0, 0.0, 1.0, 0.75, 0.25, 1.0, 1.0, 1.0, 1.0],
        "gone": {4, 17},
    },
    # tiny SDXL holds LoRA in blocks 5, 6, 8, 9, 11, 13-18
    "sdxl": {
        "dims": {5: 4, 6: 0, 8: 2, 9: 6, 11: 3, 13: 8, 14: 2, 15: 1, 16: 5, 17: 5, 18: 4},
        "alphas": {5: 1.0, 8: 2.0, 9: 0.0, 11: 3.0, 13: 16.0, 14: 1.0, 15: 0.5, 16: 5.0, 17: 2.5, 18: 8.0},
        "down_lr_weight": [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.1, 2.0],
        "mid_lr_weight": [1.0, 0.3, 1.0],
        "up_lr_weight": [1.0, 0.5, 1.0, 0.05, 1.0, 0.6, 1.0, 1.0, 1.0],
        "block_lr_zero_threshold": 0.05,
        "gone": {6, 16},
    },
}


def tiny_block_options(family) -> tuple[dict, list[int], list[float], list[float]]:
    spec = TINY_OPTIONS[family]
    n, m, total = COUNTS[family]
    dims = [spec["dims"].get(i, 7) for i in range(total)]
    alphas = [spec["alphas"].get(i, 3.0) for i in range(total)]
    options = {k: spec[k] for k in ("down_lr_weight", "mid_lr_weight", "up_lr_weight") if k in spec}
    options.update(block_dims=dims, block_alphas=alphas)
    if "block_lr_zero_threshold" in spec:
        options["block_lr_zero_threshold"] = spec["block_lr_zero_threshold"]
    down = spec["down_lr_weight"]
    down = ref_preset("linear", 0.5, n) if down == "linear+0.5" else down
    cut = spec.get("block_lr_zero_threshold", 0.0)
    weights = ref_full_weights(
        family,
        *[
            [w if w > cut else 0.0 for w in part]
            for part in (down, spec["mid_lr_weight"], spec["up_lr_weight"])
        ],
    )
    return options, dims, alphas, weights


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_each_block_is_one_param_group_at_its_weighted_lr(family, request):
    from trainer.blocks import add_unet_lora

    model = tiny_model(request, family)
    options, dims, alphas, weights = tiny_block_options(family)
    targets = unet_modules(model.unet)
    te_before = [[(n, p.requires_grad) for n, p in te.named_parameters()] for te in model.text_encoders]
    groups = add_unet_lora(model.unet, job(unet_lr=2e-3, **options), family)

    layers = lora_modules(model.unet)
    holding = {ref_block(n, family) for n in targets}
    gone = TINY_OPTIONS[family]["gone"]
    assert gone < holding
    want_blocks = sorted(b for b in holding if b not in gone)
    assert [g["name"] for g in groups] == [f"unet_block{b}" for b in want_blocks]
    param_block = {}
    for name, layer in layers.items():
        block = ref_block(name, family)
        assert block not in gone, name
        rank, alpha = dims[block], alphas[block] or float(dims[block])
        assert layer.r["default"] == rank and layer.lora_A["default"].weight.shape[0] == rank
        assert layer.scaling["default"] == pytest.approx(alpha / rank), name
        assert layer.cast_input_dtype_enabled is False
        for p in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            param_block[id(p)] = block
    assert set(layers) == {n for n in targets if ref_block(n, family) not in gone}
    for group in groups:
        block = int(group["name"].removeprefix("unet_block"))
        assert group["lr"] == pytest.approx(2e-3 * weights[block])
        assert group["lr"] > 0
        assert {param_block[id(p)] for p in group["params"]} == {block}
    assert sum(len(g["params"]) for g in groups) == 2 * len(layers)
    for te, before in zip(model.text_encoders, te_before, strict=True):
        assert not lora_modules(te)
        assert [(n, p.requires_grad) for n, p in te.named_parameters()] == before

    # the optimizer and diffusers' schedule keep each group's lr (the schedule multiplies them)
    from diffusers.optimization import get_scheduler

    for p in (p for g in groups for p in g["params"]):
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(groups, lr=1.0)
    sched = get_scheduler("cosine", opt, num_warmup_steps=0, num_training_steps=10)
    opt.step()
    sched.step()
    factor = 0.5 * (1 + math.cos(math.pi * 0.1))
    for group in opt.param_groups:
        block = int(group["name"].removeprefix("unet_block"))
        assert group["lr"] == pytest.approx(2e-3 * weights[block] * factor)


def test_without_lr_weights_one_group_and_ranks_per_block(request):
    from trainer.blocks import add_unet_lora

    model = tiny_model(request, "sd15")
    dims = [5] * 25
    dims[4], dims[12] = 0, 3
    groups = add_unet_lora(model.unet, job(block_dims=dims, learning_rate=3e-4), "sd15")
    assert len(groups) == 1 and groups[0]["lr"] == 3e-4 and "name" not in groups[0]
    layers = lora_modules(model.unet)
    assert {ref_block(n, "sd15") for n in layers} == {1, 12, 16, 17, 19, 20}
    for name, layer in layers.items():
        assert layer.r["default"] == dims[ref_block(name, "sd15")]
        assert layer.scaling["default"] == pytest.approx(16.0 / layer.r["default"])
    assert len(groups[0]["params"]) == 2 * len(layers)


def test_plain_job_is_unchanged(request):
    from trainer.blocks import add_unet_lora

    model = tiny_model(request, "sdxl")
    targets = unet_modules(model.unet)
    groups = add_unet_lora(model.unet, job(network_dim=6, network_alpha=3), "sdxl")
    layers = lora_modules(model.unet)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-4 and len(groups[0]["params"]) == 2 * len(layers)
    assert {(lay.r["default"], lay.scaling["default"]) for lay in layers.values()} == {(6, 0.5)}
    assert set(layers) == set(targets)


def test_problems_raise_and_a_tiny_model_without_any_lora_block_is_refused(request):
    from trainer.blocks import add_unet_lora

    model = tiny_model(request, "sd15")
    with pytest.raises(ValueError, match=r"block_dims has 23 values; SD1.5 has 25 blocks"):
        add_unet_lora(model.unet, job(block_dims=[4] * 23), "sd15")
    dims = [0] * 25
    dims[2] = 4  # IN02 holds LoRA in the full-size SD1.5, not in the tiny one
    with pytest.raises(ValueError, match="leave no UNet module with LoRA"):
        add_unet_lora(model.unet, job(block_dims=dims), "sd15")
    assert not lora_modules(model.unet)


def test_pattern_keys_match_exactly_one_module_name():
    from peft.utils.other import get_pattern_key

    from trainer.lora import _exact

    key = _exact(["a.b", "c.d"])
    assert get_pattern_key([key], "a.b") == key and get_pattern_key([key], "c.d") == key
    for other in ("x.a.b", "a.b.c", "a_b", "c.dd"):
        assert get_pattern_key([key], other) == other  # no match
