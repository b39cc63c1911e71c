"""bench/db_faults.py --quick: the bot with another process holding SQLite's write lock (smoke run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("held_lock_s", "read_ack_p99_ms", "write_ack_p99_ms", "late", "events_lost", "stuck_jobs",
        "db_growth_mb_per_job", "base_read_ack_p99_ms", "base_write_ack_p99_ms")  # fmt: skip


def test_quick_bench_answers_every_command_in_time_and_loses_no_event(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "db_faults.py"), "--quick", "--held-lock-s", "4", "--members", "2"],
        cwd=tmp_path,  # no .env of the operator's
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{run.stderr[-3000:]}"
    values = dict(pair.split("=", 1) for pair in lines[-1].split())
    assert list(values)[: len(KEYS)] == list(KEYS), lines[-1]
    assert (values["late"], values["events_lost"], values["stuck_jobs"]) == ("0", "0", "0"), (
        f"{lines[-1]}\n{run.stderr[-3000:]}"
    )
    assert values["held_lock_s"] == "4" and float(values["db_growth_mb_per_job"]) > 0
    assert run.returncode == 0, run.stderr[-3000:]
