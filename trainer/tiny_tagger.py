"""A tiny WD14-shaped ONNX tagger whose scores follow simple image colors.

Nothing here can download SmilingWolf's taggers, so tests and the offline demo build
this one and load it through the same code as a real model: a folder with
``model.onnx`` (float32 input ``input`` of shape [batch, S, S, 3], NHWC, BGR, 0-255;
float32 output ``predictions_sigmoid`` of shape [batch, N]) and ``selected_tags.csv``
(``tag_id,name,category,count``, the four rating tags first).

The graph: the mean of each channel over the whole (padded, resized) image, divided
by 255, gives ``b, g, r`` in 0..1; then one fixed MatMul + Add + Sigmoid, so every
score is ``sigmoid(logit)`` with these logits:

================== ======== ====================================
tag                category logit
================== ======== ====================================
general            9 rating 2 - r
sensitive          9 rating -2 + r
questionable       9 rating -4
explicit           9 rating -6
1girl              0        1                  (0.731 always)
solo               0        0                  (0.500 always)
simple_background  0        2.5                (0.924 always)
red_background     0        8r - 4g - 4b - 2
blue_background    0        8b - 4g - 4r - 2
green_background   0        8g - 4r - 4b - 2
white_background   0        4(r + g + b) - 10
black_background   0        2 - 4(r + g + b)
green_hair         0        3g - 1
smile              0        (r + g + b) - 2
hatsune_miku       4        5g - 2r - 2b - 2.5
kasane_teto        4        5r - 2g - 2b - 2.5
================== ======== ====================================

So a pure red image scores red_background 0.998, simple_background 0.924, 1girl
0.731, solo 0.5 (general tags), kasane_teto 0.924 (character); a cyan one scores
hatsune_miku 0.622 (between the usual character thresholds); a white one
white_background 0.881 and smile 0.731.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

INPUT_NAME = "input"  # as SmilingWolf's v3 taggers
OUTPUT_NAME = "predictions_sigmoid"
OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime the project supports

# name, category, (weight of b, g, r), bias
TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0, 0, -1), 2),
    ("sensitive", 9, (0, 0, 1), -2),
    ("questionable", 9, (0, 0, 0), -4),
    ("explicit", 9, (0, 0, 0), -6),
    ("1girl", 0, (0, 0, 0), 1),
    ("solo", 0, (0, 0, 0), 0),
    ("simple_background", 0, (0, 0, 0), 2.5),
    ("red_background", 0, (-4, -4, 8), -2),
    ("blue_background", 0, (8, -4, -4), -2),
    ("green_background", 0, (-4, 8, -4), -2),
    ("white_background", 0, (4, 4, 4), -10),
    ("black_background", 0, (-4, -4, -4), 2),
    ("green_hair", 0, (0, 3, 0), -1),
    ("smile", 0, (1, 1, 1), -2),
    ("hatsune_miku", 4, (-2, 5, -2), -2.5),
    ("kasane_teto", 4, (-2, -2, 5), -2.5),
]


def make_tiny_tagger(out: str | Path, input_size: int = 64) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``out``; returns the folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for _, _, w, _ in TAGS], dtype=np.float32).T  # (3, N): rows b, g, r
    bias = np.array([b for *_, b in TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME], ["channel_mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Mul", ["channel_mean", "inv_255"], ["bgr"]),
            helper.make_node("MatMul", ["bgr", "weights"], ["matmul"]),
            helper.make_node("Add", ["matmul", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", input_size, input_size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "inv_255"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph,
        producer_name="loratrain-bot tiny_tagger",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out / "model.onnx")
    with open(out / "selected_tags.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _, _) in enumerate(TAGS):
            writer.writerow([9999990 + i, name, category, 1000 * (len(TAGS) - i)])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny WD14-shaped ONNX tagger for offline use.")
    parser.add_argument("--out", required=True, help="folder to write model.onnx and selected_tags.csv")
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args(argv)
    print(make_tiny_tagger(args.out, args.input_size))


if __name__ == "__main__":
    main()
