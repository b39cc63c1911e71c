"""``python -m bot stamina|queue|job|estimate|worker``: stamina, the queue and its jobs.

The same services as the Discord cogs, as an operator: ``job`` commands see every member's
jobs. ``worker`` runs the queue headless (no Discord) until SIGTERM or Ctrl-C, one line per
job update on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db import jobs as jobs_repo

from ..queue.eta import format_duration
from .common import discord_id, positive_int

if TYPE_CHECKING:
    from ..queue.status import JobStatus
    from ..services import Services

LEDGER_ROWS = 10
_NUMBER = re.compile(r"[+-]?\d+")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
Handler = Callable[["Services", argparse.Namespace], Awaitable[int]]


# Parsers ---------------------------------------------------------------------------------------


def add_parsers(groups: argparse._SubParsersAction) -> None:
    """The ``stamina``, ``queue``, ``job``, ``estimate`` and ``worker`` groups."""
    _stamina_parser(groups)
    _queue_parser(groups)
    _job_parser(groups)
    _estimate_parser(groups)
    groups.add_parser(
        "worker", help="run the queue headless (no Discord) until SIGTERM or Ctrl-C"
    ).set_defaults(command=None)


def _user(p: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    p.add_argument("--user", type=discord_id, required=required, help="the member's Discord user id")
    return p


def _by(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by", type=discord_id, metavar="OPERATOR_ID", help="who did it, for the record (a Discord id)"
    )


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _stamina_parser(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("stamina", help="members' stamina: balance, ledger, grants, tiers")
    sub = group.add_subparsers(dest="command", required=True, parser_class=type(group))
    _json(_user(sub.add_parser("show", help="balance, tier, next reset and the last ledger rows")))
    for name, help_ in (("grant", "give a member stamina"), ("revoke", "take stamina from a member")):
        cmd = _user(sub.add_parser(name, help=help_))
        cmd.add_argument("amount", type=int, help="how much stamina")
        cmd.add_argument("--note", default="", help="why, for the ledger")
        _by(cmd)
    tier = _user(sub.add_parser("tier", help="pin a member to a tier, or --clear to follow their roles"))
    choice = tier.add_mutually_exclusive_group(required=True)
    choice.add_argument("tier", nargs="?", help="a tier of the settings, or 'default'")
    choice.add_argument("--clear", action="store_true", help="drop the pinned tier")
    _by(tier)


def _queue_parser(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("queue", help="the queue's jobs with position and ETA; pause or resume it")
    group.add_argument("--all", dest="include_finished", action="store_true", help="also recently ended jobs")
    _json(_user(group, required=False))
    sub = group.add_subparsers(dest="command", parser_class=type(group), metavar="{pause,resume}")
    _by(sub.add_parser("pause", help="start no new job (running ones go on)"))
    _by(sub.add_parser("resume", help="start jobs again"))


def _job_parser(groups: argparse._SubParsersAction) -> None:
    group = groups.add_parser("job", help="one job of any member: show or cancel it")
    sub = group.add_subparsers(dest="command", required=True, parser_class=type(group))
    cancel = sub.add_parser("cancel", help="cancel a job (a waiting one is refunded in full)")
    cancel.add_argument("id", type=positive_int, help="the job's number ('python -m bot queue' lists them)")
    show = sub.add_parser("show", help="state, progress, cost, saved epochs and recent events")
    show.add_argument(
        "id", type=positive_int, help="the job's number ('python -m bot queue --all' lists them)"
    )
    show.add_argument("--events", type=int, default=10, help="how many recent events (default 10)")


def _estimate_parser(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser("estimate", help="steps and stamina cost of a training job, without queueing it")
    p.add_argument("--dataset", required=True, help="the member's dataset")
    _user(p)
    p.add_argument("--repeats", type=int, help="times each image is seen per epoch (default 10)")
    p.add_argument("--epochs", type=int, help="passes over the dataset (default 10)")
    p.add_argument("--batch-size", type=int, help="images per step (default 1)")
    p.add_argument(
        "--resolution", type=int, help="training side in pixels (default: the family's, or the crop size)"
    )
    p.add_argument("--set", dest="options", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="any training option; the value is JSON when it parses (3, 1e-4, true), else text")  # fmt: skip
    _json(p)
    p.set_defaults(command=None)


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


async def run(services: Services, args: argparse.Namespace) -> int:
    """Run one command of these groups."""
    return await COMMANDS[(args.group, args.command)](services, args)


# Stamina ---------------------------------------------------------------------------------------


async def _stamina_show(s: Services, a: argparse.Namespace) -> int:
    bal = await s.stamina.balance(a.user)
    rows = await s.stamina.history(a.user, LEDGER_ROWS)
    reset_in = (bal.next_reset - s.stamina.now()).total_seconds()
    if a.json:
        data = {**dataclasses.asdict(bal), "next_reset": bal.next_reset.isoformat(),
                "next_reset_in_s": round(reset_in), "ledger": [dataclasses.asdict(r) for r in rows]}  # fmt: skip
        print(json.dumps(data, indent=2))
        return 0
    print(f"user {bal.user_id}: {bal.balance} stamina")
    print(f"tier {bal.tier}: {bal.allowance} a day, priority {bal.priority}, {bal.max_queued} jobs at once")
    print(f"next reset {_local(bal.next_reset)} (in {format_duration(reset_in)})")
    _table(
        ["time", "delta", "balance", "reason", "job", "note"],
        [[_when(r.created_at), f"{r.delta:+d}", r.balance_after, r.reason, _job_ref(r.job_id),
          r.note + (f" (by {r.actor_id})" if r.actor_id is not None else "")] for r in rows],
    )  # fmt: skip
    return 0


async def _grant(s: Services, a: argparse.Namespace) -> int:
    bal = await s.stamina.grant(a.user, a.amount, a.by, a.note)
    print(f"granted {a.amount} stamina to user {a.user}: balance {bal.balance}")
    return 0


async def _revoke(s: Services, a: argparse.Namespace) -> int:
    bal = await s.stamina.revoke(a.user, a.amount, a.by, a.note)
    print(f"revoked {a.amount} stamina from user {a.user}: balance {bal.balance}")
    return 0


async def _tier(s: Services, a: argparse.Namespace) -> int:
    bal = await s.stamina.set_tier(a.user, None if a.clear else a.tier, a.by)
    how = "follows their roles again" if a.clear else "is pinned"
    print(f"user {a.user} {how}: tier {bal.tier} ({bal.allowance} a day, priority {bal.priority})")
    return 0


# Queue -----------------------------------------------------------------------------------------


async def _queue(s: Services, a: argparse.Namespace) -> int:
    from ..queue.status import queue_status

    paused = await s.queue.paused()
    statuses = await queue_status(s.queue, a.user, a.include_finished)
    if a.json:
        print(json.dumps({"paused": paused, "jobs": [_status_dict(st) for st in statuses]}, indent=2))
        return 0
    if paused:
        print("the queue is paused: no new job starts (resume it with 'python -m bot queue resume')")
    if not statuses:
        print("no jobs" if a.include_finished else "no jobs waiting or running")
        return 0
    _table(
        ["id", "owner", "kind", "state", "pos", "progress", "eta", "device", "title"],
        [[st.job.id, st.job.owner_id, st.job.kind, st.job.state, st.position or "-", st.progress, _eta(st),
          st.job.device or "-", st.job.title[:40]] for st in statuses],
    )  # fmt: skip
    return 0


def _status_dict(st: JobStatus) -> dict[str, Any]:
    job = st.job
    return {
        "id": job.id, "owner_id": job.owner_id, "kind": job.kind, "state": job.state, "title": job.title,
        "position": st.position, "progress": st.progress, "step": job.step, "total_steps": job.total_steps,
        "starts_in_s": st.starts_in_s, "ends_in_s": st.ends_in_s, "device": job.device, "cost": job.cost,
        "refunded": job.refunded, "error": job.error,
    }  # fmt: skip


def _eta(st: JobStatus) -> str:
    if st.job.finished:
        return "-"
    if st.ends_in_s is None:
        return "paused" if st.paused else "?"
    return format_duration(st.ends_in_s)


async def _pause(s: Services, a: argparse.Namespace) -> int:
    await s.queue.pause(a.by)
    print("the queue is paused: running jobs go on, no new job starts ('python -m bot queue resume')")
    return 0


async def _resume(s: Services, a: argparse.Namespace) -> int:
    await s.queue.resume(a.by)
    print("the queue runs again")
    return 0


# Jobs ------------------------------------------------------------------------------------------


async def _cancel(s: Services, a: argparse.Namespace) -> int:
    job = await s.queue.cancel(0, a.id, operator=True)
    if job.state == "cancelled":
        print(f"job #{job.id} cancelled: refunded {job.refunded} stamina to user {job.owner_id}")
    elif job.state == "cancelling":
        print(f"job #{job.id} is running on {job.device or '?'}: stopping it "
              "(the steps not trained are refunded when it stops)")  # fmt: skip
    else:
        print(f"job #{job.id} is {job.state}")
    return 0


async def _job_show(s: Services, a: argparse.Namespace) -> int:
    from ..queue.status import JobStatus, queue_status

    job = await s.queue.job(0, a.id, operator=True)
    mine = [st for st in await queue_status(s.queue, job.owner_id) if st.job.id == job.id]
    st = mine[0] if mine else JobStatus(job, None, None, None, False)
    print(f"job #{job.id} {job.kind} '{job.title}' of user {job.owner_id}: {job.state}")
    print(f"  progress {st.progress}" + (f", position {st.position}" if st.position else "")
          + (f", ETA {_eta(st)}" if not job.finished else ""))  # fmt: skip
    print(f"  base model {job.base_model} ({job.family}), {job.resolution} px, batch {job.batch_size}")
    print(f"  cost {job.cost}, refunded {job.refunded}")
    print(f"  device {job.device or '-'}, starts {job.attempts}, created {_when(job.created_at)}, "
          f"started {_when(job.started_at)}, ended {_when(job.finished_at)}")  # fmt: skip
    if job.error:
        print(f"  error: {job.error}")
    print(f"  folder {job.folder}")
    await _job_outputs(s, job)
    events = (await jobs_repo.events(s.conn, job.id))[-a.events :] if a.events > 0 else []
    if events:
        print("recent events:")
    for event in events:
        print(f"  {_when(event.get('time'))} {_detail(event['event'], event, job)}")
    return 0


async def _job_outputs(s: Services, job: jobs_repo.JobRow) -> None:
    """Saved epochs (training) and images (generation) with their files."""
    epochs = await jobs_repo.epochs(s.conn, job.id)
    if epochs:
        print("saved epochs:")
    for e in epochs:
        preview = f"  preview {e.preview_path}" if e.preview_path else ""
        print(f"  epoch {e.epoch} (step {e.step}): {e.path}{preview}")
    files = await jobs_repo.files(s.conn, job.id)
    if files:
        print("images:")
    for index, path, grid in files:
        print(f"  {index}{' (grid)' if grid else ''}: {path}")


# Estimate --------------------------------------------------------------------------------------


async def _estimate(s: Services, a: argparse.Namespace) -> int:
    options = dict(a.options)
    for key in ("repeats", "epochs", "batch_size", "resolution"):
        if getattr(a, key) is not None:
            options[key] = getattr(a, key)
    est = await s.queue.estimate_training(a.user, a.dataset, options)
    if a.json:
        data = {**dataclasses.asdict(est), "eta_s": round(est.eta_s, 1), "affordable": est.affordable}
        print(json.dumps(data, indent=2))
        return 0
    short = est.cost - est.balance
    for label, value in (
        ("dataset", f"{est.dataset} ({est.base_model})"), ("family", est.family), ("images", est.images),
        ("repeats", est.repeats), ("epochs", est.epochs), ("batch size", est.batch_size),
        ("steps per epoch", est.steps_per_epoch), ("total steps", est.total_steps),
        ("resolution", f"{est.resolution} px"), ("time", f"about {format_duration(est.eta_s)} once started"),
        ("cost", f"{est.cost} stamina"), ("balance", f"{est.balance} stamina"),
        ("affordable", "yes" if est.affordable else f"no, {short} stamina short"),
    ):  # fmt: skip
        print(f"{label:<16} {value}")
    return 0


# Worker ----------------------------------------------------------------------------------------


async def _worker(s: Services, a: argparse.Namespace) -> int:
    from .worker import run_worker  # (it uses this module's formatting)

    return await run_worker(s, a)


def _detail(kind: str, event: dict[str, Any], job: jobs_repo.JobRow) -> str:
    """A short text for a job update or a stored event."""
    g = event.get
    if kind == "step":
        loss = g("loss")
        loss_text = f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        return f"step {g('step')}/{g('total_steps')}, epoch {g('epoch')}{loss_text}"
    if kind == "finished":
        error = f" ({job.error})" if g("state") == "failed" and job.error else ""
        return f"finished: {g('state')}, refunded {g('refunded', 0)}{error}"
    resumed = f", resumed from step {g('resumed_from_step')}" if g("resumed_from_step") else ""
    texts = {
        "started": f"started: {g('total_steps')} steps, {g('total_epochs')} epochs{resumed}",
        "epoch_saved": f"epoch {g('epoch')} saved: {g('path')}",
        "preview_ready": f"preview of epoch {g('epoch')}: {g('path')}",
        "running": f"running on {g('device')} (start {g('attempt')})",
        "image_ready": f"image {g('index')} ready: {g('path')}",
        "requeued": f"requeued: {g('reason')}",
        "cancelling": "stopping (cancelled)",
        "cancelled": f"trainer cancelled at step {g('step')}",
        "failed": f"trainer failed: {g('message')}",
        "done": "trainer done",
    }
    return texts.get(kind, kind)


# Formatting ------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    """Columns padded to fit; columns of numbers (signed too) right-aligned."""
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_NUMBER.fullmatch(str(r[i])) for r in rows) for i in range(len(headers))]

    def line(cells: list[Any]) -> str:
        parts = [
            str(c).rjust(w) if n else str(c).ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    for row in rows:
        print(line(row))


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _job_ref(job_id: int | None) -> str:
    return "-" if job_id is None else f"#{job_id}"


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("stamina", "show"): _stamina_show, ("stamina", "grant"): _grant, ("stamina", "revoke"): _revoke,
    ("stamina", "tier"): _tier, ("queue", None): _queue, ("queue", "pause"): _pause, ("queue", "resume"): _resume,
    ("job", "cancel"): _cancel, ("job", "show"): _job_show, ("estimate", None): _estimate, ("worker", None): _worker,
}  # fmt: skip
