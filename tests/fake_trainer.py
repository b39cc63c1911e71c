"""A stand-in for ``python -m trainer`` that misbehaves on purpose (crash, hang), for dispatcher tests.

Run as ``python tests/fake_trainer.py train --job FILE``. ``FAKE_TRAINER_MODE``:
``crash`` (starts, reports a step, dies without a terminal event), ``hang`` (starts, then
says nothing), ``crash_first`` (crashes unless the job resumes, then finishes), ``gated``
(starts, then waits for SIGUSR1, at most 600 s, before it finishes: the test decides how long
the job runs), ``longline`` (prints a 2 MiB line, then finishes), ``stream``
(``FAKE_TRAINER_STEPS`` step events spread over ``FAKE_TRAINER_SECONDS``, an epoch file in its
output folder, then done), ``preview`` (``stream`` with a preview grid of the epoch before done),
``preview_fail`` (``preview``, then fails instead of done), ``nospace`` (fails as a full disk does). ``serve`` answers each
request with one image at once (a 1x1 PNG in the job's
``output_dir``: the bot accepts no file outside it), or with none when ``FAKE_SERVE_IMAGES`` is 0;
with ``FAKE_SERVE_RECORD`` set, it appends each job it got to that file (JSON lines), with the bytes'
SHA-256 of each LoRA file the job names (``lora_sha256``), read when the job arrived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def emit(kind: str, **fields) -> None:
    print(json.dumps({"event": kind, "schema": 1, "time": time.time(), **fields}), flush=True)


def record(job: dict) -> None:
    target = os.environ.get("FAKE_SERVE_RECORD")
    if not target:
        return
    digests = [hashlib.sha256(Path(ref["path"]).read_bytes()).hexdigest() for ref in job.get("loras", [])]
    with open(target, "a", encoding="utf-8") as f:
        f.write(json.dumps({**job, "lora_sha256": digests}) + "\n")


def serve() -> None:
    emit("ready")
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue
        rid = request["id"]
        record(request["job"])
        emit("started", request=rid, total_steps=1, total_epochs=0, model_cached=False)
        if os.environ.get("FAKE_SERVE_IMAGES") == "0":
            emit("done", request=rid, files=[])
            continue
        out = Path(request["job"]["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        image = out / f"image-{rid}.png"
        image.write_bytes(PIXEL_PNG)
        emit("image_ready", request=rid, index=0, path=str(image))
        emit("done", request=rid, files=[str(image)])


def stream(job: dict, preview: bool = False, fail: bool = False) -> None:
    """Step events at a steady pace, one saved epoch in the job's own folder (with its preview grid,
    a PNG, when ``preview``), then done (failed with ``fail``)."""
    total = int(os.environ.get("FAKE_TRAINER_STEPS", "200"))
    pause = float(os.environ.get("FAKE_TRAINER_SECONDS", "5")) / total
    emit("started", total_steps=total, total_epochs=1, resumed_from_step=0)
    for step in range(1, total + 1):
        emit("step", step=step, total_steps=total, epoch=1, loss=0.1, lr=1e-4)
        time.sleep(pause)
    os.makedirs(job["output_dir"], exist_ok=True)
    path = os.path.join(job["output_dir"], "chara-000001.safetensors")
    with open(path, "wb") as f:
        f.write(b"fake epoch")
    emit("epoch_saved", epoch=1, step=total, path=path)
    if preview:
        grid = os.path.join(job["output_dir"], "preview-e01.png")
        with open(grid, "wb") as f:
            f.write(PIXEL_PNG)
        emit("preview_ready", epoch=1, path=grid)
    if fail:
        emit("failed", message="fake trainer: failed after epoch 1")
        return
    emit("done", files=[path], steps=total)


def main() -> None:
    if sys.argv[1] == "serve":
        return serve()
    with open(sys.argv[sys.argv.index("--job") + 1]) as f:
        job = json.load(f)
    mode = os.environ.get("FAKE_TRAINER_MODE", "crash")
    total = 10
    if mode in ("stream", "preview", "preview_fail"):
        return stream(job, preview=mode != "stream", fail=mode == "preview_fail")
    if mode == "gated":  # blocked before "started": a SIGUSR1 sent once the test saw it waits, pending
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    emit("started", total_steps=total, total_epochs=1, resumed_from_step=0)
    if mode == "nospace":
        emit("failed", message="[Errno 28] No space left on device: 'chara-000001.safetensors'")
        return
    if mode == "hang":
        time.sleep(3600)
    if mode == "longline":  # 2 MiB of output on one line, more than the dispatcher reads as one
        print("x" * (2 * 2**20), flush=True)
    if mode == "gated" and signal.sigtimedwait({signal.SIGUSR1}, 600) is None:
        sys.exit("fake trainer: no SIGUSR1 within 600 s")
    emit("step", step=3, total_steps=total, epoch=1, loss=0.5, lr=1e-4)
    if mode == "crash" or (mode == "crash_first" and not job.get("resume")):
        os._exit(9)
    emit("step", step=total, total_steps=total, epoch=1, loss=0.4, lr=1e-4)
    emit("done", files=[], steps=total)


if __name__ == "__main__":
    main()
