"""``python -m trainer``: make-tiny, train, generate, serve.

The process talks to its host through JSON-line events on stdout; logs and the
progress bar go to stderr. Exit codes are in :mod:`trainer.contract`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from pathlib import Path

from .contract import EXIT_FAILED, EXIT_INVALID_JOB, EXIT_OK, GenerateJob, JobError, TrainJob, load_job
from .contract.families import FAMILIES
from .errors import TrainerError

log = logging.getLogger("trainer")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


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


def _run_job(command: str, job_path: str, verbose: bool = False) -> int:
    from .events import EventWriter, StopFlag

    stop = StopFlag().install()
    kind = TrainJob if command == "train" else GenerateJob
    events = EventWriter()
    try:
        job = load_job(job_path, kind)
        if problems := missing_paths(job):  # before torch loads: one line each, no traceback
            raise JobError(problems)
    except JobError as exc:
        return _invalid(events, exc)
    if isinstance(job, TrainJob):
        events.every_n_steps = job.event_every_n_steps
    try:
        if command == "train":
            from .train import run_training

            return run_training(job, events, stop)
        from .generate import run_generate

        return run_generate(job, events, stop)
    except JobError as exc:  # a rule that needs the loaded model (its detected family)
        return _invalid(events, exc)
    except Exception as exc:  # the host gets one readable line; a bug's traceback goes to stderr
        if verbose or not isinstance(exc, TrainerError):
            traceback.print_exc(file=sys.stderr)
        log.error("%s", user_message(exc))  # a TrainerError says what to fix: that line is enough
        events.emit("failed", message=user_message(exc))
        return EXIT_FAILED


def _invalid(events, exc: JobError) -> int:
    for line in exc.problems:
        log.error("%s", line)
    events.emit("failed", message="invalid job: " + "; ".join(exc.problems))
    return EXIT_INVALID_JOB


def missing_paths(job: TrainJob | GenerateJob) -> list[str]:
    """A job file's paths that are not there, one line each (relative paths are from this folder)."""
    problems = []
    if isinstance(job, TrainJob) and not Path(job.dataset_dir).is_dir():
        problems.append(_where(f"dataset_dir: the folder {job.dataset_dir} does not exist", job.dataset_dir))
    if problem := _base_model_problem(job.base_model, job.model_family):
        problems.append(_where(problem, job.base_model))
    if job.base_model_config is not None and not Path(job.base_model_config).is_dir():
        problems.append(_where(f"base_model_config: the folder {job.base_model_config} does not exist",
                               job.base_model_config))  # fmt: skip
    if isinstance(job, TrainJob):  # a resumed job starts from its saved state, which wins over init_weights
        files = [] if job.resume or not job.init_weights else [("init_weights", job.init_weights)]
    else:
        files = [("loras", ref.path) for ref in [*job.loras, *(job.compare_loras or [])]]
    problems += [_where(f"{key}: the file {path} does not exist", path)
                 for key, path in files if not Path(path).is_file()]  # fmt: skip
    return problems


def _where(problem: str, path: str) -> str:
    return problem if Path(path).is_absolute() else f"{problem} (relative paths are from {Path.cwd()})"


def _base_model_problem(source: str, family: str | None) -> str | None:
    """Why ``base_model`` cannot be found, or None: a local path must exist; anything else is a hub id,
    which needs its ``model_family``."""
    if source.startswith("~"):
        return f"base_model: {source}: write the full path (a job file does not expand ~)"
    if Path(source).exists():
        return None
    looks_local = (
        source.startswith(("/", ".", "~")) or "\\" in source or source.endswith(_CHECKPOINT_SUFFIXES)
    )
    if looks_local:
        return f"base_model: {source} does not exist"
    if not _HUB_ID.match(source):
        return f"base_model: {source} does not exist (nor is it a hub id like owner/name)"
    if family is None:
        return (f"base_model: {source} is not a file or folder here, so it is taken as a hub id: fix the path, "
                "or give model_family for a hub model")  # fmt: skip
    return None


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
    return _run_job(args.command, args.job, args.verbose)
