"""Block-wise options in the contract (trainer/contract/blocks.py): sd-scripts' presets, the zero
threshold, the counts per family, and the ss_network_args strings. Every expectation is computed
here from sd-scripts' formulas (networks/lora.py: get_block_lr_weight), rewritten from its source.
"""

from __future__ import annotations

import math
import re

import pytest

from trainer.contract import TrainJob
from trainer.contract.blocks import (
    block_dims_alphas,
    block_labels,
    block_lr_weights,
    block_problems,
    network_args,
)

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
