"""Queue overheads: dispatch latency, balance reads under load, and cold vs warm /generate.

Real services and a dispatcher built as ``bot.services.make_dispatcher`` does, on a tiny SD1.5
model in a temporary folder. Progress on stderr; one line of key=value pairs on stdout.

dispatch_overhead_s: what the queue adds before a training job's ``started`` event; median of
  --jobs jobs run one after another (4 images, 64 px, 1 repeat, 1 epoch, fp32, no previews).
  overhead = (t_recorded - t0) - (t_started_written - t_spawn), with t0 just before
  ``submit_training``, t_spawn when the worker's ``on_start`` ran (right after the spawn),
  t_started_written the ``time`` field of the trainer's ``started`` event and t_recorded when
  the dispatcher's handler for it returned (event row written, update published).
balance_read_p99_ms: p99 of per-call latencies of 100 members reading their balance at once
  (asyncio.gather of 100 ``stamina.balance``), --rounds rounds after a warm-up round that
  creates them, while the dispatcher idles (its polls share the connection).
generate_cold_s / generate_warm_s: submit -> ``finished`` update of a first /generate on the
  tiny model (the lane starts ``python -m trainer serve`` and loads the model), then of an
  identical one (its ``started`` event must say ``model_cached``, else the exit is non-zero).
Also: generate_cold_over_warm, trainer_startup_s (median t_started_written - t_spawn),
balance_read_p50_ms, jobs. On a busy CPU box torch's threads in the trainer processes contend
with other processes and a tiny render can take 10 s instead of 0.3 s; --threads 1 steadies
the CPU numbers (by default the trainers run as the bot runs them).

    python bench/queue.py [--jobs 3] [--rounds 20] [--device cpu] [--threads N] [--workdir DIR]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path and this file (queue.py) would shadow the
# standard library's queue module (aiosqlite imports it): take the folder off, put the root on.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse
import asyncio
import functools
import io
import os
import random
import statistics
import tempfile
import time
from typing import Any

from PIL import Image, ImageDraw

from bot.queue.bus import JobUpdate
from bot.queue.dispatcher import Dispatcher
from bot.queue.generation import GenerateRequest
from bot.queue.runner import EventHandler, Launch, OnStart, Outcome
from bot.queue.workers import GenerationLane, LocalTrainerWorker
from bot.services import Services, open_services
from bot.settings import Settings, load_settings
from db import jobs as repo

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OWNER, DATASET = 1, "bench"
TRAIN_OPTIONS = {"repeats": 1, "epochs": 1, "resolution": 64, "mixed_precision": "no", "optimizer": "AdamW",
                 "previews": False, "network_dim": 4, "network_alpha": 2}  # fmt: skip
GENERATE = GenerateRequest("tkchar, red", base_model="tiny-sd15", steps=4, size="64")
TIMEOUT_S = 300.0
log = functools.partial(print, file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark cannot give a valid result; the message says why."""


def picture(seed: int) -> bytes:
    """A distinct 96-px picture (seeded rectangles on a red, green or blue ground)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (96, 96), [(230, 20, 20), (20, 210, 40), (20, 30, 230)][seed % 3])
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.randrange(76), rng.randrange(76)
        draw.rectangle((x, y, x + rng.randrange(6, 20), y + rng.randrange(6, 20)), fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_settings(work: Path, device: str) -> Settings:
    """A registry with the tiny SD1.5 model as ``tiny-sd15`` (built once per work folder)."""
    from trainer.tiny import make_tiny

    model = work / "tiny-sd15"
    if not (model / "model_index.json").is_file():
        log("building the tiny sd15 model")
        make_tiny("sd15", model)
    registry = work / "models.toml"
    registry.write_text(f'[models.tiny-sd15]\nsource = "{model}"\nfamily = "sd15"\n')
    data = work / f"data-{os.getpid()}-{int(time.time())}"
    return load_settings(data_dir=data, model_registry=registry, devices=[device])


class TimedWorker(LocalTrainerWorker):
    """The local worker, noting per job folder t_spawn and t_recorded (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.spawned: dict[str, float] = {}
        self.recorded: dict[str, float] = {}

    async def run(self, launch: Launch, on_event: EventHandler, on_start: OnStart) -> Outcome:
        key = str(launch.folder)

        async def start(pid: int | None, where: str) -> None:
            self.spawned[key] = time.time()
            await on_start(pid, where)

        async def event(event: dict[str, Any]) -> None:
            await on_event(event)
            if event["event"] == "started":
                self.recorded.setdefault(key, time.time())

        return await super().run(launch, event, start)


def make_dispatcher(services: Services) -> tuple[Dispatcher, TimedWorker]:
    """As ``bot.services.make_dispatcher``, with the timed worker."""
    s = services.settings
    worker = TimedWorker(s.devices[0], s.hang_timeout_s)
    lane = GenerationLane(s.devices[0], s.hang_timeout_s, s.data_dir / "logs" / "generate.log")
    dispatcher = Dispatcher(
        services.conn, s, services.registry, services.bus, [worker, lane], services.queue.clock
    )
    services.queue.on_change = dispatcher.wake
    return dispatcher, worker


class Updates:
    """Bus subscriber: the first time each (job id, update kind) was delivered."""

    def __init__(self) -> None:
        self.at: dict[tuple[int, str], float] = {}
        self.seen: dict[tuple[int, str], asyncio.Event] = {}

    async def __call__(self, update: JobUpdate) -> None:
        key = (update.job.id, update.kind)
        self.at.setdefault(key, time.time())
        self.seen.setdefault(key, asyncio.Event()).set()

    async def finished(self, services: Services, job_id: int) -> float:
        """Wait for the job's ``finished`` update; its time. Raises unless the job is done."""
        try:
            done = self.seen.setdefault((job_id, "finished"), asyncio.Event())
            await asyncio.wait_for(done.wait(), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise BenchError(f"job #{job_id} did not finish in {TIMEOUT_S:g} s") from None
        job = await repo.get_job(services.conn, job_id)
        if job is None or job.state != "done":
            raise BenchError(f"job #{job_id} ended {job and job.state}: {job and job.error}")
        return self.at[(job_id, "finished")]


async def measure_dispatch(
    services: Services, worker: TimedWorker, updates: Updates, jobs: int
) -> tuple[list[float], list[float]]:
    """Per training job: (queue overhead, trainer start-up), in seconds."""
    overheads, startups = [], []
    for i in range(jobs):
        t0 = time.time()
        job = await services.queue.submit_training(OWNER, DATASET, dict(TRAIN_OPTIONS))
        ended = await updates.finished(services, job.id)
        written = (await repo.events(services.conn, job.id, "started"))[0]["time"]
        spawned, recorded = worker.spawned[job.folder], worker.recorded[job.folder]
        startups.append(written - spawned)
        overheads.append((recorded - t0) - startups[-1])
        log(
            f"train job {i + 1}/{jobs}: overhead {overheads[-1] * 1000:.0f} ms (submit->spawn "
            f"{(spawned - t0) * 1000:.0f} ms), trainer start-up {startups[-1]:.2f} s, "
            f"finished after {ended - t0:.1f} s"
        )
    return overheads, startups


async def measure_balance(services: Services, rounds: int, users: int = 100) -> list[float]:
    """Latencies (ms) of ``users`` concurrent balance reads, ``rounds`` times after a warm-up."""

    async def one(user_id: int) -> float:
        t = time.perf_counter()
        await services.stamina.balance(user_id)
        return (time.perf_counter() - t) * 1000

    ids = range(10_000, 10_000 + users)
    await asyncio.gather(*(one(u) for u in ids))  # creates the members
    latencies: list[float] = []
    for _ in range(rounds):
        latencies += await asyncio.gather(*(one(u) for u in ids))
    log(f"balance reads: {len(latencies)} calls, max {max(latencies):.1f} ms")
    return latencies


async def measure_generate(services: Services, updates: Updates) -> tuple[float, float]:
    """(cold, warm) submit -> finished seconds of two identical /generate requests."""
    walls, ids = [], []
    for label in ("cold", "warm"):
        t0 = time.time()
        job = await services.generation.submit(OWNER, GENERATE)
        walls.append(await updates.finished(services, job.id) - t0)
        ids.append(job.id)
        started = updates.at[(job.id, "started")] - t0
        log(f"generate {label}: {walls[-1]:.2f} s (started after {started:.2f} s)")
    cached = [e.get("model_cached") for i in ids for e in await repo.events(services.conn, i, "started")]
    if cached[1:] != [True]:
        raise BenchError(f"the second /generate did not reuse the loaded model: model_cached {cached}")
    if cached[0]:
        log("odd: the first /generate already found the model loaded")
    return walls[0], walls[1]


async def measure(settings: Settings, jobs: int, rounds: int) -> dict[str, float]:
    async with open_services(settings) as services:
        svc = services.datasets
        await svc.create(OWNER, DATASET, "tiny-sd15", "tkchar", crop_mode="center", crop_size="256")
        await svc.add_files(OWNER, DATASET, [(f"p{i}.png", picture(i)) for i in range(4)])
        updates = Updates()
        services.bus.subscribe(updates)
        dispatcher, worker = make_dispatcher(services)
        await dispatcher.start()
        try:
            latencies = await measure_balance(services, rounds)
            overheads, startups = await measure_dispatch(services, worker, updates, jobs)
            cold, warm = await measure_generate(services, updates)
        finally:
            await asyncio.shield(dispatcher.stop())
            services.queue.on_change = None
    return {
        "dispatch_overhead_s": statistics.median(overheads),
        "balance_read_p99_ms": statistics.quantiles(latencies, n=100, method="inclusive")[98],
        "generate_warm_s": warm,
        "generate_cold_s": cold,
        "generate_cold_over_warm": cold / warm,
        "trainer_startup_s": statistics.median(startups),
        "balance_read_p50_ms": statistics.median(latencies),
        "jobs": jobs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3, help="training jobs, run one after another")
    ap.add_argument("--rounds", type=int, default=20, help="rounds of 100 concurrent balance reads")
    ap.add_argument("--device", default="cpu", help='"cpu" or a CUDA device id like "0"')
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and data here")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the trainer processes")
    args = ap.parse_args()
    if args.jobs < 1 or args.rounds < 1:
        ap.error("--jobs and --rounds must be at least 1")
    if args.threads:  # the workers pass this process's environment on to the trainers
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(measure(make_settings(work.resolve(), args.device), args.jobs, args.rounds))
        except BenchError as exc:
            sys.exit(f"bench/queue.py: {exc}")
    fmt = {k: "" if isinstance(v, int) else ".4f" if k.endswith("_s") else ".2f" for k, v in result.items()}
    threads = f" threads={args.threads}" if args.threads else ""
    print(" ".join(f"{k}={v:{fmt[k]}}" for k, v in result.items()) + threads)


if __name__ == "__main__":
    main()
