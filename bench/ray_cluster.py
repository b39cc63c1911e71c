"""The queue on a two-node Ray cluster on 127.0.0.1, against the same queue on this host alone.

Real services and the dispatcher of ``bot.services.running_queue`` on the tiny SD1.5 model, the
trainers on the CPU (each node has one simulated GPU and its own work folder). In one run:

local_dispatch_overhead_s / dispatch_overhead_s: median time from ``submit_training`` to the
  ``started`` update of --jobs small jobs (4 images, 64 px, 1 epoch, no previews), first with the
  local CPU worker only, then with ``LORABOT_RAY_ADDRESS`` and no local device (the head's GPU is
  held by another workload, so they run on the second node: the dataset goes through the object
  store, files come back). The trainer's own start-up is in both.
resumed: jobs that lost their node mid-job (the second node is killed after the first epoch came
  back) and resumed on the head; lost: jobs that did not end ``done``.

    python bench/ray_cluster.py [--jobs 3] [--workdir DIR]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/queue.py would shadow the standard
# library's queue: the repository root leads instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from bot.cluster.loopback import hold_gpu, two_nodes
from bot.queue.bus import JobUpdate
from bot.services import Services, open_services, running_queue
from bot.settings import Settings, load_settings
from db import jobs as repo
from tests.queue_helpers import make_dataset

SMALL = {"repeats": 1, "epochs": 1, "resolution": 64, "mixed_precision": "no", "optimizer": "AdamW",
         "previews": False, "network_dim": 4, "network_alpha": 2}  # fmt: skip
LONG = {**SMALL, "epochs": 5, "repeats": 3}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _ended(s: Services, job_id: int, timeout: float = 600) -> repo.JobRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await repo.get_job(s.conn, job_id)
        if job.finished:
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job #{job_id} did not end in {timeout:.0f} s")


async def _overheads(
    s: Services, jobs: int, started: dict[int, float]
) -> tuple[list[float], list[repo.JobRow]]:
    """Submit -> ``started`` update of ``jobs`` jobs, one after another."""
    times, ended = [], []
    for _ in range(jobs):
        t0 = time.time()
        job = await s.queue.submit_training(1, "chara", dict(SMALL))
        done = await _ended(s, job.id)
        times.append(started[job.id] - t0)
        ended.append(done)
        say(f"  job #{job.id} on {done.device}: started after {times[-1]:.2f} s, {done.state}")
    return times, ended


async def _with(settings: Settings, body) -> Any:
    async with open_services(settings) as s:
        started: dict[int, float] = {}

        async def note(update: JobUpdate) -> None:
            if update.kind == "started":
                started.setdefault(update.job.id, time.time())

        s.bus.subscribe(note)
        await make_dataset(s, images=4)
        async with running_queue(s):
            return await body(s, started)


async def _lose_a_node(s: Services, cluster, holder) -> repo.JobRow:
    import ray

    job = await s.queue.submit_training(1, "chara", dict(LONG))
    while not await repo.epochs(s.conn, job.id):
        await asyncio.sleep(0.2)
    ray.kill(holder)
    say("  the first epoch came back: killing the second node")
    await asyncio.to_thread(cluster.kill_second)
    return await _ended(s, job.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ray-bench-"))

    say("local: this host's CPU worker")
    local = load_settings(data_dir=work / "local", devices=["cpu"])
    local_times, local_jobs = asyncio.run(_with(local, lambda s, started: _overheads(s, args.jobs, started)))

    say("ray: a head and a second node on 127.0.0.1, the head's GPU held by another workload")
    with two_nodes(work / "nodes") as cluster:
        remote = load_settings(data_dir=work / "ray", devices=[], ray_address=cluster.address)

        async def on_cluster(s: Services, started: dict[int, float]):
            holder = hold_gpu(cluster.head_id)
            times, jobs = await _overheads(s, args.jobs, started)
            resumed = await _lose_a_node(s, cluster, holder)
            return times, jobs, resumed

        ray_times, ray_jobs, resumed = asyncio.run(_with(remote, on_cluster))

    every = [*local_jobs, *ray_jobs, resumed]
    remote_jobs = sum(1 for j in [*ray_jobs, resumed] if j.device and j.device.startswith("ray:"))
    was_resumed = int(resumed.attempts == 2 and resumed.device.startswith(f"ray:{cluster.head_id[:8]}"))
    lost = sum(1 for j in every if j.state != "done")
    say(f"resumed job #{resumed.id}: {resumed.state} on {resumed.device} after {resumed.attempts} starts")
    print(
        f"jobs={len(every)} remote_jobs={remote_jobs} resumed={was_resumed} lost={lost} "
        f"dispatch_overhead_s={statistics.median(ray_times):.2f} "
        f"local_dispatch_overhead_s={statistics.median(local_times):.2f} "
        f"ratio={statistics.median(ray_times) / statistics.median(local_times):.2f}"
    )


if __name__ == "__main__":
    main()
