"""A stand-in for ``python -m trainer`` that misbehaves on purpose (crash, hang), for dispatcher tests.

Run as ``python tests/fake_trainer.py train --job FILE``. ``FAKE_TRAINER_MODE``:
``crash`` (starts, reports a step, dies without a terminal event), ``hang`` (starts, then
says nothing), ``crash_first`` (crashes unless the job resumes, then finishes).
"""

from __future__ import annotations

import json
import os
import sys
import time


def emit(kind: str, **fields) -> None:
    print(json.dumps({"event": kind, "schema": 1, "time": time.time(), **fields}), flush=True)


def main() -> None:
    with open(sys.argv[sys.argv.index("--job") + 1]) as f:
        job = json.load(f)
    mode = os.environ.get("FAKE_TRAINER_MODE", "crash")
    total = 10
    emit("started", total_steps=total, total_epochs=1, resumed_from_step=0)
    if mode == "hang":
        time.sleep(3600)
    emit("step", step=3, total_steps=total, epoch=1, loss=0.5, lr=1e-4)
    if mode == "crash" or (mode == "crash_first" and not job.get("resume")):
        os._exit(9)
    emit("step", step=total, total_steps=total, epoch=1, loss=0.4, lr=1e-4)
    emit("done", files=[], steps=total)


if __name__ == "__main__":
    main()
