"""Nothing from the trainer process is trusted: events are typed and bounded, and the files they
name must lie in the job's own output folder (at recording and again at sending)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from bot.queue.record import UntrustedEvent, record_event
from bot.queue.service import QueueError
from bot.queue.trust import trusted_job_file
from bot.services import open_services
from db import jobs as repo
from db.database import transaction
from tests.queue_helpers import queue_settings
from trainer.contract import EVENT_FIELDS, make_event, parse_event, parse_event_checked
from trainer.contract.events import MAX_LINE_BYTES, MAX_MESSAGE_CHARS, MAX_PATH_CHARS


def line(kind: str, **fields) -> str:
    return json.dumps({"event": kind, "schema": 1, "time": 1700000000.5, **fields})


def step_line(**fields) -> str:
    return line("step", **{"step": 3, "total_steps": 10, "epoch": 1, "loss": 0.5, "lr": 1e-4, **fields})


# Parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, field",
    [
        (step_line(step="three"), "step"),
        (step_line(epoch="one"), "epoch"),
        (step_line(step=10**30), "step"),
        (step_line(step=3.0), "step"),  # an integer field takes integers only
        (step_line(step=True), "step"),
        (step_line(step=-1), "step"),
        (step_line(step=11), "past total_steps"),
        (step_line(loss="0.5"), "loss"),
        (line("epoch_saved", epoch=1, path="x" * (MAX_PATH_CHARS + 1)), "path"),
        (line("epoch_saved", epoch=1, path="/a\u0000b"), "NUL"),
        (line("epoch_saved", epoch=1001, path="/a"), "epoch"),
        (line("image_ready", index=0, path=["/a"]), "path"),
        (line("done", files="/etc/passwd"), "files"),
        (line("started", total_steps=10, total_epochs=1, time=float("inf")), "time"),
        (line("failed", message=["no"]), "message"),
    ],
)
def test_wrong_types_and_out_of_range_numbers_are_refused_with_the_field_named(text, field):
    event, why = parse_event_checked(text)
    assert event is None and why is not None and field in why, why


def test_missing_fields_unknown_kinds_bad_json_and_huge_lines_are_refused():
    event, why = parse_event_checked(line("step", step=3))
    assert event is None and "total_steps: Field required" in why
    assert parse_event_checked('{"event": "step"}')[0] is None
    assert "unknown event kind" in parse_event_checked(line("rm -rf"))[1]
    assert "not JSON" in parse_event_checked("{oops")[1]
    assert "unknown event kind" in parse_event_checked('{"a": 1}')[1]
    assert parse_event_checked('{"a": ' + "[" * 100_000)[0] is None  # deep nesting: refused, no crash
    assert parse_event_checked('{"step": ' + "9" * 10_000 + "}")[0] is None  # an integer too long to read
    huge = line("failed", message="x" * 2**20)  # about 1 MB
    event, why = parse_event_checked(huge)
    assert event is None and "over the" in why and str(MAX_LINE_BYTES // 1024) in why
    assert parse_event_checked("a log line, not an event") == (None, None)
    assert parse_event("") is None


def test_extra_keys_are_dropped_and_texts_cut_and_nan_losses_become_none():
    event = parse_event(step_line(loss=float("nan"), lr=float("inf"), avg_loss=-float("inf"), junk="x" * 5000))
    assert event == {
        "event": "step", "schema": 1, "time": 1700000000.5, "step": 3, "total_steps": 10, "epoch": 1,
        "loss": None, "lr": None, "avg_loss": None,
    }  # fmt: skip
    failed = parse_event(line("failed", message="y" * 10_000, request="r1"))
    assert failed["message"] == "y" * MAX_MESSAGE_CHARS and failed["request"] == "r1"
    label = parse_event(line("image_ready", index=0, path="/p.png", label="z" * 1000, weights=[0.5, 1]))
    assert len(label["label"]) == 200 and label["weights"] == [0.5, 1.0]


def test_every_event_the_trainer_writes_round_trips():
    """The fields train.py, generate.py and serve.py really send, through make_event and back."""
    events = [
        make_event("ready", pid=123),
        make_event(
            "started", total_steps=480, total_epochs=2, steps_per_epoch=240, images=4, seed=1234, family="sd15",
            optimizer="AdamW", precision="no", device="cpu", resumed_from_step=0, preflight_peak_mb=None,
            compiled=False, cached_text_outputs=4,
        ),  # fmt: skip
        make_event("started", request="g1", total_steps=2, total_epochs=0, seed=9, family="sdxl", images=2,
                   model_cached=True, load_s=0.0),  # fmt: skip
        make_event("step", step=3, total_steps=10, epoch=1, loss=0.1, lr=1e-4, avg_loss=0.2),
        make_event("epoch_saved", epoch=1, path="/d/output/a-000001.safetensors", step=240),
        make_event("preview_ready", epoch=1, path="/d/output/a-000001-preview.png"),
        make_event("image_ready", index=0, path="/d/o/i.png", seed=3, weights=[0.7, 1.0], label="e2", row=0),
        make_event("image_ready", index=1, path="/d/o/g.png", grid=True),
        make_event("done", files=["/d/o/a.safetensors"], steps=480, seconds=12.5),
        make_event("done", request="g1", files=[], seed=4),
        make_event("cancelled", step=4, epoch=0, files=[]),
        make_event("failed", message="out of memory", request=7),
    ]
    for event in events:
        assert parse_event(json.dumps(event)) == event
        assert set(EVENT_FIELDS[event["event"]]) <= set(event)


def test_make_event_refuses_what_the_bot_would_refuse():
    with pytest.raises(ValueError, match="lacks"):
        make_event("failed")
    with pytest.raises(ValueError, match="has no fields"):
        make_event("step", step=1, total_steps=2, epoch=1, loss=0.1, lr=0.1, secret="x")
    with pytest.raises(ValueError, match="step"):
        make_event("step", step="three", total_steps=2, epoch=1, loss=0.1, lr=0.1)
    with pytest.raises(ValueError, match="over the"):
        make_event("done", files=["/x" * 2000] * 100)
    with pytest.raises(ValueError, match="unknown event kind"):
        make_event("rm")
    assert len(make_event("failed", message="m" * 5000)["message"]) == MAX_MESSAGE_CHARS
    assert make_event("step", step=1, total_steps=2, epoch=1, loss=math.nan, lr=0.0)["loss"] is None


# Paths --------------------------------------------------------------------------------------------


@pytest.fixture
def jobs(tmp_path) -> tuple[Path, Path]:
    """Two job folders with an output file each, and a file outside both."""
    for name in ("mine", "theirs"):
        out = tmp_path / "jobs" / name / "output"
        out.mkdir(parents=True)
        (out / "lora-000001.safetensors").write_bytes(b"weights")
        (out / "preview.png").write_bytes(b"png")
    (tmp_path / "jobs" / "mine" / "job.json").write_text("{}")
    (tmp_path / "secret.png").write_bytes(b"secret")
    return tmp_path / "jobs" / "mine", tmp_path / "jobs" / "theirs"


def test_only_regular_files_inside_the_jobs_output_folder_are_trusted(jobs, tmp_path):
    mine, theirs = jobs
    out = mine / "output"
    (out / "escape.png").symlink_to(tmp_path / "secret.png")
    (out / "inside-link.png").symlink_to(out / "preview.png")
    (out / "folder.png").mkdir()
    good = trusted_job_file(mine, str(out / "preview.png"), ".png")
    assert good == (out / "preview.png").resolve()
    assert trusted_job_file(mine, out / "inside-link.png") == good  # a link that stays inside: its target
    assert trusted_job_file(str(mine), str(out / "sub" / ".." / "preview.png")) == good
    refused = [
        "/etc/passwd",
        str(out / ".." / ".." / ".." / "secret.png"),  # ../ out of the folder
        str(out / "escape.png"),  # a symlink inside pointing out
        str(theirs / "output" / "preview.png"),  # another member's job
        str(out / "folder.png"),  # a directory
        str(out / "missing.png"),
        str(out),
        str(mine / "job.json"),  # the job's folder, not its output
        "output/preview.png",  # relative: resolved against nobody knows what
        str(out / "pre\x00view.png"),
        None,
    ]
    for path in refused:
        assert trusted_job_file(mine, path) is None, path
    assert trusted_job_file(mine, out / "preview.png", ".safetensors") is None  # not what the kind sends


# Recording, with a real database ------------------------------------------------------------------


def with_job(tmp_path, body, kind: str = "train"):
    settings = queue_settings(tmp_path)

    async def go():
        async with open_services(settings) as services:
            folder = settings.jobs_dir() / "abc"
            (folder / "output").mkdir(parents=True)
            new = repo.NewJob(1, kind, 0, "chara", None, "tiny-sd15", "sd15", 64, 1, 20, 2,
                              {"epochs": 2, "options": {}}, str(folder))  # fmt: skip
            await services.stamina.ensure_user(1)
            async with transaction(services.conn):
                job = await repo.insert_job(services.conn, new)
            return await body(services, job, folder / "output")

    return asyncio.run(go())


def event(kind: str, **fields) -> dict:
    return make_event(kind, **fields)


async def stored(conn, job_id: int) -> tuple[list[dict], list, list]:
    return await repo.events(conn, job_id), await repo.epochs(conn, job_id), await repo.files(conn, job_id)


def test_an_event_naming_a_file_outside_the_job_is_refused_and_nothing_is_stored(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.png").write_bytes(b"other member's image")

    async def body(s, job, out):
        (out / "escape.safetensors").symlink_to("/etc/passwd")
        bad = [
            event("epoch_saved", epoch=1, path="/etc/passwd", step=10),
            event("epoch_saved", epoch=1, path=str(out / "escape.safetensors"), step=10),
            event("preview_ready", epoch=1, path=str(out / ".." / ".." / ".." / "other" / "x.png")),
            event("image_ready", index=0, path=str(tmp_path / "other" / "x.png")),
            event("epoch_saved", epoch=1, path=str(out), step=10),
        ]
        for e in bad:
            with pytest.raises(UntrustedEvent, match="not a .* file in the job's output folder"):
                await record_event(s.conn, job, e)
        raw = {"event": "step", "schema": 1, "time": 1.0, "step": "three", "total_steps": 20, "epoch": 1,
               "loss": 0.1, "lr": 0.1}  # fmt: skip
        with pytest.raises(UntrustedEvent, match="step: Input should be a valid integer"):
            await record_event(s.conn, job, raw)
        with pytest.raises(UntrustedEvent, match="less than or equal"):
            await record_event(s.conn, job, {**raw, "step": 10**30})
        (out / "e3.safetensors").write_bytes(b"w")
        with pytest.raises(UntrustedEvent, match="epoch 3: the job has 2"):
            await record_event(s.conn, job, event("epoch_saved", epoch=3, path=str(out / "e3.safetensors")))
        assert await stored(s.conn, job.id) == ([], [], [])
        after = await repo.get_job(s.conn, job.id)
        assert (after.step, after.epoch, after.last_event_at) == (0, 0, None)

    with_job(tmp_path, body)


def test_good_events_are_stored_with_their_resolved_paths(tmp_path):
    async def body(s, job, out):
        lora = out / "lora-000001.safetensors"
        lora.write_bytes(b"weights")
        (out / "p.png").write_bytes(b"png")
        via = str(out / "sub" / ".." / lora.name)
        job = await record_event(s.conn, job, event("epoch_saved", epoch=1, path=via, step=10))
        assert (job.epoch, job.step) == (1, 10)
        await record_event(s.conn, job, event("preview_ready", epoch=1, path=str(out / "p.png")))
        done = event("done", files=[via, "/etc/passwd"], steps=20)
        await record_event(s.conn, job, done)
        events, epochs, _ = await stored(s.conn, job.id)
        assert [(e.epoch, e.step, e.path, e.preview_path) for e in epochs] == [
            (1, 10, str(lora.resolve()), str((out / "p.png").resolve()))
        ]
        assert events[0]["path"] == str(lora.resolve())
        assert events[-1]["files"] == [str(lora.resolve())] and events[-1]["files_refused"] == 1
        assert done["files"] == [via, "/etc/passwd"]  # the caller's dict is left as it was
        assert await s.queue.epoch_file(1, job.id, 1) == str(lora.resolve())

    with_job(tmp_path, body)


def test_generated_images_must_be_in_the_jobs_output_too(tmp_path):
    async def body(s, job, out):
        (out / "image-00.png").write_bytes(b"png")
        await record_event(s.conn, job, event("image_ready", index=0, path=str(out / "image-00.png")))
        with pytest.raises(UntrustedEvent):
            await record_event(s.conn, job, event("image_ready", index=1, path="/etc/hostname"))
        assert [p for _, p, _ in await repo.files(s.conn, job.id)] == [str((out / "image-00.png").resolve())]
        assert (await repo.get_job(s.conn, job.id)).step == 1

    with_job(tmp_path, body, kind="generate")


def test_a_stored_path_is_checked_again_when_a_member_downloads_it(tmp_path):
    """A row written before these checks (or a file swapped since) is not sent by Download or Save."""

    async def body(s, job, out):
        lora = out / "lora-000001.safetensors"
        lora.write_bytes(b"weights")
        async with transaction(s.conn):
            await repo.save_epoch(s.conn, job.id, 1, 10, "/etc/passwd")
            await repo.save_epoch(s.conn, job.id, 2, 20, str(lora))
        with pytest.raises(QueueError, match="has no saved epoch 1"):
            await s.queue.epoch_file(1, job.id, 1)
        with pytest.raises(QueueError, match="has no saved epoch 1"):
            await s.library.save(1, job.id, 1, "stolen")
        assert await s.queue.epoch_file(1, job.id, 2) == str(lora.resolve())
        lora.unlink()
        lora.symlink_to("/etc/passwd")  # swapped after it was recorded
        with pytest.raises(QueueError, match="has no saved epoch 2"):
            await s.queue.epoch_file(1, job.id, 2)

    with_job(tmp_path, body)
