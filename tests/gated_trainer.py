"""The real ``python -m trainer`` behind a gate, for a test that needs a training job to be running
at a point it chooses, however fast or slow the machine is.

Run as ``python tests/gated_trainer.py train --job FILE``: it relays the trainer's events, and
after the first step event holds the rest back until it gets SIGUSR1 (the test sends it to the
job's pid), so the job stays ``running`` meanwhile. It gives up after ``GATED_TRAINER_TIMEOUT_S``
(default 600) with a message on stderr and exit code 3. SIGTERM goes on to the trainer. Any other
command (``serve``) is the real trainer itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys


def _is_step(line: str) -> bool:
    try:
        return json.loads(line).get("event") == "step"
    except (ValueError, AttributeError):
        return False


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> int:
    command = [sys.executable, "-m", "trainer", *sys.argv[1:]]
    if sys.argv[1] != "train":
        os.execv(sys.executable, command)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # one sent early waits, pending
    timeout = float(os.environ.get("GATED_TRAINER_TIMEOUT_S", "600"))
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    gated = True
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if gated and _is_step(line):
            gated = False
            if signal.sigtimedwait({signal.SIGUSR1}, timeout) is None:
                print(f"gated trainer: no SIGUSR1 within {timeout:g} s", file=sys.stderr, flush=True)
                child.kill()
                return 3
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
