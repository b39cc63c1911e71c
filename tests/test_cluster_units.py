"""The cluster's pure parts, without a cluster: files to and from nodes, placement, the outbox,
an unreachable address, where a job runs, and claiming only what a runner admits."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.cluster.node import Outbox
from bot.cluster.placement import NodeFacts, declines
from bot.cluster.transfer import RefusedFile, pack, safe_target, unpack, write_returned
from bot.ui.embeds import host_of
from db import jobs as repo
from tests.queue_helpers import make_dataset, queue_settings


def test_a_node_returns_files_only_into_the_jobs_output_folder(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    assert write_returned(out, "lora-000001.safetensors", b"x").read_bytes() == b"x"
    assert write_returned(out, "previews/e1.png", b"p").parent.name == "previews"
    for bad in ("../escape.png", "/etc/x.png", "a/../../b.png", "run.sh", "a\\b.png", "", "./x.png"):
        with pytest.raises(RefusedFile):
            safe_target(out, bad, 1)
    with pytest.raises(RefusedFile, match="bytes"):
        safe_target(out, "big.safetensors", 2**40)
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RefusedFile, match="leaves"):
        safe_target(out, "link/x.png", 1)


def test_a_dataset_travels_as_one_tar(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "a.png").write_bytes(b"img")
    (tmp_path / "dataset" / "a.txt").write_text("tkchar, red")
    data = pack([(tmp_path / "dataset", "dataset"), (tmp_path / "missing.pt", "output/missing.pt")])
    unpack(data, tmp_path / "node")
    assert sorted(p.name for p in (tmp_path / "node" / "dataset").iterdir()) == ["a.png", "a.txt"]
    assert not (tmp_path / "node" / "output").exists()


def _node(models=("tiny-sd15", "flux-dev"), memory=(24.0,)) -> NodeFacts:
    return NodeFacts("n" * 56, "gpu-box", "10.0.0.7", len(memory), tuple(memory), frozenset(models))


def test_a_job_goes_only_where_its_model_is_and_its_family_fits():
    assert declines(_node(), "tiny-sd15", "sd15") is None
    assert declines(_node(), "sdxl-base", "sdxl") == "the base model sdxl-base is not on gpu-box (10.0.0.7)"
    assert declines(_node(memory=(12.0, 24.0)), "flux-dev", "flux") == (
        "Flux.1 needs a GPU of 16 GB; gpu-box (10.0.0.7) has 12 GB"
    )
    assert declines(_node(memory=(16.0,)), "flux-dev", "flux") is None
    assert "LORABOT_NODE_GPU_MEMORY_GB" in declines(_node(memory=()), "tiny-sd15", "sd15")


def test_a_bad_gpu_memory_setting_on_a_node_is_said_and_takes_no_job(monkeypatch):
    from bot.cluster.node import GPU_MEMORY_ENV, gpu_memory_gb

    for bad in ("abc", "24,", "0", "-8"):
        monkeypatch.setenv(GPU_MEMORY_ENV, bad)
        with pytest.raises(ValueError, match=f"{GPU_MEMORY_ENV}=.* is not GB per card, like 24 or 24,80"):
            gpu_memory_gb()
    monkeypatch.setenv(GPU_MEMORY_ENV, "24,80")
    assert gpu_memory_gb() == [24.0, 80.0]
    report = {"node_id": "n" * 56, "host": "gpu-box", "ip": "10.0.0.7", "models": ["tiny-sd15"],
              "problem": f"{GPU_MEMORY_ENV}='abc' is not GB per card, like 24 or 24,80"}  # fmt: skip
    node = NodeFacts.from_report(report, 1)
    assert declines(node, "tiny-sd15", "sd15") == f"gpu-box (10.0.0.7): {report['problem']}"


def test_the_outbox_sends_each_file_with_its_event_and_the_state_once_changed(tmp_path):
    async def go():
        out = tmp_path / "output"
        out.mkdir()
        box = Outbox(out)
        (out / "lora-000001.safetensors").write_bytes(b"e1")
        (out / "lora-state.pt").write_bytes(b"s1")
        box.add({"event": "epoch_saved", "epoch": 1, "path": str(out / "lora-000001.safetensors")})
        box.add({"event": "step", "step": 5})
        taken = await box.take(0, 0.01)
        assert [seq for seq, _, _ in taken["events"]] == [1, 2] and taken["outcome"] is None
        assert dict(taken["events"][0][2]) == {"lora-000001.safetensors": b"e1", "lora-state.pt": b"s1"}
        (out / "lora.safetensors").write_bytes(b"final")
        box.add(
            {"event": "done", "files": [str(out / "lora-000001.safetensors"), str(out / "lora.safetensors")]}
        )
        box.end(__import__("bot.queue.runner", fromlist=["Outcome"]).Outcome(0, {"event": "done"}))
        taken = await box.take(2, 0.01)  # what the bot has is dropped; the final copy comes, once
        assert [seq for seq, _, _ in taken["events"]] == [3] and taken["events"][0][2] == [
            ("lora.safetensors", b"final")
        ]
        assert taken["outcome"] is None  # not until the bot has taken the last event
        assert (await box.take(3, 0.01))["outcome"]["exit_code"] == 0
        started = time.monotonic()
        await Outbox(out).take(0, 0.2)
        assert time.monotonic() - started >= 0.15  # a poll waits for news

    asyncio.run(go())


def test_members_see_where_a_job_runs():
    assert host_of("ray:1a2b3c4d/1 gpu-box (10.0.0.7)") == "gpu-box (10.0.0.7) GPU 1"
    assert host_of("ray:1a2b3c4d/generate gpu-box (10.0.0.7)") == "gpu-box (10.0.0.7)"
    assert host_of("0") == "GPU 0" and host_of("cpu") == "cpu"


def test_a_runner_claims_only_the_jobs_it_admits(tmp_path):
    from bot.services import open_services

    async def go():
        async with open_services(queue_settings(tmp_path)) as s:
            await make_dataset(s, images=2)
            first = await s.queue.submit_training(1, "chara", {"epochs": 1})
            second = await s.queue.submit_training(1, "chara", {"epochs": 1})
            await repo.update_progress(s.conn, first.id, base_model="elsewhere")
            nothing = await repo.claim_next(s.conn, "train", "ray:x/0", admits=lambda m, f: False)
            taken = await repo.claim_next(s.conn, "train", "ray:x/0", admits=lambda m, f: m == "tiny-sd15")
            assert nothing is None and taken.id == second.id and taken.device == "ray:x/0"
            assert (await repo.get_job(s.conn, first.id)).state == "queued"

    asyncio.run(go())


def test_an_unreachable_cluster_is_one_line_and_the_local_devices_keep_working(tmp_path, caplog):
    pytest.importorskip("ray")
    from bot.services import open_services, running_queue

    async def go():
        settings = queue_settings(tmp_path, ray_address="127.0.0.1:1")
        async with open_services(settings) as s, running_queue(s) as dispatcher:
            return [r.device for r in dispatcher.runners]

    with caplog.at_level(logging.ERROR, logger="bot.services"):
        assert asyncio.run(go()) == ["cpu", "cpu"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "bot.services"]
    assert line.startswith(
        "the Ray cluster at '127.0.0.1:1' cannot be reached: nothing answers at 127.0.0.1:1"
    )
    assert "\n" not in line and line.endswith("the queue runs on this host's devices only")


class _Declining:
    """A cluster runner that can take no job: its host lacks every model."""

    kind, local, device = "train", False, "ray:nodeless/0"

    def declines(self, base_model: str, family: str) -> str | None:
        return f"the base model {base_model} is not on gpu-box"


def test_a_job_no_runner_can_take_fails_after_the_grace_with_the_reasons_refunded(tmp_path):
    from bot.queue.dispatcher import UNPLACEABLE_GRACE_S, Dispatcher
    from bot.services import open_services

    async def go():
        async with open_services(queue_settings(tmp_path)) as s:
            await make_dataset(s, images=2)
            job = await s.queue.submit_training(1, "chara", {"epochs": 1})
            now = [1000.0]
            dispatcher = Dispatcher(
                s.conn, s.settings, s.queue.registry, s.bus, [_Declining()], lambda: now[0]
            )
            await dispatcher._fail_unplaceable()
            now[0] += UNPLACEABLE_GRACE_S - 1
            await dispatcher._fail_unplaceable()
            assert (await repo.get_job(s.conn, job.id)).state == "queued"  # a node may come back meanwhile
            now[0] += 2
            await dispatcher._fail_unplaceable()
            ended = await repo.get_job(s.conn, job.id)
            assert ended.state == "failed" and ended.refunded == job.cost
            assert ended.error == "no host can run it: the base model tiny-sd15 is not on gpu-box"

    asyncio.run(go())
