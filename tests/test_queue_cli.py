"""The operator CLI for stamina, the queue and jobs: ``python -m bot stamina|queue|job|estimate|worker``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from bot.cli import main
from bot.loopback.waiting import wait_for_sync
from bot.queue.costs import training_cost
from bot.services import open_services
from db import jobs as jobs_repo

from .queue_helpers import FAST, job_progress, make_dataset, queue_settings, wait_until


@pytest.fixture
def settings(tmp_path, tiny_sd15, monkeypatch):
    """Settings on tmp_path with the tiny SD1.5 registry; the CLI reads the same from the environment."""
    s = queue_settings(tmp_path, {"tiny-sd15": tiny_sd15})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORABOT_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("LORABOT_MODEL_REGISTRY", str(s.model_registry))
    monkeypatch.delenv("LORABOT_DATABASE", raising=False)
    return s


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argument errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def with_services(settings, action):
    async def go():
        async with open_services(settings) as services:
            return await action(services)

    return asyncio.run(go())


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_stamina_show_grant_revoke_and_tier(settings, capsys):
    code, out, _ = cli(capsys, "stamina", "show", "--user", "7")
    assert code == 0 and out.splitlines()[0] == "user 7: 150 stamina"
    assert "next reset" in out and "allowance" in out
    assert cli(capsys, "stamina", "grant", "--user", "7", "50", "--note", "bonus", "--by", "99")[1].endswith(
        "balance 200\n"
    )
    assert cli(capsys, "stamina", "revoke", "--user", "7", "20")[1].endswith("balance 180\n")
    code, out, _ = cli(capsys, "stamina", "show", "--user", "7")
    assert out.splitlines()[0] == "user 7: 180 stamina"
    ledger = out.splitlines()[3:]
    assert ledger[0].split()[:2] == ["time", "delta"]
    assert ledger[1].split()[2:5] == ["-20", "180", "revoke"]
    assert ledger[2].split()[2:5] == ["+50", "200", "grant"] and ledger[2].endswith("bonus (by 99)")

    code, _, err = cli(capsys, "stamina", "revoke", "--user", "7", "1000")
    assert code == 1 and "only 180 stamina" in one_error_line(err)
    shown = json.loads(cli(capsys, "stamina", "show", "--user", "7", "--json")[1])
    assert shown["balance"] == 180 and len(shown["ledger"]) == 3

    assert cli(capsys, "stamina", "tier", "--user", "7", "default")[0] == 0
    code, _, err = cli(capsys, "stamina", "tier", "--user", "7", "gold")
    assert code == 1 and "unknown tier 'gold'" in one_error_line(err)
    assert cli(capsys, "stamina", "tier", "--user", "7", "--clear")[0] == 0
    code, _, err = cli(capsys, "stamina", "tier", "--user", "7")
    assert code == 2 and one_error_line(err)
    code, _, err = cli(capsys, "stamina", "grant", "--user", "7", "0")
    assert code == 1 and one_error_line(err) == "error: grant a positive amount"


def test_estimate(settings, capsys):
    with_services(settings, make_dataset)
    code, out, _ = cli(
        capsys, "estimate", "--dataset", "chara", "--user", "1", "--repeats", "10", "--epochs", "10"
    )
    assert code == 0, out
    rows = {line[:16].strip(): line[16:].strip() for line in out.splitlines()}
    assert rows["images"] == "4" and rows["steps per epoch"] == "40" and rows["total steps"] == "400"
    assert rows["resolution"] == "256 px" and rows["family"] == "sd15"
    costs = {"sd15": settings.step_cost("sd15")}
    expected = training_cost(400, 1, 256, "sd15", costs)
    assert rows["cost"] == f"{expected} stamina" and rows["balance"] == "150 stamina"
    assert rows["affordable"] == "yes"

    code, out, _ = cli(capsys, "estimate", "--dataset", "chara", "--user", "1", "--epochs", "3", "--batch-size",
                       "2", "--set", "network_dim=8", "--set", "resolution=128", "--json")  # fmt: skip
    est = json.loads(out)
    assert (est["total_steps"], est["batch_size"], est["resolution"]) == (
        60,
        2,
        128,
    )  # 4 images x 10 repeats / 2, x 3
    assert est["cost"] == training_cost(60, 2, 128, "sd15", costs) and est["affordable"] is True

    code, _, err = cli(capsys, "estimate", "--dataset", "nope", "--user", "1")
    assert code == 1 and "no dataset named 'nope'" in one_error_line(err)
    code, _, err = cli(capsys, "estimate", "--dataset", "chara", "--user", "1", "--set", "output_dir=x")
    assert code == 1 and "the bot sets output_dir itself" in one_error_line(err)
    code, _, err = cli(capsys, "estimate", "--dataset", "chara", "--user", "1", "--set", "epochs=0")
    assert code == 1 and one_error_line(err)
    code, _, err = cli(capsys, "estimate", "--dataset", "chara", "--user", "1", "--set", "epochs")
    assert code == 2 and "KEY=VALUE" in one_error_line(err)


def test_queue_pause_job_show_and_cancel(settings, capsys):
    async def submit(services):
        await make_dataset(services)
        return await services.queue.submit_training(1, "chara", dict(FAST))

    job = with_services(settings, submit)
    code, out, _ = cli(capsys, "queue")
    assert code == 0 and "paused" not in out
    header, row = out.splitlines()
    assert header.split()[:5] == ["id", "owner", "kind", "state", "pos"]
    assert row.split()[:5] == [str(job.id), "1", "train", "queued", "1"] and "0/8 steps" in row
    listed = json.loads(cli(capsys, "queue", "--json")[1])
    assert listed["paused"] is False and [(j["id"], j["position"]) for j in listed["jobs"]] == [(job.id, 1)]
    assert "no jobs" in cli(capsys, "queue", "--user", "2")[1]

    assert cli(capsys, "queue", "pause", "--by", "5")[0] == 0
    out = cli(capsys, "queue")[1]
    assert out.startswith("the queue is paused") and out.splitlines()[-1].split()[-3] == "paused"

    code, out, _ = cli(capsys, "job", "show", str(job.id))
    assert code == 0 and out.startswith(f"job #{job.id} train 'chara' of user 1: queued")
    assert f"cost {job.cost}, refunded 0" in out and "position 1" in out

    code, out, _ = cli(capsys, "job", "cancel", str(job.id))
    assert code == 0 and out.strip() == f"job #{job.id} cancelled: refunded {job.cost} stamina to user 1"
    assert cli(capsys, "stamina", "show", "--user", "1")[1].startswith("user 1: 150 stamina")
    code, _, err = cli(capsys, "job", "cancel", str(job.id))
    assert code == 1 and "already ended (cancelled)" in one_error_line(err)
    assert "no jobs" in cli(capsys, "queue")[1]
    assert "cancelled" in cli(capsys, "queue", "--all")[1]
    assert f"refunded {job.cost}" in cli(capsys, "job", "show", str(job.id))[1]
    assert cli(capsys, "queue", "resume")[0] == 0
    assert not json.loads(cli(capsys, "queue", "--json")[1])["paused"]
    code, _, err = cli(capsys, "job", "show", "999")
    assert code == 1 and "no job #999" in one_error_line(err)


def test_worker_runs_a_job_and_stops_on_sigterm(settings, tmp_path, capsys):
    with_services(settings, make_dataset)
    env = {**os.environ, "LORABOT_DATA_DIR": str(settings.data_dir),
           "LORABOT_MODEL_REGISTRY": str(settings.model_registry)}  # fmt: skip
    env.pop("LORABOT_DATABASE", None)
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], stdout=stdout, stderr=stderr, cwd=tmp_path, env=env
        )
    try:
        def serving() -> bool:
            assert worker.poll() is None, err.read_text()  # it died: say why at once
            return "worker: running the queue" in out.read_text()

        wait_for_sync(serving, 120, "the worker to run the queue", every=0.1)
        second = subprocess.run([sys.executable, "-m", "bot", "worker"], capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=60)  # fmt: skip
        assert second.returncode == 1 and "already runs the queue" in one_error_line(second.stderr)

        async def run_job(services):
            job = await services.queue.submit_training(1, "chara", {**FAST, "previews": False})

            async def ended() -> bool:
                return (await jobs_repo.get_job(services.conn, job.id)).finished

            with contextlib.suppress(TimeoutError):  # the assert below says what state it is in
                await wait_until(ended, 180, 0.2, progress=job_progress(services.conn, job.id))
            return await jobs_repo.get_job(services.conn, job.id)

        job = with_services(settings, run_job)
        assert job.state == "done", (job.state, job.error, err.read_text()[-3000:])
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, err.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    lines = out.read_text().splitlines()
    assert any(f"job #{job.id} train: step " in line for line in lines)
    assert any(line.endswith(f"job #{job.id} train: finished: done, refunded 0") for line in lines), lines
    assert lines[-1] == "worker: stopped"
    code, shown, _ = cli(capsys, "job", "show", str(job.id))
    assert code == 0 and shown.startswith(f"job #{job.id} train 'chara' of user 1: done")
    saved = shown.split("saved epochs:\n")[1].splitlines()[:2]
    assert [line.split(":")[0].strip() for line in saved] == ["epoch 1 (step 4)", "epoch 2 (step 8)"]
    assert saved[1].split(": ", 1)[1].split()[0].endswith("chara-000002.safetensors")
    assert "recent events:" in shown and "trainer done" in shown


def test_help_lists_every_group(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for group in ("dataset", "stamina", "queue", "job", "estimate", "worker"):
        assert f"    {group} " in out
    code, _, err = cli(capsys, "queue", "stop")
    assert code == 2 and "invalid choice" in one_error_line(err)
