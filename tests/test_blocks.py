"""Block-wise lr weights, ranks and alphas (sd-scripts' down/mid/up_lr_weight, block_dims, block_alphas).

Every expectation is computed here, independently of the trainer: sd-scripts' formulas and its
block numbering (networks/lora.py: get_block_lr_weight, get_block_index) rewritten from its source,
and the SGM <-> diffusers names of the SDXL attention blocks written out as a table.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors import safe_open

from trainer.contract import TrainJob
from trainer.contract.blocks import (
    block_dims_alphas,
    block_labels,
    block_lr_weights,
    block_problems,
    layout,
    network_args,
)

from .conftest import base_job, train_in_process, write_dataset

COUNTS = {"sd15": (12, 1, 25), "sdxl": (9, 3, 23)}  # down (= up), mid, all blocks
NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


def job(**options) -> TrainJob:
    return TrainJob(dataset_dir="data", output_dir="out", base_model="model", **options)


# References (sd-scripts, rewritten) ---------------------------------------------------------------


def ref_preset(name: str, base: float, n: int) -> list[float]:
    if name == "cosine":
        return [math.sin(math.pi * (i / (n - 1)) / 2) + base for i in reversed(range(n))]
    if name == "sine":
        return [math.sin(math.pi * (i / (n - 1)) / 2) + base for i in range(n)]
    if name == "linear":
        return [i / (n - 1) + base for i in range(n)]
    if name == "reverse_linear":
        return [i / (n - 1) + base for i in reversed(range(n))]
    assert name == "zeros"
    return [0.0 + base] * n


def ref_full_weights(family: str, down: list[float], mid: list[float], up: list[float]) -> list[float]:
    weights = down + mid + up
    return [1.0, *weights, 1.0] if family == "sdxl" else weights


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


# Contract: presets, threshold, counts ----------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("preset", ["cosine", "sine", "linear", "reverse_linear", "zeros"])
def test_presets_expand_to_sd_scripts_formulas(family, preset):
    n, m, total = COUNTS[family]
    got = block_lr_weights(job(down_lr_weight=preset, up_lr_weight=f"{preset}+0.5"), family)
    down, up = ref_preset(preset, 0.0, n), ref_preset(preset, 0.5, n)
    # A weight of exactly 0 stays 0 (the threshold 0 keeps only weights above it).
    want = ref_full_weights(family, [w if w > 0 else 0.0 for w in down], [1.0] * m, up)
    assert len(got) == total
    assert got == pytest.approx(want, abs=1e-12)


def test_preset_values_at_the_ends():
    sd15 = block_lr_weights(job(down_lr_weight="cosine", up_lr_weight="sine+0.25"), "sd15")
    assert sd15[0] == pytest.approx(1.0) and sd15[11] == 0.0 and sd15[12] == 1.0
    assert sd15[13] == pytest.approx(0.25) and sd15[24] == pytest.approx(1.25)
    sdxl = block_lr_weights(job(down_lr_weight="linear"), "sdxl")
    assert sdxl[0] == 1.0 and sdxl[1] == 0.0 and sdxl[9] == pytest.approx(1.0) and sdxl[22] == 1.0
    assert sdxl[5] == pytest.approx(4 / 8)


def test_threshold_zeroes_weights_at_or_below_it_and_those_blocks_lose_their_rank():
    down = [0.1, 0.2, 0.3, 0.25, 1.0, 0.2, 0.0, 0.5, 0.9]
    j = job(down_lr_weight=down, mid_lr_weight=[0.2, 0.21, 1.0], block_lr_zero_threshold=0.2)
    weights = block_lr_weights(j, "sdxl")
    want_down = [w if w > 0.2 else 0.0 for w in down]
    assert weights == ref_full_weights("sdxl", want_down, [0.0, 0.21, 1.0], [1.0] * 9)
    dims, alphas = block_dims_alphas(j, "sdxl")
    assert dims == [0 if w == 0 else 32 for w in weights]
    assert alphas == [16.0] * 23
    # An unset part keeps 1.0 even when the threshold is above 1, as sd-scripts.
    assert block_lr_weights(job(mid_lr_weight=[0.5], block_lr_zero_threshold=2.0), "sd15") == (
        [1.0] * 12 + [0.0] + [1.0] * 12
    )


def test_block_dims_and_alphas_default_to_network_dim_and_alpha():
    assert block_dims_alphas(job(), "sd15") is None and block_lr_weights(job(), "sd15") is None
    dims = list(range(1, 26))
    j = job(block_dims=dims, network_alpha=8)
    assert block_dims_alphas(j, "sd15") == (dims, [8.0] * 25)
    assert block_lr_weights(j, "sd15") is None
    # lr weights alone: network_dim everywhere, except blocks with weight 0.
    j = job(up_lr_weight=[1.0, 0.0] * 6, network_dim=8, network_alpha=4)
    dims, alphas = block_dims_alphas(j, "sd15")
    assert dims == [8] * 13 + [8, 0] * 6 and alphas == [4.0] * 25
    # alpha 0 means alpha = rank (sd-scripts' LoRAModule).
    dims, alphas = block_dims_alphas(job(block_dims=[4] * 23, block_alphas=[0, 2] + [0] * 21), "sdxl")
    assert alphas == [4.0, 2.0] + [4.0] * 21


@pytest.mark.parametrize(
    ("family", "options", "line"),
    [
        ("sdxl", {"down_lr_weight": [1] * 12}, "down_lr_weight has 12 values; SDXL has 9 down blocks (IN00-IN08)"),
        ("sd15", {"up_lr_weight": [1] * 9}, "up_lr_weight has 9 values; SD1.5 has 12 up blocks (OUT00-OUT11)"),
        ("sd15", {"mid_lr_weight": [1, 1, 1]}, "mid_lr_weight has 3 values; SD1.5 has 1 middle block (MID)"),
        ("sdxl", {"mid_lr_weight": [1]}, "mid_lr_weight has 1 value; SDXL has 3 middle blocks (MID00-MID02)"),
        ("sd15", {"block_dims": [4] * 23}, "block_dims has 23 values; SD1.5 has 25 blocks (IN00-IN11, MID, OUT00-OUT11)"),
        (
            "sdxl",
            {"block_dims": [4] * 23, "block_alphas": [1] * 25},
            "block_alphas has 25 values; SDXL has 23 blocks (EMB, IN00-IN08, MID00-MID02, OUT00-OUT08, OUT)",
        ),
    ],
)  # fmt: skip
def test_wrong_counts_are_refused_naming_the_family(family, options, line):
    j = job(**options)
    assert block_problems(j, family) == [line]
    with pytest.raises(ValueError, match=re.escape(line)):
        block_dims_alphas(j, family)


def test_one_line_per_problem():
    problems = block_problems(
        job(down_lr_weight=[1] * 12, up_lr_weight=[1] * 12, block_dims=[4] * 25), "sdxl"
    )
    assert len(problems) == 3 and all("SDXL" in p for p in problems)
    assert block_problems(job(down_lr_weight="cosine", up_lr_weight="sine+0.5"), "sdxl") == []
    assert block_problems(job(), "sd15") == []


def test_nothing_to_train_is_refused():
    assert block_problems(job(block_dims=[0] * 25), "sd15") == [
        "block_dims gives every block 0: the UNet would train nothing "
        "(to train only the text encoders, use text_encoder_only)"
    ]
    (line,) = block_problems(job(down_lr_weight="zeros", mid_lr_weight=[0.1], up_lr_weight=[0.1] * 12,
                                 block_lr_zero_threshold=0.1), "sd15")  # fmt: skip
    assert line.startswith("down/mid/up_lr_weight give every block weight 0") and "threshold 0.1" in line
    # Ranks only where SD1.5 has no LoRA module (IN00, IN03, OUT00): nothing either.
    dims = [0] * 25
    dims[0] = dims[3] = dims[13] = 8
    (line,) = block_problems(job(block_dims=dims), "sd15")
    assert "IN01-IN02, IN04-IN05, IN07-IN08, MID, OUT03-OUT11" in line
    assert line.startswith("no block that holds LoRA modules keeps a rank and an lr weight above 0")
    # SDXL's first block with LoRA is IN04 (block 5)
    (line,) = block_problems(job(block_dims=[8] * 5 + [0] * 18), "sdxl")
    assert "(SDXL has LoRA modules in IN04-IN05, IN07-IN08, MID01, OUT00-OUT05)" in line
    assert block_problems(job(block_dims=[8] * 6 + [0] * 17), "sdxl") == []
    # a zero lr weight takes the rank away too
    assert block_problems(job(block_dims=[8] * 6 + [0] * 17, down_lr_weight=[1] * 4 + [0] * 5), "sdxl")


def test_labels():
    sd15, sdxl = block_labels("sd15"), block_labels("sdxl")
    assert sd15[:2] == ["IN00", "IN01"] and sd15[12] == "MID" and sd15[13] == "OUT00" and len(sd15) == 25
    assert sdxl[0] == "EMB" and sdxl[1] == "IN00" and sdxl[10:13] == ["MID00", "MID01", "MID02"]
    assert sdxl[13] == "OUT00" and sdxl[22] == "OUT" and len(sdxl) == 23


def test_network_args_are_sd_scripts_strings():
    j = job(
        down_lr_weight="cosine+0.5",
        mid_lr_weight=[0.5],
        up_lr_weight=[1, 0.25, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0.125],
        block_lr_zero_threshold=0.1,
        block_dims=[4] * 25,
        block_alphas=[2.5] * 25,
    )
    args = network_args(j)
    assert set(args) == {
        "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas"
    }  # fmt: skip
    assert all(isinstance(v, str) for v in args.values())
    assert args["down_lr_weight"] == "cosine+0.5" and args["block_dims"] == ",".join(["4"] * 25)
    # sd-scripts reads them back with float()/int() over split(",").
    assert [float(s) for s in args["up_lr_weight"].split(",")] == [1, 0.25, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0.125]
    assert [float(s) for s in args["mid_lr_weight"].split(",")] == [0.5]
    assert float(args["block_lr_zero_threshold"]) == 0.1
    assert [float(s) for s in args["block_alphas"].split(",")] == [2.5] * 25
    assert network_args(job()) == {}
    assert network_args(job(block_dims=[4] * 23)) == {"block_dims": ",".join(["4"] * 23)}


# Block numbering of the real UNets ------------------------------------------------------------------


def _full_unet(family):
    from diffusers import UNet2DConditionModel

    from trainer.tiny import UNET_SHAPES

    with torch.device("meta"):
        return UNet2DConditionModel(in_channels=4, out_channels=4, **UNET_SHAPES[(family, "full")])


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


def _tiny(request, family):
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


def _options(family) -> tuple[dict, list[int], list[float], list[float]]:
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

    model = _tiny(request, family)
    options, dims, alphas, weights = _options(family)
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

    model = _tiny(request, "sd15")
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

    model = _tiny(request, "sdxl")
    targets = unet_modules(model.unet)
    groups = add_unet_lora(model.unet, job(network_dim=6, network_alpha=3), "sdxl")
    layers = lora_modules(model.unet)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-4 and len(groups[0]["params"]) == 2 * len(layers)
    assert {(lay.r["default"], lay.scaling["default"]) for lay in layers.values()} == {(6, 0.5)}
    assert set(layers) == set(targets)


def test_problems_raise_and_a_tiny_model_without_any_lora_block_is_refused(request):
    from trainer.blocks import add_unet_lora

    model = _tiny(request, "sd15")
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


# Export / import with per-module ranks ----------------------------------------------------------------


def test_export_import_roundtrip_with_per_module_ranks(request):
    from trainer.blocks import add_unet_lora
    from trainer.kohya import export_state_dict, import_state_dict
    from trainer.lora import add_lora, lora_parameters, text_encoder_target_modules

    options, dims, alphas, _ = _options("sd15")
    first = _tiny(request, "sd15")
    add_unet_lora(first.unet, job(**options), "sd15")
    te = first.text_encoders[0]
    add_lora(te, text_encoder_target_modules(te), 4, 2.0)
    gen = torch.Generator().manual_seed(0)
    for p in lora_parameters(first.unet) + lora_parameters(te):
        p.data = torch.randn(p.shape, generator=gen)
    state = export_state_dict(first.unet, [te], "sd15", torch.float32)

    downs = {
        k.removesuffix(".lora_down.weight"): v for k, v in state.items() if k.endswith(".lora_down.weight")
    }
    names = {ref_key(n, "sd15"): n for n in lora_modules(first.unet)}
    assert {k for k in downs if k.startswith("lora_unet_")} == set(names)
    for key, down in downs.items():
        if key.startswith("lora_te_"):
            assert down.shape[0] == 4 and float(state[f"{key}.alpha"]) == 2.0
            continue
        block = ref_block_of_key(key, "sd15")
        assert down.shape[0] == dims[block]
        assert float(state[f"{key}.alpha"]) == (alphas[block] or dims[block])
        assert state[f"{key}.lora_up.weight"].shape[1] == dims[block]

    # the same ranks: everything comes back
    second = _tiny(request, "sd15")
    add_unet_lora(second.unet, job(**options), "sd15")
    te2 = second.text_encoders[0]
    add_lora(te2, text_encoder_target_modules(te2), 4, 2.0)
    assert import_state_dict(state, second.unet, [te2], "sd15") == []
    for a, b in zip(lora_parameters(first.unet), lora_parameters(second.unet), strict=True):
        torch.testing.assert_close(a, b)
    assert export_state_dict(second.unet, [te2], "sd15", torch.float32).keys() == state.keys()

    # other alphas, same ranks: the effect (alpha / rank * up @ down) is kept
    other = dict(options, block_alphas=[1.0] * 25)
    third = _tiny(request, "sd15")
    add_unet_lora(third.unet, job(**other), "sd15")
    assert import_state_dict(state, third.unet, [], "sd15") == []
    for name, layer in lora_modules(third.unet).items():
        key = ref_key(name, "sd15")
        want = float(state[f"{key}.alpha"]) / dims[ref_block(name, "sd15")]
        want = want * state[f"{key}.lora_up.weight"].flatten(1) @ state[f"{key}.lora_down.weight"].flatten(1)
        up, down = layer.lora_B["default"].weight.flatten(1), layer.lora_A["default"].weight.flatten(1)
        got = layer.scaling["default"] * up @ down
        torch.testing.assert_close(got, want)

    # another rank in one block: a problem line naming the module and both ranks
    changed = list(options["block_dims"])
    changed[16] = 5
    fourth = _tiny(request, "sd15")
    add_unet_lora(fourth.unet, job(**dict(options, block_dims=changed)), "sd15")
    before = [p.detach().clone() for p in lora_parameters(fourth.unet)]
    problems = import_state_dict(state, fourth.unet, [], "sd15")
    assert problems and all(re.fullmatch(r"lora_unet_up_blocks_1_attentions_0_\w+: rank 8 in the file, 5 in the job", p)
                            for p in problems[:5])  # fmt: skip
    assert problems[-1] == f"... and {12 - 5} more"
    for a, b in zip(before, lora_parameters(fourth.unet), strict=True):
        assert torch.equal(a, b)  # nothing copied from a file that does not fit


# End to end (needs trainer/train.py to call blocks.add_unet_lora) -------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_block_job_trains_saves_per_block_ranks_and_loads_in_diffusers_and_sd_scripts_style(
    family, request, tmp_path
):
    import numpy as np
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    model = request.getfixturevalue(f"tiny_{family}")
    options, dims, alphas, weights = _options(family)
    spec = dict(base_job(model, write_dataset(tmp_path / "data", count=2), tmp_path / "out"), **options)
    spec.update(learning_rate=1e-2, network_dim=4, network_alpha=2)
    events, code = train_in_process(spec)
    assert code == 0, events[-1]
    path = tmp_path / "out" / "test.safetensors"
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    gone = TINY_OPTIONS[family]["gone"]
    want_unet = {ref_key(n, family): n for n in unet_modules(pipe.unet) if ref_block(n, family) not in gone}
    got_unet = {
        k.removesuffix(".lora_down.weight") for k in state if k.startswith("lora_unet_") and "lora_down" in k
    }
    assert got_unet == set(want_unet)
    assert not any(ref_block_of_key(k, family) in gone for k in state if k.startswith("lora_unet_"))

    # sd-scripts-style loading: dim from lora_down, alpha from .alpha, up (out, dim)
    base = dict(pipe.unet.named_modules())
    deltas = {}
    for key, name in want_unet.items():
        down, up = state[f"{key}.lora_down.weight"].float(), state[f"{key}.lora_up.weight"].float()
        dim, alpha = down.shape[0], float(state[f"{key}.alpha"])
        block = ref_block_of_key(key, family)
        assert dim == dims[block], key
        assert alpha == (alphas[block] or dims[block]), key
        module = base[name]
        out_dim = module.out_features if isinstance(module, torch.nn.Linear) else module.out_channels
        in_dim = module.in_features if isinstance(module, torch.nn.Linear) else module.in_channels
        assert up.shape[:2] == (out_dim, dim) and down.shape[1] == in_dim
        deltas[name] = (alpha / dim) * (up.flatten(1) @ down.flatten(1))
    for key in state:
        if key.startswith("lora_te") and key.endswith(".lora_down.weight"):
            assert state[key].shape[0] == 4 and float(state[key.replace("lora_down.weight", "alpha")]) == 2.0
    assert any(d.abs().max() > 0 for d in deltas.values())  # it trained

    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    import json

    assert json.loads(meta["ss_network_args"]) == network_args(TrainJob.model_validate(spec))

    # diffusers loads the file with the same modules and ranks
    def render():
        return pipe(
            "tkchar, yellow_disc", num_inference_steps=2, height=64, width=64, output_type="np",
            generator=torch.Generator("cpu").manual_seed(7), guidance_scale=1.0,
        ).images[0]  # fmt: skip

    def loaded(adapter):
        return {n: m for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}

    baseline = render()
    pipe.load_lora_weights(str(path), adapter_name="raw")
    raw = loaded("raw")
    assert set(raw) == set(want_unet.values())
    for name, layer in raw.items():
        assert layer.r["raw"] == dims[ref_block(name, family)], name
    pipe.unload_lora_weights()

    # ... and, its alphas made uniform (diffusers 0.42 gives attention projections the file's most
    # common alpha), with sd-scripts' LoRA delta in every module
    from safetensors.torch import load_file

    from trainer.kohya import uniform_alpha

    pipe.load_lora_weights(uniform_alpha(load_file(str(path))), adapter_name="blk")
    folded = loaded("blk")
    assert set(folded) == set(want_unet.values())
    for name, layer in folded.items():
        a, b = layer.lora_A["blk"].weight.float(), layer.lora_B["blk"].weight.float()
        delta = layer.scaling["blk"] * (b.flatten(1) @ a.flatten(1))
        # the folded up weights are rounded to the file's fp16 once more
        torch.testing.assert_close(delta, deltas[name], rtol=0, atol=2e-3 * float(deltas[name].abs().max()))
    assert np.abs(render() - baseline).max() > 0


def test_uniform_alpha_keeps_every_module_s_effect():
    from trainer.kohya import uniform_alpha

    gen = torch.Generator().manual_seed(1)
    state = {}
    for i, (rank, alpha) in enumerate([(4, 2.0), (4, 2.0), (8, 2.0), (2, 0.5), (6, 0.0), (3, 12.0)]):
        state[f"lora_unet_m{i}.lora_down.weight"] = torch.randn(rank, 16, generator=gen).half()
        state[f"lora_unet_m{i}.lora_up.weight"] = torch.randn(32, rank, generator=gen).half()
        state[f"lora_unet_m{i}.alpha"] = torch.tensor(alpha).half()
    out = uniform_alpha(state)
    assert out.keys() == state.keys()
    assert {float(v) for k, v in out.items() if k.endswith(".alpha")} == {2.0}
    for i in range(6):
        down, up = state[f"lora_unet_m{i}.lora_down.weight"], state[f"lora_unet_m{i}.lora_up.weight"]
        rank, alpha = down.shape[0], float(state[f"lora_unet_m{i}.alpha"]) or down.shape[0]
        want = alpha / rank * up.float() @ down.float()
        got = 2.0 / rank * out[f"lora_unet_m{i}.lora_up.weight"].float() @ down.float()
        torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * float(want.abs().max()))  # fp16 again
        assert out[f"lora_unet_m{i}.lora_up.weight"].dtype == torch.float16
    same = {k: v for k, v in state.items() if k.startswith(("lora_unet_m0.", "lora_unet_m1."))}
    assert all(uniform_alpha(same)[k] is v for k, v in same.items())
