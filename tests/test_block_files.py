"""Files written with block-wise ranks and alphas: each module keeps its own rank and alpha through
export and import, and the file loads in diffusers and in sd-scripts' loader layout (written here)."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from trainer.contract import TrainJob
from trainer.contract.blocks import network_args

from .conftest import base_job, train_in_process, write_dataset
from .test_block_options import job
from .test_blocks import (
    TINY_OPTIONS,
    lora_modules,
    ref_block,
    ref_block_of_key,
    ref_key,
    tiny_block_options,
    tiny_model,
    unet_modules,
)

# Export / import with per-module ranks ----------------------------------------------------------------


def test_export_import_roundtrip_with_per_module_ranks(request):
    from trainer.blocks import add_unet_lora
    from trainer.kohya import export_state_dict, import_state_dict
    from trainer.lora import add_lora, lora_parameters, text_encoder_target_modules

    options, dims, alphas, _ = tiny_block_options("sd15")
    first = tiny_model(request, "sd15")
    add_unet_lora(first.unet, job(**options), "sd15")
    te = first.text_encoders[0]
    add_lora(te, text_encoder_target_modules(te), 4, 2.0)
    gen = torch.Generator().manual_seed(0)
    for p in lora_parameters(first.unet) + lora_parameters(te):
        p.data = torch.randn(p.shape, generator=gen)
    state = export_state_dict(first.unet, [te], "sd15", torch.float32)

    downs = {
        k.removesuffix(".lora_down.weight"): v for k, v in state.items() if k.endswith(".lora_down.weight")
    }
    names = {ref_key(n, "sd15"): n for n in lora_modules(first.unet)}
    assert {k for k in downs if k.startswith("lora_unet_")} == set(names)
    for key, down in downs.items():
        if key.startswith("lora_te_"):
            assert down.shape[0] == 4 and float(state[f"{key}.alpha"]) == 2.0
            continue
        block = ref_block_of_key(key, "sd15")
        assert down.shape[0] == dims[block]
        assert float(state[f"{key}.alpha"]) == (alphas[block] or dims[block])
        assert state[f"{key}.lora_up.weight"].shape[1] == dims[block]

    # the same ranks: everything comes back
    second = tiny_model(request, "sd15")
    add_unet_lora(second.unet, job(**options), "sd15")
    te2 = second.text_encoders[0]
    add_lora(te2, text_encoder_target_modules(te2), 4, 2.0)
    assert import_state_dict(state, second.unet, [te2], "sd15") == []
    for a, b in zip(lora_parameters(first.unet), lora_parameters(second.unet), strict=True):
        torch.testing.assert_close(a, b)
    assert export_state_dict(second.unet, [te2], "sd15", torch.float32).keys() == state.keys()

    # other alphas, same ranks: the effect (alpha / rank * up @ down) is kept
    other = dict(options, block_alphas=[1.0] * 25)
    third = tiny_model(request, "sd15")
    add_unet_lora(third.unet, job(**other), "sd15")
    assert import_state_dict(state, third.unet, [], "sd15") == []
    for name, layer in lora_modules(third.unet).items():
        key = ref_key(name, "sd15")
        want = float(state[f"{key}.alpha"]) / dims[ref_block(name, "sd15")]
        want = want * state[f"{key}.lora_up.weight"].flatten(1) @ state[f"{key}.lora_down.weight"].flatten(1)
        up, down = layer.lora_B["default"].weight.flatten(1), layer.lora_A["default"].weight.flatten(1)
        got = layer.scaling["default"] * up @ down
        torch.testing.assert_close(got, want)

    # another rank in one block: a problem line naming the module and both ranks
    changed = list(options["block_dims"])
    changed[16] = 5
    fourth = tiny_model(request, "sd15")
    add_unet_lora(fourth.unet, job(**dict(options, block_dims=changed)), "sd15")
    before = [p.detach().clone() for p in lora_parameters(fourth.unet)]
    problems = import_state_dict(state, fourth.unet, [], "sd15")
    assert problems and all(re.fullmatch(r"lora_unet_up_blocks_1_attentions_0_\w+: rank 8 in the file, 5 in the job", p)
                            for p in problems[:5])  # fmt: skip
    assert problems[-1] == f"... and {12 - 5} more"
    for a, b in zip(before, lora_parameters(fourth.unet), strict=True):
        assert torch.equal(a, b)  # nothing copied from a file that does not fit


# End to end (needs trainer/train.py to call blocks.add_unet_lora) -------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_block_job_trains_saves_per_block_ranks_and_loads_in_diffusers_and_sd_scripts_style(
    family, request, tmp_path
):
    import numpy as np
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    model = request.getfixturevalue(f"tiny_{family}")
    options, dims, alphas, weights = tiny_block_options(family)
    spec = dict(base_job(model, write_dataset(tmp_path / "data", count=2), tmp_path / "out"), **options)
    spec.update(learning_rate=1e-2, network_dim=4, network_alpha=2)
    events, code = train_in_process(spec)
    assert code == 0, events[-1]
    path = tmp_path / "out" / "test.safetensors"
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    gone = TINY_OPTIONS[family]["gone"]
    want_unet = {ref_key(n, family): n for n in unet_modules(pipe.unet) if ref_block(n, family) not in gone}
    got_unet = {
        k.removesuffix(".lora_down.weight") for k in state if k.startswith("lora_unet_") and "lora_down" in k
    }
    assert got_unet == set(want_unet)
    assert not any(ref_block_of_key(k, family) in gone for k in state if k.startswith("lora_unet_"))

    # sd-scripts-style loading: dim from lora_down, alpha from .alpha, up (out, dim)
    base = dict(pipe.unet.named_modules())
    deltas = {}
    for key, name in want_unet.items():
        down, up = state[f"{key}.lora_down.weight"].float(), state[f"{key}.lora_up.weight"].float()
        dim, alpha = down.shape[0], float(state[f"{key}.alpha"])
        block = ref_block_of_key(key, family)
        assert dim == dims[block], key
        assert alpha == (alphas[block] or dims[block]), key
        module = base[name]
        out_dim = module.out_features if isinstance(module, torch.nn.Linear) else module.out_channels
        in_dim = module.in_features if isinstance(module, torch.nn.Linear) else module.in_channels
        assert up.shape[:2] == (out_dim, dim) and down.shape[1] == in_dim
        deltas[name] = (alpha / dim) * (up.flatten(1) @ down.flatten(1))
    for key in state:
        if key.startswith("lora_te") and key.endswith(".lora_down.weight"):
            assert state[key].shape[0] == 4 and float(state[key.replace("lora_down.weight", "alpha")]) == 2.0
    assert any(d.abs().max() > 0 for d in deltas.values())  # it trained

    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    import json

    assert json.loads(meta["ss_network_args"]) == network_args(TrainJob.model_validate(spec))

    # diffusers loads the file with the same modules and ranks
    def render():
        return pipe(
            "tkchar, yellow_disc", num_inference_steps=2, height=64, width=64, output_type="np",
            generator=torch.Generator("cpu").manual_seed(7), guidance_scale=1.0,
        ).images[0]  # fmt: skip

    def loaded(adapter):
        return {n: m for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}

    baseline = render()
    pipe.load_lora_weights(str(path), adapter_name="raw")
    raw = loaded("raw")
    assert set(raw) == set(want_unet.values())
    for name, layer in raw.items():
        assert layer.r["raw"] == dims[ref_block(name, family)], name
    pipe.unload_lora_weights()

    # ... and, its alphas made uniform (diffusers 0.42 gives attention projections the file's most
    # common alpha), with sd-scripts' LoRA delta in every module
    from safetensors.torch import load_file

    from trainer.kohya import uniform_alpha

    pipe.load_lora_weights(uniform_alpha(load_file(str(path))), adapter_name="blk")
    folded = loaded("blk")
    assert set(folded) == set(want_unet.values())
    for name, layer in folded.items():
        a, b = layer.lora_A["blk"].weight.float(), layer.lora_B["blk"].weight.float()
        delta = layer.scaling["blk"] * (b.flatten(1) @ a.flatten(1))
        # the folded up weights are rounded to the file's fp16 once more
        torch.testing.assert_close(delta, deltas[name], rtol=0, atol=2e-3 * float(deltas[name].abs().max()))
    assert np.abs(render() - baseline).max() > 0


def test_uniform_alpha_keeps_every_module_s_effect():
    from trainer.kohya import uniform_alpha

    gen = torch.Generator().manual_seed(1)
    state = {}
    for i, (rank, alpha) in enumerate([(4, 2.0), (4, 2.0), (8, 2.0), (2, 0.5), (6, 0.0), (3, 12.0)]):
        state[f"lora_unet_m{i}.lora_down.weight"] = torch.randn(rank, 16, generator=gen).half()
        state[f"lora_unet_m{i}.lora_up.weight"] = torch.randn(32, rank, generator=gen).half()
        state[f"lora_unet_m{i}.alpha"] = torch.tensor(alpha).half()
    out = uniform_alpha(state)
    assert out.keys() == state.keys()
    assert {float(v) for k, v in out.items() if k.endswith(".alpha")} == {2.0}
    for i in range(6):
        down, up = state[f"lora_unet_m{i}.lora_down.weight"], state[f"lora_unet_m{i}.lora_up.weight"]
        rank, alpha = down.shape[0], float(state[f"lora_unet_m{i}.alpha"]) or down.shape[0]
        want = alpha / rank * up.float() @ down.float()
        got = 2.0 / rank * out[f"lora_unet_m{i}.lora_up.weight"].float() @ down.float()
        torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * float(want.abs().max()))  # fp16 again
        assert out[f"lora_unet_m{i}.lora_up.weight"].dtype == torch.float16
    same = {k: v for k, v in state.items() if k.startswith(("lora_unet_m0.", "lora_unet_m1."))}
    assert all(uniform_alpha(same)[k] is v for k, v in same.items())
