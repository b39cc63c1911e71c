"""The guide's flow, step by step, as a newcomer does it in Discord; prints one line per step."""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path

from ..i18n import Messages, messages
from ..loopback import RecordedMessage, Upload
from .samples import sample_files
from .world import DemoError, World

#: Options for a fast run on the tiny model (saved as the preset "fast").
FAST = "mixed_precision=no, optimizer=AdamW, preview_steps=2, network_dim=4, network_alpha=2, repeats=1, resolution=64"
DATASET, TRIGGER = "mascot", "tkmascot"
#: What the bot says that the script waits for (message ids: the member's language finds them).
QUEUED = (
    "✅ Queued **job #{job}**: {steps} steps for {cost} stamina. Its progress message and preview grids "
    "will appear in this channel; follow it in /queue."
)
DONE = "job #{job} ({title}) is done: pick an epoch with `/epochs job:{job}`."


def _t(w: World) -> Messages:
    return messages(w.locale)


def fixed_part(t: Messages, msgid: str) -> str:
    """The translated message's text before its first placeholder (what a label starts with)."""
    names = {name for _, name, _, _ in string.Formatter().parse(msgid) if name}
    marked = t(msgid, **dict.fromkeys(names, "\x00"))
    return marked.split("\x00")[0].strip() or marked.replace("\x00", "").strip()


def say(text: str) -> None:
    """One progress line."""
    print(text, flush=True)


async def make_dataset(w: World, base_model: str) -> None:
    """Steps 1-4: create, upload, auto-tag, and remove a tag with the select menu."""
    inter = await w.slash("dataset new", {"name": DATASET, "base_model": base_model, "trigger": TRIGGER,
                                          "crop_mode": "center", "crop_size": "256x256"})  # fmt: skip
    say(f"[1] /dataset new → {_first_line(await w.reply(inter, timeout=120))}")
    files = {k: Upload(name, data) for k, (name, data) in sample_files(7).items()}
    inter = await w.slash("upload", {"dataset": DATASET, **files})
    report = await w.reply(inter, timeout=120, final=True)
    say(f"[2] /upload 7 drawings → {report.embeds[0].get('title', '')} (auto-tagged)")
    inter = await w.slash("tags view", {"dataset": DATASET})
    view = await w.reply(inter)
    say(f"[3] /tags view → {view.embeds[0].get('title', '') if view.embeds else _first_line(view)}")
    inter = await w.slash("tags remove", {"dataset": DATASET})
    menu = await w.reply(inter)
    select = next(c for row in menu.components for c in row["components"] if c["type"] == 3)
    option = next((o for o in select["options"] if o["label"] != TRIGGER), select["options"][0])
    await w.click(menu, "", values=[option["value"]])
    await w.click(menu, _t(w)("Remove {n} tag(s)", n=1))
    await w.click(menu, _t(w)("Remove"))
    say(f"[4] /tags remove (select menu) → {_first_line(menu)}")


async def start_training(w: World) -> int:
    """Step 5: a preset, the cost estimate, the Start button; returns the job id."""
    inter = await w.slash("preset save", {"name": "fast", "options": FAST})
    say(f"[5] /preset save fast → {_first_line(await w.reply(inter))}")
    inter = await w.slash("train", {"dataset": DATASET, "preset": "fast", "epochs": 2})
    estimate = await w.reply(inter)
    fields = (
        {f["name"]: f["value"] for f in (estimate.embeds[0].get("fields") or [])} if estimate.embeds else {}
    )
    cost = re.search(r"\*\*(\d+)\*\*", str(fields))
    say(f"[6] /train → estimate: {cost.group(1) if cost else '?'} stamina; clicking Start")
    await w.click(estimate, fixed_part(_t(w), "Start ({cost} stamina)"))
    queued = fixed_part(_t(w), QUEUED)
    await w.wait_message(lambda m: m is estimate and queued in m.content, 30, "queue confirmation")
    found = re.search(r"#(\d+)", estimate.content)
    if not found:
        raise DemoError(f"unexpected answer to Start: {_first_line(estimate)}")
    say(f"[7] queued → {_first_line(estimate)}")
    return int(found.group(1))


async def watch_training(w: World, job_id: int, timeout: float = 300) -> None:
    """Steps 6-7: live progress (from the job row the progress message shows) and the preview grids."""
    loop = asyncio.get_running_loop()
    deadline, seen, grids = loop.time() + timeout, None, set()
    user = w.member.user_id
    while loop.time() < deadline:
        job = await w.services.queue.job(user, job_id)
        now = (job.state, job.step, job.epoch)
        if now != seen:
            seen = now
            loss = f", loss {job.loss:.4f}" if job.loss is not None else ""
            epochs = job.spec.get("epochs", "?")
            say(
                f"    training: {job.state}, step {job.step}/{job.total_steps}, epoch {job.epoch}/{epochs}{loss}"
            )
        for m in w.server.channel_messages(w.channel):
            if m.files and m.embeds and m.id not in grids:  # the preview grids (the only embeds with files)
                grids.add(m.id)
                say(f"    preview grid posted: {m.embeds[0]['title']} ({m.files[0].filename})")
        if job.finished:
            if job.state != "done":
                raise DemoError(f"training job #{job_id} ended {job.state}: {job.error or 'see /queue'}")
            break
        await asyncio.sleep(0.1)
    else:
        raise DemoError(f"training job #{job_id} did not finish in {timeout:.0f} s")
    done = _t(w)(DONE, job=job_id, title=DATASET)
    await w.wait_message(lambda m: done in m.content, 60, "done message")
    say(f"[8] job #{job_id} done; the bot mentioned the member")


async def pick_epoch(w: World, job_id: int, out: Path) -> Path:
    """Step 8: /epochs, download the last epoch, save it to the library; returns the downloaded file."""
    inter = await w.slash("epochs", {"job": str(job_id)})
    pager = await w.reply(inter)
    download = await w.click(pager, _t(w)("Download e{epoch}", epoch=2))
    lora = next((f for f in (await w.reply(download)).files if f.filename.endswith(".safetensors")), None)
    if lora is None:
        raise DemoError("the Download button gave no .safetensors file")
    path = out / "downloads" / lora.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lora.data)
    say(f"[9] /epochs → Download e2 → {path} ({len(lora.data):,} bytes)")
    save = await w.click(pager, _t(w)("Save e{epoch}", epoch=2))
    if save.modal is None:
        raise DemoError(f"Save e2 opened no form: {_first_line(await w.reply(save))}")
    saved = await w.reply(await w.submit(save))
    say(f"[10] Save e2 → {_first_line(saved)}")
    return path


async def generate(w: World) -> RecordedMessage:
    """Step 9: /generate with compare_weights 0.7,0.8,1.0; returns the posted grid message."""
    loras = await w.services.library.list(w.member.user_id)
    if not loras:
        raise DemoError("the library is empty after saving")
    inter = await w.slash("generate", {"prompt": f"{TRIGGER}, smile", "lora": loras[0].name, "steps": 2,
                                       "size": "64", "compare_weights": "0.7,0.8,1.0"})  # fmt: skip
    first = await w.reply(inter)
    found = re.search(r"#(\d+)", first.content)
    if not found:
        raise DemoError(f"/generate was refused: {_first_line(first)}")
    gen_id = found.group(1)
    posted = await w.wait_message(
        lambda m: f"#{gen_id} ·" in m.content and bool(m.files), 180, "generated grid"
    )
    say(f"[11] /generate compare_weights 0.7,0.8,1.0 → {posted.files[0].filename}")
    return posted


def _first_line(message: RecordedMessage) -> str:
    """The message's first line of text (content, else its first embed's title)."""
    text = message.content or (message.embeds[0].get("title", "") if message.embeds else "")
    return (text.strip().splitlines() or [""])[0].replace("**", "")[:120]
