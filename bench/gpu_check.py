"""GPU check: this project's real figures on one CUDA GPU, with random-weight models (no downloads).

Sections, each time-boxed (one that fails prints ``<section>=error:<reason>`` and the rest go on):

- ``trainer_fp16``, ``trainer_bf16``, ``trainer_flux_bf16``: ``python -m trainer train`` on a tiny
  model on the device (2 epochs, a preview grid each): pass/fail, seconds, last loss.
- ``dispatcher``: the offline demo (``python -m bot demo``: the real bot, queue, dispatcher, trainer
  and /generate through the loopback Discord) with its worker on the device.
- ``sd15``, ``sdxl``, ``flux`` (and ``*_gc``, gradient checkpointing on): the full-size models from
  their real configs (SD1.5 at 512 px, SDXL and Flux.1-dev at 1024 px), rank 16, batch 1, bf16.
  Our real training loop (``trainer.train.train_epoch`` through a Run) and a bare loop on the same
  modules, interleaved (``bench/trainer_step.py``'s ``measure``): ``steps_per_s`` (ours),
  ``bare_steps_per_s``, ``ratio_<section>`` (ours / bare), ``peak_mb`` (max allocated over the job:
  loading, caching, training) and ``train_peak_mb`` (training only).
- ``flux_nf4``, ``flux_int8``: Flux with gradient checkpointing and the job's ``quantize_base``
  (``unsupported`` while TrainJob has no such option); the model is handed to the trainer on the
  host, so its own placement and quantization are measured. ``fits_24gb`` is yes when the peak
  reserved memory plus a CUDA context (600 MiB) fits a 24 GB card's 24,564 MiB.

Ends with one line of key=value pairs on stdout; progress goes to stderr.

    python bench/gpu_check.py                        # on a CUDA GPU: sections start within --budget-s 450
    python bench/gpu_check.py --only sd15,flux_nf4   # some sections
    python bench/gpu_check.py --tiny --device cpu    # every section on the tiny models: the script's own check
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

# As in bench/trainer_step.py: run as a script, this folder would shadow the standard library's queue.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no internet on the GPU machine: never wait on the hub

import torch  # noqa: E402

import bench.trainer_step as trainer_step  # noqa: E402
from bench.gpu_flows import demo_child, run_dispatcher, run_trainer, trainer_job  # noqa: E402
from bench.gpu_models import is_quantized, random_base_model, release  # noqa: E402

CARD_24GB_MIB = 24564  # what an RTX 3090 / 4090 reports in all
CUDA_CONTEXT_MIB = 600
RANK = 16


@dataclass(frozen=True)
class Shape:
    """How much of one family's loop is measured: images at ``resolution``, steps per block."""

    resolution: int
    images: int
    steps: int
    blocks: int


FULL_SHAPES = {"sd15": Shape(512, 4, 8, 3), "sdxl": Shape(1024, 4, 4, 2), "flux": Shape(1024, 2, 4, 2)}
TINY_SHAPES = {family: Shape(64, 2, 2, 1) for family in FULL_SHAPES}


@dataclass
class Check:
    """One run of the check: where, at which size, and until when."""

    device: torch.device
    size: str  # full | tiny
    tmp: Path
    started: float
    deadline: float

    @property
    def shapes(self) -> dict[str, Shape]:
        return FULL_SHAPES if self.size == "full" else TINY_SHAPES

    @property
    def build_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.size == "full" else torch.float32

    @property
    def precision(self) -> str:
        """bf16 on a GPU; fp32 for the tiny models on a CPU (its bf16 convolutions are slow)."""
        return "bf16" if self.device.type == "cuda" else "no"

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


class SectionTimeout(Exception):
    """A section ran past its time box."""


class Unsupported(Exception):
    """The installed project cannot do what the section measures."""


# Training figures ---------------------------------------------------------------------------------


def peaks_mb(device: torch.device) -> tuple[float, float]:
    """(max allocated, max reserved) in MiB since the counters were reset; zeros off CUDA."""
    if device.type != "cuda":
        return 0.0, 0.0
    return torch.cuda.max_memory_allocated() / 2**20, torch.cuda.max_memory_reserved() / 2**20


def quantize_option(quantize: str | None) -> dict[str, str]:
    """The job option that quantizes the frozen base, or Unsupported while TrainJob lacks it."""
    from trainer.contract import TrainJob

    if quantize is None:
        return {}
    if "quantize_base" not in TrainJob.model_fields:
        raise Unsupported("TrainJob has no quantize_base option")
    return {"quantize_base": quantize}


def measure_training(check: Check, name: str, family: str, gc: bool, quantize: str | None) -> dict[str, str]:
    """bench/trainer_step.py's ``measure`` (ours vs bare, interleaved) on the random full-size model,
    with the peak memory of setup (recorded when preflight starts) and of training."""
    from pydantic import ValidationError

    options = {
        "model_family": family,
        "network_dim": RANK,
        "network_alpha": RANK,
        **quantize_option(quantize),
    }
    shape, folder = check.shapes[family], check.tmp / name
    trainer_step.write_images(folder / "data", shape.images, shape.resolution)
    args = argparse.Namespace(
        resolution=shape.resolution, steps=shape.steps, blocks=1 if quantize else shape.blocks, batch_size=1,
        precision=check.precision, optimizer="AdamW", device=str(check.device), gradient_checkpointing=gc,
    )  # fmt: skip
    setup: dict[str, object] = {}
    real_preflight = trainer_step.preflight

    def recording_preflight(run):
        setup["peaks"], setup["quantized"] = peaks_mb(check.device), is_quantized(run.model.unet)
        return real_preflight(run)

    on_host = quantize is not None and check.device.type == "cuda"
    release(check.device)
    try:
        with (
            random_base_model(check.size, folder, check.device, check.build_dtype, on_host=on_host),
            mock.patch.object(trainer_step, "preflight", recording_preflight),
        ):
            result = trainer_step.measure(args, folder, folder / f"random-{family}", options, name)
    except ValidationError as exc:
        if quantize is None:
            raise
        raise Unsupported(exc.errors()[0]["msg"]) from None
    if quantize is not None and not setup.get("quantized"):
        raise RuntimeError(
            f"quantize_base={quantize} left the frozen base unquantized (this bench hands the trainer its"
            " random model at trainer.models.load_pipeline: quantizing must happen after that)"
        )
    return training_values(check, result, setup, quantize is not None)


def training_values(check: Check, result: dict, setup: dict, quantized: bool) -> dict[str, str]:
    """The section's key=value figures from ``measure``'s result and the setup peaks."""
    values = {
        "steps_per_s": f"{result['ours_steps_s']:.2f}",
        "bare_steps_per_s": f"{result['bare_steps_s']:.2f}",
        "ratio": f"{result['ratio']:.3f}",
    }
    if check.device.type != "cuda":
        return {**values, "peak_mb": "na", "train_peak_mb": "na"} | ({"fits_24gb": "na"} if quantized else {})
    setup_allocated, setup_reserved = setup.get("peaks", (0.0, 0.0))
    train_allocated, train_reserved = result["peak_cuda_mb"], peaks_mb(check.device)[1]
    values |= {
        "peak_mb": f"{max(setup_allocated, train_allocated):.0f}",
        "train_peak_mb": f"{train_allocated:.0f}",
    }
    if quantized:
        reserved = max(setup_reserved, train_reserved)
        values |= {
            "reserved_mb": f"{reserved:.0f}",
            "fits_24gb": "yes" if reserved + CUDA_CONTEXT_MIB <= CARD_24GB_MIB else "no",
        }
    return values


def training(family: str, gc: bool = False, quantize: str | None = None) -> Callable[[Check, str], dict]:
    return lambda check, name: measure_training(check, name, family, gc, quantize)


# The tiny flows -----------------------------------------------------------------------------------


def trainer_cli(family: str, precision: str) -> Callable[[Check, str], dict]:
    """``python -m trainer train`` on the tiny model of ``family`` on the device."""

    def section(check: Check, name: str) -> dict[str, str]:
        from trainer.tiny import make_tiny

        model = check.tmp / f"tiny-{family}"
        if not model.is_dir():
            make_tiny(family, model)
        data = check.tmp / "tiny-data"
        trainer_step.write_images(data, 2, 64)
        job = trainer_job(model, data, check.tmp / name, check.device.type, precision)
        return run_trainer(job, check.tmp / name, timeout_s=max(1.0, section_limit(check, name) - 5))

    return section


def dispatcher(check: Check, name: str) -> dict[str, str]:
    return run_dispatcher(
        check.tmp / name, check.device.type, timeout_s=max(1.0, section_limit(check, name) - 5)
    )


# The sections and their runner --------------------------------------------------------------------

#: name -> (what it runs, its time box in seconds on a GPU at full size), in the order they run:
#: the quick end-to-end checks first, then the models, Flux without checkpointing last.
SECTIONS: dict[str, tuple[Callable[[Check, str], dict], float]] = {
    "trainer_fp16": (trainer_cli("sd15", "fp16"), 90),
    "trainer_bf16": (trainer_cli("sd15", "bf16"), 90),
    "trainer_flux_bf16": (trainer_cli("flux", "bf16"), 90),
    "dispatcher": (dispatcher, 180),
    "sd15": (training("sd15"), 60),
    "sd15_gc": (training("sd15", gc=True), 60),
    "sdxl": (training("sdxl"), 90),
    "sdxl_gc": (training("sdxl", gc=True), 90),
    "flux_gc": (training("flux", gc=True), 150),
    "flux_nf4": (training("flux", gc=True, quantize="nf4"), 150),
    "flux_int8": (training("flux", gc=True, quantize="int8"), 150),
    "flux": (training("flux"), 150),
}
TINY_LIMIT_S = 240


def own_limit(check: Check, name: str) -> float:
    """The section's own time box: the table's on a GPU, a generous one for the tiny models."""
    return SECTIONS[name][1] if check.size == "full" else TINY_LIMIT_S


def section_limit(check: Check, name: str) -> float:
    """The section's time box, cut to what is left of the whole run."""
    return max(1.0, min(own_limit(check, name), check.deadline - time.monotonic()))


def short(text: str) -> str:
    """A reason that fits in one value: no spaces, no '=', at most 80 characters."""
    return re.sub(r"\s+", "_", text.strip()).replace("=", ":")[:80] or "?"


def _on_alarm(signum, frame) -> None:
    raise SectionTimeout


def run_section(check: Check, name: str) -> dict[str, str]:
    """One section in its time box: ``{name: status, name_key: value, ...}``."""
    if check.deadline - time.monotonic() < own_limit(check, name) / 2:
        check.say(f"{name}: skipped, not enough time left")
        return {name: "skipped:time"}
    limit = section_limit(check, name)
    check.say(f"{name}: start (time box {limit:.0f}s)")
    started = time.monotonic()
    status, values = "ok", {}
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            values = SECTIONS[name][0](check, name)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except (SectionTimeout, subprocess.TimeoutExpired):
        status = f"error:timeout_after_{limit:.0f}s"
    except Unsupported as exc:
        status = "unsupported"
        check.say(f"{name}: unsupported: {exc}")
    except Exception as exc:
        status = "error:" + short(f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)  # the whole story for whoever reads the GPU run's log
    finally:
        release(check.device)
    status = values.pop("", status)
    out = {name: status} | {
        (f"ratio_{name}" if k == "ratio" else f"{name}_{k}"): v for k, v in values.items()
    }
    check.say(f"{name}: {time.monotonic() - started:.0f}s " + " ".join(f"{k}={v}" for k, v in out.items()))
    return out


def environment(check: Check) -> dict[str, str]:
    """What the figures were measured on."""
    import importlib.util

    values = {"device": check.device.type, "size": check.size, "torch": torch.__version__}
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        values |= {"gpu": short(props.name), "gpu_mib": f"{props.total_memory / 2**20:.0f}"}
    values["bnb"] = "yes" if importlib.util.find_spec("bitsandbytes") else "no"
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tiny", action="store_true", help="the tiny models (the script's own check; CPU is fine)"
    )
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu (with --tiny)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    ap.add_argument(
        "--budget-s", type=float, default=None, help="the whole run's time (default 450 s; tiny 1800)"
    )
    ap.add_argument("--out", default=None, help="also write the final key=value line to this file")
    ap.add_argument("--demo-child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.demo_child:
        return demo_child(args.demo_child, str(device))
    if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type != "cuda" and not args.tiny):
        print(
            "gpu_check needs a CUDA GPU (it builds full-size SD1.5, SDXL and Flux.1 models); "
            "run `python bench/gpu_check.py --tiny --device cpu` to check the script itself",
            file=sys.stderr,
        )
        return 2
    if device.type == "cpu":  # tiny models gain nothing from threads; on a busy CPU they wait on each other
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # the children too
        torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(SECTIONS)
    if unknown := [n for n in names if n not in SECTIONS]:
        print(f"unknown sections: {', '.join(unknown)} (known: {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    started = time.monotonic()
    budget = args.budget_s or (1800.0 if args.tiny else 450.0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        check = Check(device, "tiny" if args.tiny else "full", Path(tmp), started, started + budget)
        results = environment(check)
        check.say(" ".join(f"{k}={v}" for k, v in results.items()))
        for name in names:
            results |= run_section(check, name)
    results["total_s"] = f"{time.monotonic() - started:.0f}"
    line = " ".join(f"{k}={v}" for k, v in results.items())
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
