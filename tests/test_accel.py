"""Speed and memory switches (trainer/accel.py), each against a reference: the same model without
the switch, or diffusers/torch's own classes. Running out of memory: tests/test_out_of_memory.py."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from trainer import accel, lora
from trainer.models import load_base_model, place

from .conftest import base_job, train_in_process

# Helpers -----------------------------------------------------------------------------------------


def lora_model(path, *, text_encoder: bool = False, seed: int = 0):
    """The tiny model (fp32, CPU, frozen) with LoRA on the UNet (and text encoders) whose down AND
    up weights are random: with sd-scripts' zero-initialized up, every down gradient would be 0."""
    model = load_base_model(str(path))
    place(model, torch.device("cpu"), torch.float32)
    torch.manual_seed(seed)
    lora.add_lora(model.unet, lora.unet_target_modules(model.unet), 4, 4)
    if text_encoder:
        for te in model.text_encoders:
            lora.add_lora(te, lora.text_encoder_target_modules(te), 4, 4)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in (model.unet, *model.text_encoders):
        for p in lora.lora_parameters(module):
            p.data = torch.randn(p.shape, generator=gen) * 0.2
    return model


def unet_inputs(unet, height: int = 8, width: int = 8, batch: int = 1, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    cfg = unet.config
    args = (
        torch.randn(batch, cfg.in_channels, height, width, generator=gen),
        torch.tensor([500] * batch),
        torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen),
    )
    added = None
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(batch, pooled, generator=gen),
            "time_ids": torch.tensor([[height * 8, width * 8, 0, 0, height * 8, width * 8]] * batch).float(),
        }
    return args, added


def unet_loss_and_grads(unet, height: int = 8, width: int = 8, batch: int = 1):
    unet.train()
    args, added = unet_inputs(unet, height, width, batch)
    loss = unet(*args, added_cond_kwargs=added).sample.pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}
    unet.zero_grad(set_to_none=True)
    return loss.detach(), grads


def count_calls(modules) -> dict:
    """A call counter on each module. A pre-hook: the backward's recompute stops early, once it has
    the tensors it needs, so the end of a recomputed call (a forward hook) may never come."""
    calls = dict.fromkeys(modules, 0)
    for m in modules:
        m.register_forward_pre_hook(lambda module, _: calls.__setitem__(module, calls[module] + 1))
    return calls


def assert_same_grads(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and got
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name
    assert all(g.abs().sum() > 0 for g in got.values()), "every LoRA weight gets a gradient"


# Gradient checkpointing ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_gradient_checkpointing_keeps_unet_lora_grads_and_recomputes(family, tiny_sd15, tiny_sdxl):
    path = tiny_sd15 if family == "sd15" else tiny_sdxl
    plain, ckpt = lora_model(path), lora_model(path)
    accel.enable_gradient_checkpointing(ckpt.unet, ckpt.text_encoders, trains_text_encoder=False)
    assert not any(getattr(te, "gradient_checkpointing", False) for te in ckpt.text_encoders)

    blocks = [m for m in ckpt.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(
        m.gradient_checkpointing for m in ckpt.unet.modules() if type(m).__name__ == "Transformer2DModel"
    )
    calls = count_calls(blocks)
    want_loss, want = unet_loss_and_grads(plain.unet)
    got_loss, got = unet_loss_and_grads(ckpt.unet)
    # each block ran in the forward and once more in the backward (its activations were not kept)
    assert list(calls.values()) == [2] * len(blocks)
    assert torch.allclose(got_loss, want_loss, rtol=1e-5)
    assert_same_grads(got, want)
    assert got.keys() == {n for n, p in ckpt.unet.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in got)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_gradient_checkpointing_keeps_text_encoder_lora_grads(family, tiny_sd15, tiny_sdxl):
    from trainer.text import encode_texts

    path = tiny_sd15 if family == "sd15" else tiny_sdxl
    plain, ckpt = lora_model(path, text_encoder=True), lora_model(path, text_encoder=True)
    accel.enable_gradient_checkpointing(ckpt.unet, ckpt.text_encoders, trains_text_encoder=True)
    mlps = [
        te.get_submodule(n) for te in ckpt.text_encoders for n, _ in te.named_modules() if n.endswith("mlp")
    ]
    calls = count_calls(mlps)

    def loss_and_grads(model):
        for te in model.text_encoders:
            te.train()
        cond = encode_texts(
            family,
            model.text_encoders,
            model.tokenizers,
            ["tkchar, yellow_disc", "blue"],
            1,
            torch.device("cpu"),
        )
        loss = cond.embeds.pow(2).mean() + (cond.pooled.pow(2).mean() if cond.pooled is not None else 0)
        loss.backward()
        grads = {
            f"{i}.{n}": p.grad.clone()
            for i, te in enumerate(model.text_encoders)
            for n, p in te.named_parameters()
            if p.grad is not None  # SDXL's first encoder: its last layer is past the embeddings used
        }
        return loss.detach(), grads

    want_loss, want = loss_and_grads(plain)
    got_loss, got = loss_and_grads(ckpt)
    # every encoder layer the loss reaches ran again in the backward (SDXL's first encoder's last layer,
    # past the hidden state used, has no backward)
    reached = {m: m.fc1.lora_A["default"].weight.grad is not None for m in mlps}
    assert sum(reached.values()) >= len(mlps) - 1
    assert calls == {m: 2 if reached[m] else 1 for m in mlps}
    assert torch.allclose(got_loss, want_loss, rtol=1e-5)
    assert_same_grads(got, want)


def test_gradient_checkpointing_option_trains_the_same_lora(tiny_sd15, dataset, tmp_path):
    """End to end: a job with gradient_checkpointing writes the same LoRA as one without."""
    from safetensors.torch import load_file

    files = []
    for name, on in (("plain", False), ("ckpt", True)):
        job = base_job(tiny_sd15, dataset, tmp_path / name, gradient_checkpointing=on, learning_rate=1e-3)
        assert train_in_process(job)[1] == 0
        files.append(load_file(tmp_path / name / "test.safetensors"))
    assert files[0].keys() == files[1].keys()
    for key in files[0]:
        assert torch.allclose(files[0][key].float(), files[1][key].float(), rtol=1e-3, atol=1e-5), key


# SDPA attention --------------------------------------------------------------------------------------


def test_use_sdpa_switches_plain_attention_and_keeps_lora(tiny_sd15):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    model = lora_model(tiny_sd15)
    unet = model.unet.eval()
    unet.set_attn_processor(AttnProcessor())  # the pre-SDPA math, as a reference
    layers = dict(lora.lora_layers(unet))
    params = {n: p for n, p in unet.named_parameters()}
    args, added = unet_inputs(unet)
    with torch.no_grad():
        want = unet(*args, added_cond_kwargs=added).sample

    text = accel.use_sdpa(unet)
    assert "switched to torch SDPA" in text
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    assert dict(lora.lora_layers(unet)) == layers
    assert all(p is params[n] for n, p in unet.named_parameters())
    with torch.no_grad():
        got = unet(*args, added_cond_kwargs=added).sample
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_use_sdpa_leaves_sdpa_and_custom_processors(tiny_sdxl):
    from diffusers.models.attention_processor import AttnProcessor2_0

    class Custom(AttnProcessor2_0):
        pass

    unet = lora_model(tiny_sdxl).unet
    procs = unet.attn_processors
    first = next(iter(procs))
    unet.set_attn_processor({n: Custom() if n == first else p for n, p in procs.items()})
    before = unet.attn_processors
    assert "unchanged" in accel.use_sdpa(unet)
    assert all(unet.attn_processors[n] is p for n, p in before.items())


# torch.compile ---------------------------------------------------------------------------------------


@pytest.fixture
def compile_log(caplog):
    caplog.set_level(logging.DEBUG, logger="test.accel")
    return logging.getLogger("test.accel"), caplog


@pytest.fixture
def dynamo_limit():
    """The name of dynamo's recompile limit; its value is restored after the test (monkeypatch
    cannot: the old name is an alias of the new one)."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    saved = getattr(config, name)
    yield name
    setattr(config, name, saved)


@pytest.mark.parametrize(
    ("enabled", "device", "steps", "triton", "reason"),
    [
        (False, "cuda", 5000, True, "compile_unet is off"),
        (True, "cpu", 5000, True, "needs a CUDA GPU"),
        (True, "cuda", 5000, False, "triton is not installed"),
        (True, "cuda", accel.MIN_COMPILE_STEPS - 1, True, f"from {accel.MIN_COMPILE_STEPS} steps"),
    ],
)
def test_maybe_compile_skips_and_says_why(enabled, device, steps, triton, reason, monkeypatch, compile_log):
    log, caplog = compile_log
    monkeypatch.setattr(accel, "triton_available", lambda: triton)

    class Spy(torch.nn.Linear):
        def compile(self, *a, **k):  # pragma: no cover - must not run
            raise AssertionError("compiled")

    assert (
        accel.maybe_compile(
            Spy(2, 2), enabled=enabled, device=torch.device(device), total_steps=steps, log=log
        )
        is False
    )
    assert reason in caplog.text
    assert any(r.levelno == (logging.WARNING if enabled else logging.DEBUG) for r in caplog.records)


def test_maybe_compile_compiles_in_place_keeping_names(monkeypatch, tiny_sd15, compile_log, dynamo_limit):
    log, caplog = compile_log
    monkeypatch.setattr(accel, "compile_skip_reason", lambda *a: None)  # as on a long CUDA job
    unet = lora_model(tiny_sd15).unet
    names = {n: p for n, p in unet.named_parameters()}
    keys = list(unet.state_dict())
    layers = [n for n, _ in lora.lora_layers(unet)]
    calls = []
    real = unet.compile
    monkeypatch.setattr(unet, "compile", lambda *a, **k: (calls.append(k), real(*a, **k)))

    assert accel.maybe_compile(unet, enabled=True, device=torch.device("cuda"), total_steps=5000, log=log)
    assert calls == [{"backend": "inductor", "dynamic": None}]
    assert unet._compiled_call_impl is not None  # lazily compiled at the first call: not run here
    assert {n: p for n, p in unet.named_parameters()} == names
    assert all(p is names[n] for n, p in unet.named_parameters())
    assert list(unet.state_dict()) == keys and [n for n, _ in lora.lora_layers(unet)] == layers
    assert getattr(torch._dynamo.config, dynamo_limit) == accel.COMPILE_RECOMPILE_LIMIT
    assert "compiles at its first step" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RUN_COMPILE_TESTS"),
    reason="a real torch.compile takes about 4 minutes on a 2-core CPU: RUN_COMPILE_TESTS=1 runs it",
)
def test_compiled_unet_trains_like_eager_across_buckets(monkeypatch, tiny_sd15, compile_log, dynamo_limit):
    """A real compile (aot_eager: no C compiler needed) over LoRA + checkpointing: same loss and LoRA
    gradients as eager on two bucket shapes, and previews (accel.eager) run without compiling."""
    import torch._dynamo

    log, _ = compile_log
    monkeypatch.setattr(accel, "compile_skip_reason", lambda *a: None)
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "aot_eager")
    eager, compiled = lora_model(tiny_sd15), lora_model(tiny_sd15)
    for m in (eager, compiled):
        accel.enable_gradient_checkpointing(m.unet, m.text_encoders, trains_text_encoder=False)
    torch._dynamo.reset()
    try:
        assert accel.maybe_compile(
            compiled.unet, enabled=True, device=torch.device("cuda"), total_steps=5000, log=log
        )
        graphs = []
        for batch, h, w in ((1, 8, 8), (1, 8, 16), (1, 16, 8), (1, 24, 8), (1, 8, 24), (2, 8, 16)):
            want_loss, want = unet_loss_and_grads(eager.unet, h, w, batch)
            got_loss, got = unet_loss_and_grads(compiled.unet, h, w, batch)
            assert torch.allclose(got_loss, want_loss, rtol=1e-4)
            assert_same_grads(got, want)
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        # the first change of the width, of the height, of the batch compiled once more each; other
        # buckets reuse the shape-generic graph
        first = graphs[0]
        assert graphs == [first, first + 1, first + 2, first + 2, first + 2, first + 3]
        assert graphs[-1] <= accel.COMPILE_RECOMPILE_LIMIT
        assert accel.is_compiled(compiled.unet) and not accel.is_compiled(eager.unet)
        with accel.eager(compiled.unet), torch.no_grad():
            compiled.unet.eval()(*unet_inputs(compiled.unet, 12, 12)[0])
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs[-1]
    finally:
        torch._dynamo.reset()


# The wiring in trainer/train.py ----------------------------------------------------------------------------


def test_job_switches_reach_the_model(monkeypatch, tiny_sd15, dataset, tmp_path, caplog):
    """gradient_checkpointing reaches the UNet and the trained text encoder, SDPA is checked, and
    compile_unet on a CPU says why it is skipped."""
    from diffusers import UNet2DConditionModel
    from transformers import PreTrainedModel

    checkpointed = []
    for cls, name in (
        (UNet2DConditionModel, "enable_gradient_checkpointing"),
        (PreTrainedModel, accel.text_checkpointing_method(PreTrainedModel)),
    ):
        real = getattr(cls, name)

        def spy(self, *args, _real=real, **kwargs):
            checkpointed.append(type(self).__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    sdpa = []
    real_sdpa = accel.use_sdpa
    monkeypatch.setattr(
        accel, "use_sdpa", lambda unet: (sdpa.append(type(unet).__name__), real_sdpa(unet))[1]
    )
    caplog.set_level(logging.INFO)
    job = base_job(tiny_sd15, dataset, tmp_path / "on", gradient_checkpointing=True, compile_unet=True)
    assert train_in_process(job)[1] == 0
    assert sorted(checkpointed) == ["CLIPTextModel", "UNet2DConditionModel"]
    assert sdpa == ["UNet2DConditionModel"]
    assert "torch.compile skipped: it needs a CUDA GPU" in caplog.text

    checkpointed.clear()
    job = base_job(tiny_sd15, dataset, tmp_path / "te", gradient_checkpointing=True, unet_only=True)
    assert train_in_process(job)[1] == 0
    assert checkpointed == ["UNet2DConditionModel"]  # a frozen text encoder has no backward
    checkpointed.clear()
    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "off"))[1] == 0
    assert checkpointed == []


def test_latents_can_wait_on_the_host(monkeypatch, tiny_sd15, dataset, tmp_path):
    """When the latents do not fit next to the training step they stay on the host and move per batch:
    the same LoRA comes out."""
    from safetensors.torch import load_file

    placed = []
    real_place = accel.place_latent

    def place_latent(t, device, on_device):
        placed.append(on_device)
        return real_place(t, device, on_device)

    monkeypatch.setattr(accel, "place_latent", place_latent)
    common = dict(batch_size=2, repeats=2, learning_rate=1e-3)
    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "a", **common))[1] == 0
    assert all(placed)  # on the device, if placed at all
    placed.clear()
    monkeypatch.setattr(accel, "latents_on_device", lambda total, device: False)
    assert train_in_process(base_job(tiny_sd15, dataset, tmp_path / "b", **common))[1] == 0
    assert placed == [False] * 4
    a, b = load_file(tmp_path / "a" / "test.safetensors"), load_file(tmp_path / "b" / "test.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
