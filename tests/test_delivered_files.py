"""Every file the trainer hands over (epoch files, the final copy, previews, generated images) is
readable, 0644, whatever the umask and safetensors' own 0600."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from .conftest import base_job, train_in_process, write_dataset


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def strict_umask():
    """A umask that would make new files 0600; restored afterwards."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.slow
def test_epoch_files_the_final_copy_previews_and_images_are_0644(tiny_sd15, tmp_path, strict_umask):
    from trainer.contract import GenerateJob
    from trainer.events import EventWriter, StopFlag
    from trainer.generate import run_generate

    data = write_dataset(tmp_path / "data", count=2)
    out = tmp_path / "out"
    events, code = train_in_process(base_job(tiny_sd15, data, out, epochs=2, previews=True))
    assert code == 0
    delivered = {e["path"] for e in events if e["event"] in ("epoch_saved", "preview_ready")}
    delivered |= set(events[-1]["files"])  # the epoch files and the final copy
    assert len(delivered) == 5 and str(out / "test.safetensors") in delivered
    stream = io.StringIO()
    job = {"base_model": str(tiny_sd15), "output_dir": str(tmp_path / "gen"), "prompt": "tkchar",
           "steps": 2, "width": 64, "height": 64, "count": 2, "seed": 1}  # fmt: skip
    assert run_generate(GenerateJob.model_validate(job), EventWriter(stream), StopFlag()) == 0
    images = json.loads(stream.getvalue().splitlines()[-1])["files"]
    assert len(images) == 3  # two images and their grid
    modes = {p: _mode(p) for p in [*delivered, *images]}
    assert set(modes.values()) == {0o644}, modes
    leftovers = [p.name for p in (*out.iterdir(), *(tmp_path / "gen").iterdir()) if p.name.endswith(".tmp")]
    assert leftovers == []
    (tmp_path / "plain").write_text("x")
    assert _mode(tmp_path / "plain") == 0o600  # the umask was in force


def test_a_lora_file_and_an_image_written_alone_are_0644(tmp_path, strict_umask):
    import torch
    from PIL import Image

    from trainer import delivered, metadata

    metadata.save_lora(tmp_path / "a.safetensors", {"w": torch.zeros(2)}, {"ss_x": "1"})
    delivered.save_image(Image.new("RGB", (4, 4)), tmp_path / "a.png")
    assert _mode(tmp_path / "a.safetensors") == _mode(tmp_path / "a.png") == 0o644
    assert Image.open(tmp_path / "a.png").format == "PNG"
