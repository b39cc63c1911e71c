"""``python -m bot demo``: the whole guide flow offline, through the real bot and a loopback Discord.

A newcomer's first ten minutes, without a GPU, Discord or the internet: a dataset of our own
drawings, auto-tagging, tag pruning, the cost, the queue, two epochs on a built-in tiny model
(SD1.5; ``--family flux`` picks Flux.1), the preview grids, the download, the library and a
/generate weight comparison. It writes the files it received and ``transcript.html`` (the
conversation as the member saw it) to ``out``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from trainer.contract.families import DEFAULT_FAMILY, family_label

from .world import DemoError

__all__ = ["DemoError", "run_demo"]


async def run_demo(out: str, family: str = DEFAULT_FAMILY, locale: str = "en-US") -> int:
    """Run the demo into the folder ``out`` on the tiny model of ``family``, the member's Discord in
    ``locale`` (``ja``: the whole conversation in Japanese); 0 on success, 1 (after one line on
    stderr) on failure."""
    import sys

    started = time.monotonic()
    folder = Path(out).resolve()
    try:
        _prepare(folder)
        written = await asyncio.wait_for(_run(folder, family, locale), 600)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("demo interrupted (run it again: it starts afresh)", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print("demo failed: it took more than 10 minutes", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"demo failed: {exc.strerror or exc}: {exc.filename or folder}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for anything else too; the details are for a bug report
        logging.getLogger(__name__).debug("demo failed", exc_info=exc)
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _summary(folder, written, time.monotonic() - started)
    return 0


MARKER = ".lorabot-demo"
KEEP = {"models"}  # the tiny models built by an earlier run: the rest starts afresh


def _prepare(folder: Path) -> None:
    """Use ``folder`` only if it is empty or an earlier demo's; start from a clean slate there
    (an interrupted run leaves jobs behind), keeping the tiny models it built."""
    import shutil

    if folder.exists() and not folder.is_dir():
        raise DemoError(f"{folder} is a file: name a folder for the demo's files")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise DemoError(f"{folder} is not empty and not an earlier demo's folder: name a new folder (--out)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by python -m bot demo\n", encoding="utf-8")
    data = folder / "data"
    if data.is_dir():
        for child in data.iterdir():
            if child.name not in KEEP:
                shutil.rmtree(child) if child.is_dir() else child.unlink()


async def _run(folder: Path, family: str, locale: str) -> list[Path]:
    """The flow; returns the files written."""
    from ..i18n import messages
    from ..settings import Settings
    from . import script
    from .timeline import build_entries
    from .transcript import write_transcript
    from .world import demo_world

    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):  # fmt: skip
        os.environ.setdefault(name, value)  # offline, and the trainer's output stays quiet
    folder.mkdir(parents=True, exist_ok=True)
    # the embedded defaults only: never the operator's .env or LORABOT_* (a real registry, GPUs, guilds)
    settings = Settings(_env_file=None, _env_prefix="LORABOT_DEMO_UNUSED_", data_dir=folder / "data",
                        command_cooldown_s=0, progress_interval_s=1)  # fmt: skip
    script.say(
        f"LoRA bot demo → {folder} (offline: loopback Discord, tiny {family_label(family)} model, CPU)"
    )
    logging.getLogger("discord").setLevel(logging.WARNING)
    async with demo_world(settings, locale) as w:
        await script.make_dataset(w, f"tiny-{family}")
        job_id = await script.start_training(w)
        await script.watch_training(w, job_id)
        lora = await script.pick_epoch(w, job_id, folder)
        generated = await script.generate(w)
        await asyncio.sleep(0.5)  # the last edits (progress message) land
        written = [lora, *_save_images(w, generated, folder)]
        entries = build_entries(w)
    t = messages(locale)
    title = t("LoRA bot demo: #{channel}", channel=w.channel.name)
    written += write_transcript(entries, folder / "transcript.html", title=title, locale=locale)
    return written


def _save_images(w, generated, folder: Path) -> list[Path]:
    """The preview grids and the generated grid, copied into ``folder/downloads``."""
    out = folder / "downloads"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    previews = [
        m for m in w.server.channel_messages(w.channel) if m.files and m.embeds
    ]  # the preview grids: the only embeds with files; fmt: skip
    for i, m in enumerate(previews, 1):
        path = out / f"preview-{i}-{m.files[0].filename}"
        path.write_bytes(m.files[0].data)
        paths.append(path)
    path = out / f"generated-{generated.files[0].filename}"
    path.write_bytes(generated.files[0].data)
    return [*paths, path]


def _summary(folder: Path, written: list[Path], seconds: float) -> None:
    """A table of the files written (path, size)."""
    shown = [p for p in written if p.exists() and p.parent.name != "transcript_files"]
    rows = [(str(p.relative_to(folder)), f"{p.stat().st_size:,}") for p in shown]
    extra = [p for p in written if p.exists() and p not in shown]
    if extra:
        size = sum(p.stat().st_size for p in extra)
        rows.append((f"transcript_files/ ({len(extra)} images and files the transcript shows)", f"{size:,}"))
    data = sum(f.stat().st_size for f in (folder / "data").rglob("*") if f.is_file())
    rows.append(("data/ (bot's database, datasets, jobs, tiny model)", f"{data:,}"))
    width = max(len(r[0]) for r in rows)
    print(f"\nDone in {seconds:.0f} s. Files in {folder}:")
    print(f"  {'path'.ljust(width)}  {'bytes':>12}")
    for path, size in rows:
        print(f"  {path.ljust(width)}  {size:>12}")
    print(f"\nOpen {folder / 'transcript.html'} to see the conversation as the member saw it.")
