"""Cached text-encoder outputs with shuffled caption variants, and the preflight step."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors import safe_open

from trainer.text_cache import CaptionSettings, caption_variants

from .conftest import base_job, train_in_process, write_dataset

CAPTION = "tkchar, yellow_disc, blue_background, simple_background, smile, solo, outdoors"


class Spy:
    """Counts text-encoder calls and records, per UNet call, the calls so far and the embeddings."""

    def __init__(self, monkeypatch):
        import trainer.train as train_mod

        self.te_calls = 0
        self.unet_calls: list[tuple[int, torch.Tensor, int]] = []
        original = train_mod.load_base_model

        def load(*args, **kwargs):
            model = original(*args, **kwargs)
            for te in model.text_encoders:
                te.register_forward_hook(self._on_text)
            model.unet.register_forward_pre_hook(self._on_unet, with_kwargs=True)
            return model

        monkeypatch.setattr(train_mod, "load_base_model", load)

    def _on_text(self, *_):
        self.te_calls += 1

    def _on_unet(self, _module, args, kwargs):
        embeds = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        self.unet_calls.append((self.te_calls, embeds.detach().float().clone(), embeds.shape[0]))


def _meta(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_frozen_text_encoder_is_cached_and_shuffled_captions_still_vary(monkeypatch, tiny_sd15, tmp_path):
    spy = Spy(monkeypatch)
    data = write_dataset(tmp_path / "data", count=1, caption=CAPTION)
    job = base_job(tiny_sd15, data, tmp_path / "out", repeats=8, epochs=2, unet_only=True, caption_variants=4)
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    assert len(spy.unet_calls) == 1 + 16  # the preflight, then 2 epochs of 8 steps
    encoder_calls_before_training = spy.unet_calls[0][0]
    assert encoder_calls_before_training > 0
    assert spy.te_calls == encoder_calls_before_training  # never called once training started
    # One image, yet the steps see several different (shuffled) captions: the variants.
    seen = []
    for _, embeds, _ in spy.unet_calls[1:]:
        if not any(torch.equal(embeds, s) for s in seen):
            seen.append(embeds)
    assert 2 <= len(seen) <= 4
    started = next(e for e in events if e["event"] == "started")
    assert started["cached_text_outputs"] == 4
    meta = _meta(tmp_path / "out" / "test.safetensors")
    assert meta["ss_cache_text_encoder_outputs"] == "True"
    assert meta["ss_cache_text_encoder_outputs_variants"] == "4"
    assert meta["ss_shuffle_caption"] == "True"


def test_trained_text_encoder_is_not_cached(monkeypatch, tiny_sd15, tmp_path):
    spy = Spy(monkeypatch)
    data = write_dataset(tmp_path / "data", count=2, caption=CAPTION)
    job = base_job(tiny_sd15, data, tmp_path / "out", repeats=2)
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    calls = [te for te, _, _ in spy.unet_calls]
    assert calls == sorted(set(calls)) and len(calls) == 1 + 4  # a fresh encoding before every UNet call
    meta = _meta(tmp_path / "out" / "test.safetensors")
    assert meta["ss_cache_text_encoder_outputs"] == "False"
    assert meta["ss_cache_text_encoder_outputs_variants"] == "None"


def test_unshuffled_captions_cache_one_variant(monkeypatch, tiny_sdxl, tmp_path):
    spy = Spy(monkeypatch)
    data = write_dataset(tmp_path / "data", count=2, caption=CAPTION)
    job = base_job(tiny_sdxl, data, tmp_path / "out", repeats=3, unet_only=True, shuffle_tags=False)
    events, code = train_in_process(job)
    assert code == 0, events[-1]
    assert next(e for e in events if e["event"] == "started")["cached_text_outputs"] == 2
    embeds = [e for _, e, _ in spy.unet_calls[1:]]
    assert all(torch.equal(e, embeds[0]) for e in embeds)  # both images share the caption
    assert _meta(tmp_path / "out" / "test.safetensors")["ss_cache_text_encoder_outputs_variants"] == "1"


def test_caption_variants_keep_the_first_tags_and_are_reproducible():
    settings = CaptionSettings(shuffle=True, keep_tokens=2, clip_skip=2)
    first = caption_variants(CAPTION, settings, 6, random.Random("7-caption-0"))
    again = caption_variants(CAPTION, settings, 6, random.Random("7-caption-0"))
    assert first == again and len(first) == len(set(first)) == 6
    for text in first:
        tags = text.split(", ")
        assert tags[:2] == ["tkchar", "yellow_disc"] and sorted(tags) == sorted(CAPTION.split(", "))
    # Two shuffled tags have two orders: asking for more gives those two, not duplicates.
    assert len(caption_variants("a, b, c", settings, 8, random.Random(1))) == 1
    short = CaptionSettings(shuffle=True, keep_tokens=1, clip_skip=2)
    assert sorted(caption_variants("a, b, c", short, 8, random.Random(1))) == ["a, b, c", "a, c, b"]


def test_preflight_out_of_memory_fails_fast_with_what_to_lower(monkeypatch, tiny_sd15, tmp_path):
    import trainer.train as train_mod

    original = train_mod.load_base_model

    def load(*args, **kwargs):
        model = original(*args, **kwargs)

        def too_big(_module, args, kwargs):
            if args[0].shape[0] >= 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.unet.register_forward_pre_hook(too_big, with_kwargs=True)
        return model

    monkeypatch.setattr(train_mod, "load_base_model", load)
    data = write_dataset(tmp_path / "data", count=4)
    job = base_job(tiny_sd15, data, tmp_path / "out", batch_size=4, repeats=2, unet_only=True)
    with pytest.raises(train_mod.TrainError) as err:
        train_in_process(job)
    message = str(err.value)
    assert "out of" in message and "memory" in message and "batch_size to 2" in message
    assert not (tmp_path / "out" / "test.safetensors").exists()
    # The same job at batch 2 fits, and the preflight leaves the job's result untouched.
    ok = base_job(tiny_sd15, data, tmp_path / "ok", batch_size=2, repeats=2, unet_only=True)
    assert train_in_process(ok)[1] == 0


def test_preflight_changes_nothing_the_job_trains(monkeypatch, tiny_sd15, dataset, tmp_path):
    import trainer.train as train_mod

    job = base_job(tiny_sd15, dataset, tmp_path / "a", repeats=2, learning_rate=1e-3)
    assert train_in_process(job)[1] == 0
    monkeypatch.setattr(train_mod, "preflight", lambda run: None)
    assert train_in_process({**job, "output_dir": str(tmp_path / "b")})[1] == 0
    a_path, b_path = (tmp_path / x / "test.safetensors" for x in "ab")
    with safe_open(str(a_path), framework="pt") as a, safe_open(str(b_path), framework="pt") as b:
        assert list(a.keys()) == list(b.keys())
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
