"""bench/gpu_check.py --tiny --device cpu: every section of the GPU check on the tiny models (the
script's own check; the figures come from a run on a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
PASSES = ("trainer_fp16", "trainer_bf16", "trainer_flux_bf16")  # dispatcher: the demo, as test_demo runs it
TRAINING = ("sd15", "sd15_gc", "sdxl", "sdxl_gc", "flux_gc", "flux")
QUANTIZED = ("flux_nf4", "flux_int8")
FIGURES = ("steps_per_s", "bare_steps_per_s", "peak_mb", "train_peak_mb")


@pytest.mark.slow
def test_tiny_cpu_run_ends_with_every_section_in_one_key_value_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "line.txt"),
            "--only",
            ",".join(PASSES + TRAINING + QUANTIZED),
        ],  # fmt: skip
        cwd=tmp_path,  # no .env of the operator's
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    values = dict(pair.split("=", 1) for pair in line.split())
    assert (tmp_path / "line.txt").read_text().strip() == line
    assert values["device"] == "cpu" and values["size"] == "tiny" and int(values["total_s"]) >= 0
    for name in PASSES:
        assert values[name] == "pass", f"{name}: {values[name]}\n{run.stderr[-3000:]}"
        assert float(values[f"{name}_s"]) > 0
    for name in TRAINING:
        assert values[name] == "ok", f"{name}: {values[name]}\n{run.stderr[-3000:]}"
        assert float(values[f"{name}_steps_per_s"]) > 0 and float(values[f"ratio_{name}"]) > 0
        assert all(values[f"{name}_{key}"] for key in FIGURES)
    for name in QUANTIZED:  # the trainer's quantize_base (bitsandbytes runs its layers on the CPU too)
        assert values[name] == "ok", f"{name}: {values[name]}\n{run.stderr[-3000:]}"


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    assert "needs a CUDA GPU" in run.stderr and not run.stdout
