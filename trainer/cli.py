"""``python -m trainer``: make-tiny, train, generate, serve.

The process talks to its host through JSON-line events on stdout; logs and the
progress bar go to stderr. Exit codes are in :mod:`trainer.contract`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .contract import EXIT_FAILED, EXIT_INVALID_JOB, EXIT_OK, GenerateJob, JobError, TrainJob, load_job
from .contract.families import FAMILIES
from .errors import TrainerError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer", description="LoRA trainer for Stable Diffusion models"
    )
    sub = p.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="build a tiny random-weight model (tests, offline demo)")
    tiny.add_argument("--family", choices=list(FAMILIES), required=True, help="the model family to build")
    tiny.add_argument("--out", required=True, help="folder to write the diffusers model to")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    tiny.add_argument(
        "--full", action="store_true", help="real SD1.5/SDXL sizes, random weights (GPU benchmarks)"
    )
    tagger = sub.add_parser(
        "make-tiny-tagger", help="build a tiny WD14-style ONNX tagger (tests, offline demo)"
    )
    tagger.add_argument("--out", required=True, help="folder for model.onnx and selected_tags.csv")
    demo = sub.add_parser(
        "demo", help="train and render offline on the tiny model: the whole path in one command"
    )
    demo.add_argument("--out", default="demo-out", help="folder for the model, dataset and results")
    for name, what in (
        ("train", "train a LoRA from a job file"),
        ("generate", "render images from a job file"),
    ):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("--job", required=True, help="job file (.toml or .json)")
        cmd.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    serve = sub.add_parser(
        "serve", help="long-lived generation: requests as JSON lines on stdin (see trainer/serve.py)"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("diffusers", "transformers", "peft", "httpx", "urllib3", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _run_job(command: str, job_path: str) -> int:
    from .events import EventWriter, StopFlag

    stop = StopFlag().install()
    kind = TrainJob if command == "train" else GenerateJob
    events = EventWriter()
    try:
        job = load_job(job_path, kind)
    except JobError as exc:
        for line in exc.problems:
            logging.getLogger("trainer").error("%s", line)
        events.emit("failed", message="invalid job: " + "; ".join(exc.problems))
        return EXIT_INVALID_JOB
    if isinstance(job, TrainJob):
        events.every_n_steps = job.event_every_n_steps
    try:
        if command == "train":
            from .train import run_training

            return run_training(job, events, stop)
        from .generate import run_generate

        return run_generate(job, events, stop)
    except JobError as exc:  # a rule that needs the loaded model (its detected family)
        events.emit("failed", message="invalid job: " + "; ".join(exc.problems))
        return EXIT_INVALID_JOB
    except Exception as exc:  # the host gets one readable line; the traceback goes to stderr
        traceback.print_exc(file=sys.stderr)
        events.emit("failed", message=user_message(exc))
        return EXIT_FAILED


def user_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "out of memory" in text.lower():
        return (
            "out of GPU memory: lower batch_size or resolution, or use network_dim <= 32 (" + text[:200] + ")"
        )
    if isinstance(exc, TrainerError):  # its message is written for the member
        return text
    return f"{type(exc).__name__}: {text}"[:500]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "make-tiny":
        _setup_logging(False)
        from .tiny import make_tiny

        path = make_tiny(args.family, args.out, seed=args.seed, size="full" if args.full else "tiny")
        print(f"tiny {args.family} model written to {path}", file=sys.stderr)
        return EXIT_OK
    if args.command == "make-tiny-tagger":
        from .tiny_tagger import make_tiny_tagger

        print(f"tiny tagger written to {make_tiny_tagger(args.out)}", file=sys.stderr)
        return EXIT_OK
    if args.command == "demo":
        _setup_logging(False)
        from pathlib import Path

        from .demo import run_demo

        return run_demo(Path(args.out))
    _setup_logging(args.verbose)
    if args.command == "serve":
        from .serve import serve

        return serve()
    return _run_job(args.command, args.job)
