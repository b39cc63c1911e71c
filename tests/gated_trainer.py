"""The real ``python -m trainer`` behind a gate, for a test that needs a training job to be at a
point it chooses, however fast or slow the machine is.

Run as ``python tests/gated_trainer.py train --job FILE``: it relays the trainer's events, and
after the first event of kind ``GATED_TRAINER_AT`` (default ``step``) it stops the trainer
(SIGSTOP) until it gets SIGUSR1 (the test sends it to the job's pid), so the job stays ``running``
meanwhile and makes no progress: a test that kills it there knows exactly what was saved. With
``GATED_TRAINER_ONCE=FILE`` only the first run gates (it creates FILE); a resumed run goes through.
It gives up after ``GATED_TRAINER_TIMEOUT_S`` (default 600) with a message on stderr and exit
code 3. SIGTERM goes on to the trainer (woken if stopped) and opens the gate. Any other command
(``serve``) is the real trainer itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys


class _Terminated(Exception):
    """SIGTERM arrived while the gate was shut."""


def _kind(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _gates_this_run() -> bool:
    marker = os.environ.get("GATED_TRAINER_ONCE")
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _hold(child: subprocess.Popen, timeout: float) -> bool:
    """Keep the trainer stopped until SIGUSR1 or SIGTERM; False if neither came in time."""
    child.send_signal(signal.SIGSTOP)
    try:
        if signal.sigtimedwait({signal.SIGUSR1}, timeout) is None:
            print(f"gated trainer: no SIGUSR1 within {timeout:g} s", file=sys.stderr, flush=True)
            child.kill()
            return False
    except _Terminated:
        pass
    child.send_signal(signal.SIGCONT)
    return True


def main() -> int:
    command = [sys.executable, "-m", "trainer", *sys.argv[1:]]
    if sys.argv[1] != "train":
        os.execv(sys.executable, command)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # one sent early waits, pending
    timeout = float(os.environ.get("GATED_TRAINER_TIMEOUT_S", "600"))
    gate_at = os.environ.get("GATED_TRAINER_AT", "step")
    gated = _gates_this_run()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)

    def terminate(*_) -> None:
        child.terminate()
        child.send_signal(signal.SIGCONT)
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    assert child.stdout is not None
    try:
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if gated and _kind(line) == gate_at:
                gated = False
                if not _hold(child, timeout):
                    return 3
    except _Terminated:  # while relaying: the trainer has its SIGTERM; relay the rest
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
