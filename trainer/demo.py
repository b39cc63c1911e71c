"""``python -m trainer demo``: the trainer's whole path offline, on the tiny model.

Builds the tiny SD1.5 model and a small generated dataset, trains 2 epochs through
the real ``train`` process (reading its events as the bot does), then renders the
LoRA at 0.7 / 0.8 / 1.0 through the real ``generate`` process, and lists the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from .contract import parse_event
from .contract.families import DEFAULT_FAMILY, family_label

BACKGROUNDS = {
    "blue": (70, 110, 220),
    "green": (60, 170, 90),
    "pink": (230, 140, 180),
    "white": (245, 245, 245),
}


def write_demo_dataset(folder: Path, size: int = 128) -> Path:
    """Six drawings of one mascot (a yellow face) on several backgrounds, with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        name, color = list(BACKGROUNDS.items())[i % len(BACKGROUNDS)]
        img = Image.new("RGB", (size, size), color)
        draw = ImageDraw.Draw(img)
        r = size // 4 + (i % 3) * size // 24
        cx, cy = size // 2 + (i - 3) * size // 20, size // 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 215, 40), outline=(60, 40, 0), width=2)
        for dx in (-r // 3, r // 3):
            draw.ellipse((cx + dx - 4, cy - r // 3 - 4, cx + dx + 4, cy - r // 3 + 4), fill=(20, 20, 20))
        draw.arc((cx - r // 2, cy - r // 4, cx + r // 2, cy + r // 2), 20, 160, fill=(120, 30, 20), width=3)
        img.save(folder / f"mascot_{i}.png")
        (folder / f"mascot_{i}.txt").write_text(
            f"tkmascot, yellow_face, smile, {name}_background, simple_background"
        )
    return folder


def _stream(args: list[str]) -> list[dict]:
    """Run ``python -m trainer ARGS``, printing its events as progress; return the events."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    events = []
    for line in proc.stdout:
        event = parse_event(line)
        if event is None:
            continue
        events.append(event)
        print("  " + _describe(event), flush=True)
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(
            f"trainer {args[0]} failed: {events[-1].get('message') if events else proc.returncode}"
        )
    return events


def _describe(e: dict) -> str:
    kind = e["event"]
    if kind == "step":
        return (
            f"step {e['step']}/{e['total_steps']}  epoch {e['epoch']}  loss {e['loss']:.4f}  lr {e['lr']:.2e}"
        )
    if kind == "started":
        return f"started: {e['total_steps']} steps, {e.get('total_epochs', 0)} epochs, seed {e.get('seed')}"
    if kind in ("epoch_saved", "preview_ready", "image_ready"):
        return f"{kind}: {e['path']}"
    return (
        f"{kind}: " + json.dumps({k: v for k, v in e.items() if k not in ("event", "schema", "time")})[:300]
    )


def run_demo(out: Path) -> int:
    out = out.resolve()
    model = out / "models" / f"tiny-{DEFAULT_FAMILY}"
    if not (model / "model_index.json").is_file():
        from .tiny import make_tiny

        print(f"building the tiny {family_label(DEFAULT_FAMILY)} model in {model}")
        make_tiny(DEFAULT_FAMILY, model)
    dataset = write_demo_dataset(out / "dataset")
    job = {
        "dataset_dir": str(dataset), "base_model": str(model), "output_dir": str(out / "lora"),
        "output_name": "tkmascot", "repeats": 5, "epochs": 2, "resolution": 128, "learning_rate": 1e-3,
        "optimizer": "AdamW", "mixed_precision": "no", "seed": 42, "preview_steps": 12, "event_every_n_steps": 10,
    }  # fmt: skip
    (out / "train.json").write_text(json.dumps(job, indent=2))
    print("training (2 epochs on 6 images):")
    done = _stream(["train", "--job", str(out / "train.json")])[-1]
    gen = {
        "base_model": str(model), "output_dir": str(out / "generated"), "output_name": "compare",
        "prompt": "tkmascot, yellow_face, smile", "loras": [{"path": done["files"][-1]}],
        "compare_weights": [0.7, 0.8, 1.0], "steps": 12, "width": 128, "height": 128, "seed": 7,
        "mixed_precision": "no",
    }  # fmt: skip
    (out / "generate.json").write_text(json.dumps(gen, indent=2))
    print("generating at weights 0.7 / 0.8 / 1.0:")
    _stream(["generate", "--job", str(out / "generate.json")])
    print(f"\nfiles written under {out}:")
    print(f"  dataset/  ({len(list(dataset.glob('*.png')))} images with captions)")
    for path in sorted(
        p for p in out.rglob("*") if p.is_file() and p.parts[len(out.parts)] not in ("models", "dataset")
    ):
        print(f"  {str(path.relative_to(out)):<40} {_size(path.stat().st_size):>9}")
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} B"
