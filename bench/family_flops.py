"""The compute of one training step per family, counted on the meta device, and the cost rates it gives.

Each family's full-size denoiser (the real architecture, no weights) runs one forward pass at a
side under ``torch.utils.flop_counter``. A LoRA step on a frozen base is that forward, the backward
through the activations (about as much again) and the LoRA's own small share, so the ratio of two
families' forward FLOPs is the ratio of their step times where both are compute-bound, as training
at these sizes is on a GPU. The cost rates are calibrated to the reference family (SDXL, whose rate
matches SeaArt's charge for the guide's job):

    rate[family] = rate[reference] x flops[family] / flops[reference]   (at the family's default side)

and the image cost from one picture's forwards (default steps, two per step with CFG).

Real step times also differ in kernel efficiency (Flux's large matmuls run nearer peak than a UNet's
convolutions), so this is an upper bound on the ratio until ``bench/gpu_check.py`` measures one.

    python bench/family_flops.py [--reference sdxl] [--sides 512 1024]

Ends with one line of key=value pairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from trainer.contract.families import FAMILIES  # noqa: E402
from trainer.families import get_family  # noqa: E402


def forward_flops(family: str, side: int) -> int:
    """FLOPs of one batch-1 forward of ``family``'s full-size denoiser at ``side`` px."""
    fam = get_family(family)
    denoiser = fam.meta_denoiser().to(torch.bfloat16)
    inputs = fam.example_inputs(denoiser, side, torch.bfloat16, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        denoiser(**inputs)
    return counter.get_total_flops()


def render_flops(flops: dict[tuple[str, int], int], family: str) -> float:
    """One picture at the family's default side and steps: a forward per step, two with a negative
    prompt (classifier-free guidance), one for a guidance-distilled family that takes none."""
    info = FAMILIES[family]
    passes = 1 if "negative" in info.refused_render_options else 2
    return flops[(family, info.default_side)] * info.default_steps * passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="sdxl", choices=sorted(FAMILIES))
    parser.add_argument("--sides", type=int, nargs="+", default=[512, 1024])
    args = parser.parse_args()
    flops = {(key, side): forward_flops(key, side) for key in FAMILIES for side in args.sides}
    ref = FAMILIES[args.reference]
    out: dict[str, str] = {}
    print(f"{'family':8} " + " ".join(f"{s:>6} px TFLOP  x{args.reference}" for s in args.sides))
    for key, info in FAMILIES.items():
        cells = []
        for side in args.sides:
            ratio = flops[(key, side)] / flops[(args.reference, side)]
            cells.append(f"{flops[(key, side)] / 1e12:12.2f} {ratio:7.2f}")
            out[f"{key}_{side}_tflop"] = f"{flops[(key, side)] / 1e12:.2f}"
            out[f"{key}_{side}_ratio"] = f"{ratio:.2f}"
        print(f"{key:8} " + " ".join(cells))
        side = info.default_side if info.default_side in args.sides else args.sides[-1]
        ratio = flops[(key, side)] / flops[(args.reference, side)]
        out[f"{key}_step_cost"] = f"{ref.step_cost * ratio:.4g}"
        out[f"{key}_steps_per_s"] = f"{ref.steps_per_s / ratio:.3g}"
        if info.default_side in args.sides and ref.default_side in args.sides:
            work = render_flops(flops, key)
            out[f"{key}_image_cost"] = f"{ref.image_cost * work / render_flops(flops, args.reference):.3g}"
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
