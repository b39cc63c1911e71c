"""A stand-in for ``python -m trainer`` that misbehaves on purpose (crash, hang), for dispatcher tests.

Run as ``python tests/fake_trainer.py train --job FILE``. ``FAKE_TRAINER_MODE``:
``crash`` (starts, reports a step, dies without a terminal event), ``hang`` (starts, then
says nothing), ``crash_first`` (crashes unless the job resumes, then finishes), ``slow``
(takes ``FAKE_TRAINER_SECONDS``, default 3, then finishes), ``longline`` (prints a 2 MiB line,
then finishes). ``serve`` answers each request with one image at once (a 1x1 PNG in the job's
``output_dir``: the bot accepts no file outside it).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def emit(kind: str, **fields) -> None:
    print(json.dumps({"event": kind, "schema": 1, "time": time.time(), **fields}), flush=True)


def serve() -> None:
    emit("ready")
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue
        rid = request["id"]
        out = Path(request["job"]["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        image = out / "image-00.png"
        image.write_bytes(PIXEL_PNG)
        emit("started", request=rid, total_steps=1, total_epochs=0, model_cached=False)
        emit("image_ready", request=rid, index=0, path=str(image))
        emit("done", request=rid, files=[str(image)])


def main() -> None:
    if sys.argv[1] == "serve":
        return serve()
    with open(sys.argv[sys.argv.index("--job") + 1]) as f:
        job = json.load(f)
    mode = os.environ.get("FAKE_TRAINER_MODE", "crash")
    total = 10
    emit("started", total_steps=total, total_epochs=1, resumed_from_step=0)
    if mode == "hang":
        time.sleep(3600)
    if mode == "longline":  # 2 MiB of output on one line, more than the dispatcher reads as one
        print("x" * (2 * 2**20), flush=True)
    if mode == "slow":
        time.sleep(float(os.environ.get("FAKE_TRAINER_SECONDS", "3")))
    emit("step", step=3, total_steps=total, epoch=1, loss=0.5, lr=1e-4)
    if mode == "crash" or (mode == "crash_first" and not job.get("resume")):
        os._exit(9)
    emit("step", step=total, total_steps=total, epoch=1, loss=0.4, lr=1e-4)
    emit("done", files=[], steps=total)


if __name__ == "__main__":
    main()
