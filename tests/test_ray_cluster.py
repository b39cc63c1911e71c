"""Ray: the queue on a two-node cluster on 127.0.0.1 (one simulated GPU per node, trainers on the CPU).

Each node has its own work folder and the bot its data folder: every file a job saves reaches the
bot through Ray. The head's GPU starts held by another workload, so the jobs go to the second
node; the second node is then killed in the middle of a job, which resumes on the head.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.queue.generation import GenerateRequest
from db import jobs as repo
from db import stamina as stamina_repo
from tests.queue_helpers import FAST, make_dataset, queue_settings, wait_until
from tests.test_dispatcher import finished, run

ray = pytest.importorskip("ray")

from bot.cluster.loopback import hold_gpu, two_nodes  # noqa: E402
from bot.cluster.report import check_cluster  # noqa: E402

pytestmark = pytest.mark.slow
#: Long enough (160 steps) that a node is killed, or the bot stopped, before the job ends.
LONG = {**FAST, "epochs": 5, "repeats": 8, "previews": False}


async def _started_node(conn, job_id: int) -> str | None:
    """The node of the job's last ``started`` event (its last attempt's)."""
    started = await repo.events(conn, job_id, "started")
    return started[-1].get("node") if started else None


def _run(tmp_path: Path, body) -> list:
    """Run ``body`` on a two-node cluster; then what ``python -m bot check`` says of the cluster."""
    with two_nodes(tmp_path / "nodes") as cluster:
        settings = queue_settings(tmp_path, devices=[], ray_address=cluster.address, hang_timeout_s=120)
        run(settings, lambda s, dispatcher, updates: body(s, dispatcher, cluster, updates))
        return check_cluster(settings)


def test_jobs_run_on_the_second_node_and_a_lost_node_resumes_on_the_head(tmp_path):
    async def body(s, dispatcher, cluster, updates):
        assert {r.device.split("/")[0] for r in dispatcher.runners} == {
            f"ray:{cluster.head_id[:8]}",
            f"ray:{cluster.second_id[:8]}",
        }
        holder = hold_gpu(cluster.head_id)
        await make_dataset(s, images=4)

        # 1. uninterrupted, on the second node: events while it runs, every file in the data folder
        job = await s.queue.submit_training(1, "chara", FAST)
        ended = await finished(s.conn, job.id)
        assert ended.state == "done", ended.error
        assert await _started_node(s.conn, job.id) == cluster.second_id
        kinds = [u.kind for u in updates if u.job.id == job.id]
        assert "step" in kinds and kinds.index("step") < kinds.index("finished")
        epochs = await repo.epochs(s.conn, job.id)
        assert [e.epoch for e in epochs] == [1, 2]
        data = Path(s.settings.data_dir).resolve()
        for e in epochs:
            for path in (e.path, e.preview_path):
                assert Path(path).is_file() and Path(path).resolve().is_relative_to(data), path
        assert ended.device.startswith(f"ray:{cluster.second_id[:8]}/0")

        await s.library.save(1, job.id, 2, "chara")
        request = GenerateRequest("tkchar", lora="chara", steps=2, size="64")
        image = await finished(s.conn, (await s.generation.submit(1, request)).id)
        assert image.state == "done", image.error
        assert await _started_node(s.conn, image.id) == cluster.second_id
        files = await repo.files(s.conn, image.id)
        assert files and all(
            Path(p).is_file() and Path(p).resolve().is_relative_to(data) for _, p, _ in files
        )

        # 2. the second node dies after the first epoch came back: the job resumes on the head
        reference = await s.queue.submit_training(1, "chara", LONG)
        whole = await finished(s.conn, reference.id)
        assert whole.state == "done", whole.error
        job = await s.queue.submit_training(1, "chara", LONG)

        async def first_epoch_back() -> bool:
            return bool(await repo.epochs(s.conn, job.id))

        await wait_until(first_epoch_back, 180, what="the first epoch to come back")
        ray.kill(holder)
        await asyncio.to_thread(cluster.kill_second)
        ended = await finished(s.conn, job.id, stall_s=300)
        assert ended.state == "done", ended.error
        assert ended.attempts == 2 and await _started_node(s.conn, job.id) == cluster.head_id
        assert ended.total_steps == whole.total_steps and ended.step == whole.step
        names = [Path(e.path).name for e in await repo.epochs(s.conn, job.id)]
        assert names == [Path(e.path).name for e in await repo.epochs(s.conn, reference.id)]
        assert all(Path(e.path).is_file() for e in await repo.epochs(s.conn, job.id))
        assert [r.delta for r in await stamina_repo.job_ledger(s.conn, job.id)] == [-job.cost]

        # 3. a cancel reaches the remote trainer: it stops between steps, its saved epochs stay
        job = await s.queue.submit_training(1, "chara", LONG)
        await wait_until(first_epoch_back, 180, what="the first epoch to come back")
        await s.queue.cancel(1, job.id)
        ended = await finished(s.conn, job.id)
        assert ended.state == "cancelled" and 0 < ended.step < ended.total_steps, (ended.state, ended.step)
        saved = await repo.epochs(s.conn, job.id)
        assert saved and all(Path(e.path).is_file() for e in saved) and len(saved) < LONG["epochs"]

    lines = _run(tmp_path, body)
    assert len(lines) == 1, lines  # the second node is gone: the head is left
    ok, text = lines[0]
    assert ok is True and "(head): 1 GPU(s) of 24 GB; models: tiny-flux, tiny-sd15, tiny-sdxl" in text, text


def test_a_bot_restart_while_a_remote_job_runs_resumes_it_once(tmp_path):
    """The bot stops mid-job: its actor goes with it (nothing trains on unattended); the restarted
    bot resumes the job from the epoch that came back, and it ends with every epoch."""
    from bot.cluster.runners import NAMESPACE
    from bot.services import open_services, running_queue

    with two_nodes(tmp_path / "nodes") as cluster:
        settings = queue_settings(tmp_path, devices=[], ray_address=cluster.address, hang_timeout_s=120)

        async def go():
            async with open_services(settings) as s:
                await make_dataset(s, images=4)
                async with running_queue(s):
                    job = await s.queue.submit_training(1, "chara", LONG)

                    async def first_epoch_back() -> bool:
                        return bool(await repo.epochs(s.conn, job.id))

                    await wait_until(first_epoch_back, 180, what="the first epoch to come back")
                with pytest.raises(ValueError):  # the actor went with the bot that made it
                    ray.get_actor(f"lorabot-job-{job.id}", namespace=NAMESPACE)
                stopped = await repo.get_job(s.conn, job.id)
                assert stopped.state == "running" and stopped.attempts == 0  # a planned stop: not a crash
                async with running_queue(s):
                    ended = await finished(s.conn, job.id, stall_s=300)
                assert ended.state == "done", ended.error
                started = await repo.events(s.conn, job.id, "started")
                assert started[-1]["resumed_from_step"] > 0 and ended.attempts == 1
                epochs = await repo.epochs(s.conn, job.id)
                assert [e.epoch for e in epochs] == list(range(1, LONG["epochs"] + 1))
                assert all(Path(e.path).is_file() for e in epochs)

        asyncio.run(go())
