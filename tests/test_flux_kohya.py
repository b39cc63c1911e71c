"""Flux.1 LoRA files in sd-scripts' naming: the names sd-scripts writes, the delta W a ComfyUI-style
loader reads (equal to the trained one), exact round trips for our export and for sd-scripts' own
layout, and diffusers' kohya-Flux converter at full size on the meta device."""

from __future__ import annotations

import re

import pytest
import torch

from trainer.flux_kohya import export_flux_state_dict, flux_target_modules, import_flux_state_dict
from trainer.lora import (
    ADAPTER,
    add_lora,
    find_target_modules,
    lora_alpha,
    lora_down_up,
    lora_layers,
    lora_parameters,
    lora_rank,
    text_encoder_target_modules,
)

TINY = {
    "in_channels": 16, "num_layers": 2, "num_single_layers": 2, "attention_head_dim": 16,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 4, 8),
}  # fmt: skip
# BFL's module paths (flux/model.py, as sd-scripts' library/flux_models.py) -> the diffusers modules
# they fuse, in row order: written out here from ComfyUI's comfy/utils.py flux_to_diffusers, apart
# from the module under test. sd-scripts' key is lora_unet_ + the BFL path with "." -> "_".
REF_DOUBLE = {
    "img_attn.qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
    "img_attn.proj": ["attn.to_out.0"],
    "img_mlp.0": ["ff.net.0.proj"],
    "img_mlp.2": ["ff.net.2"],
    "img_mod.lin": ["norm1.linear"],
    "txt_attn.qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    "txt_attn.proj": ["attn.to_add_out"],
    "txt_mlp.0": ["ff_context.net.0.proj"],
    "txt_mlp.2": ["ff_context.net.2"],
    "txt_mod.lin": ["norm1_context.linear"],
}
REF_SINGLE = {
    "linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
    "linear2": ["proj_out"],
    "modulation.lin": ["norm.linear"],
}
TENSORS = r"\.(lora_down\.weight|lora_up\.weight|alpha)$"
UNET_KEY = re.compile(
    r"^lora_unet_(double_blocks_\d+_(img|txt)_(attn_qkv|attn_proj|mlp_0|mlp_2|mod_lin)"
    r"|single_blocks_\d+_(linear1|linear2|modulation_lin))" + TENSORS
)
TE_KEY = re.compile(
    r"^lora_te1_text_model_encoder_layers_\d+_(self_attn_(q|k|v|out)_proj|mlp_fc[12])" + TENSORS
)
# Per-part ranks and alphas that differ inside fused modules: block-diagonal ups of unequal blocks.
ODD_RANKS = {"transformer_blocks.0.attn.to_k": (2, 3.0), "single_transformer_blocks.1.proj_mlp": (3, 1.0)}


def ref_modules(num_double: int, num_single: int) -> dict[str, list[str]]:
    out = {}
    for kind, count, table, diffusers in [
        ("double_blocks", num_double, REF_DOUBLE, "transformer_blocks"),
        ("single_blocks", num_single, REF_SINGLE, "single_transformer_blocks"),
    ]:
        for i in range(count):
            for bfl, parts in table.items():
                key = "lora_unet_" + f"{kind}.{i}.{bfl}".replace(".", "_")
                out[key] = [f"{diffusers}.{i}.{p}" for p in parts]
    return out


def tiny_flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(**TINY)


def tiny_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    return CLIPTextModel(config)


def lora_flux(dim: int = 4, alpha: float = 2.0, ranks=None, seed: int | None = 0, te: bool = True):
    """A tiny Flux (and CLIP-L) with sd-scripts' default LoRA targets; random nonzero ups unless seed is None."""
    transformer, clip = tiny_flux(), tiny_clip()
    add_lora(transformer, flux_target_modules(transformer), dim, alpha, ranks)
    add_lora(clip, text_encoder_target_modules(clip), dim, alpha)
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        for p in lora_parameters(transformer) + lora_parameters(clip):
            p.data = torch.randn(p.shape, generator=gen)
    return transformer, [clip] if te else []


def deltas(model) -> dict[str, torch.Tensor]:
    """Module name -> alpha / rank * up @ down of every LoRA layer."""
    out = {}
    for name, layer in lora_layers(model):
        down, up = lora_down_up(layer)
        out[name] = (lora_alpha(layer) / lora_rank(layer)) * up.detach() @ down.detach()
    return out


def ref_load(state, transformer, clip) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The file's delta W per diffusers module, as ComfyUI reads it: alpha / rank * up @ down per key,
    split into the fused modules by the model's own output widths."""
    unet_map = ref_modules(len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))
    te_map = {"lora_te1_text_model_" + n.replace(".", "_"): n for n, _ in clip.named_modules() if n}
    unet, te = {}, {}
    for key in {k.split(".")[0] for k in state}:
        down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
        delta = float(state[f"{key}.alpha"]) / down.shape[0] * up @ down
        if key in te_map:
            te[te_map[key]] = delta
            continue
        names = unet_map[key]  # KeyError: a key the loader cannot map
        widths = [transformer.get_submodule(n).out_features for n in names]
        unet.update(zip(names, torch.split(delta, widths), strict=True))
    return unet, te


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=lambda m, n=name: f"{n}: {m}")


# Names -----------------------------------------------------------------------------------------------


def test_default_targets_are_every_linear_of_both_block_kinds():
    transformer = tiny_flux()
    targets = flux_target_modules(transformer)
    linears = find_target_modules(transformer, ("FluxTransformerBlock", "FluxSingleTransformerBlock"))
    assert targets == linears  # modulation (norm1.linear, norm.linear) included, as in sd-scripts
    assert len(targets) == 2 * 14 + 2 * 6
    assert all(t.startswith("transformer_blocks.") for t in flux_target_modules(transformer, "double"))
    assert all(t.startswith("single_") for t in flux_target_modules(transformer, "single"))
    with pytest.raises(ValueError, match="train_blocks"):
        flux_target_modules(transformer, "some")


def test_export_names_and_a_comfyui_style_loader_reads_the_trained_delta():
    transformer, (clip,) = lora_flux(ranks=ODD_RANKS)
    state = export_flux_state_dict(transformer, [clip], torch.float32)
    assert all(UNET_KEY.match(k) or TE_KEY.match(k) for k in state), [
        k for k in state if not (UNET_KEY.match(k) or TE_KEY.match(k))
    ]
    te_keys = {k.split(".")[0] for k in state if k.startswith("lora_te1_")}
    assert {k.split(".")[0] for k in state} - te_keys == set(ref_modules(2, 2))
    assert len(te_keys) == 2 * 6
    # fused modules: rank = the parts' sum, ups block-diagonal (diffusers and sd-scripts test that)
    assert state["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == (4 + 2 + 4, 32)
    assert state["lora_unet_single_blocks_1_linear1.lora_up.weight"].shape == (3 * 32 + 128, 4 * 3 + 3)
    assert state["lora_unet_double_blocks_1_txt_attn_qkv.alpha"] == 2.0 / 4 * 12
    unet, te = ref_load(state, transformer, clip)
    assert_same(unet, deltas(transformer))
    assert_same(te, deltas(clip))


@pytest.fixture(scope="module")
def full_size():
    """The real Flux.1 transformer on the meta device with the default targets at rank 1, its LoRA
    weights real (small) random tensors so that the exporter can write them."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        transformer = FluxTransformer2DModel(guidance_embeds=True)  # dev; the config's defaults are Flux.1's
    add_lora(transformer, flux_target_modules(transformer), 1, 1.0)
    gen = torch.Generator().manual_seed(0)
    for _, layer in lora_layers(transformer):
        for linear in (layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]):
            linear.weight = torch.nn.Parameter(torch.randn(linear.weight.shape, generator=gen) * 0.1)
    clip = tiny_clip()
    add_lora(clip, text_encoder_target_modules(clip), 1, 1.0)
    return transformer, clip, export_flux_state_dict(transformer, [clip], torch.float32)


def test_full_size_key_set_is_sd_scripts(full_size):
    transformer, _, state = full_size
    assert next(transformer.parameters()).device.type == "meta"
    unet_keys = {k.split(".")[0] for k in state if k.startswith("lora_unet_")}
    assert unet_keys == set(ref_modules(19, 38))
    assert len(unet_keys) == 19 * 10 + 38 * 3
    assert state["lora_unet_single_blocks_37_linear1.lora_up.weight"].shape == (3 * 3072 + 12288, 4)


def test_diffusers_converter_maps_every_key_at_full_size(full_size):
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    transformer, clip, state = full_size
    converted = _convert_kohya_flux_lora_to_diffusers(dict(state))  # raises on a key it cannot place
    modules = dict(transformer.named_modules())
    unet = {k.removeprefix("transformer."): v for k, v in converted.items() if k.startswith("transformer.")}
    names = {k.rsplit(".lora_", 1)[0] for k in unet}
    assert names == set(flux_target_modules(transformer)) and names <= modules.keys()
    # its lora_B @ lora_A (alpha folded in) is the trained delta W: checked on a random input
    x = torch.randn(15360)
    for name, layer in lora_layers(transformer):
        a, b = unet[f"{name}.lora_A.weight"], unet[f"{name}.lora_B.weight"]
        down, up = lora_down_up(layer)
        want = lora_alpha(layer) / lora_rank(layer) * up.detach() @ (down.detach() @ x[: down.shape[1]])
        torch.testing.assert_close(b @ (a @ x[: a.shape[1]]), want)
    # text encoder keys go where diffusers' Flux loader puts them (diffusers and peft names)
    te = {k.removeprefix("text_encoder."): v for k, v in converted.items() if k.startswith("text_encoder.")}
    te = convert_state_dict_to_peft(convert_state_dict_to_diffusers(te))
    te_names = {k.removeprefix("text_model.").rsplit(".lora_", 1)[0] for k in te}
    assert te_names == {n for n, _ in lora_layers(clip)}
    assert len(converted) == 2 * (len(names) + len(te_names))


# Import ----------------------------------------------------------------------------------------------


def test_round_trip_is_exact_with_other_alphas():
    transformer, tes = lora_flux(ranks=ODD_RANKS)
    state = export_flux_state_dict(transformer, tes, torch.float32)
    # the job's alphas differ (scale folded into the ups on import): the delta W does not
    other_ranks = {k: (r, a + 1) for k, (r, a) in ODD_RANKS.items()}
    fresh, fresh_tes = lora_flux(alpha=1.0, ranks=other_ranks, seed=None)
    assert import_flux_state_dict(state, fresh, fresh_tes) == []
    assert_same(deltas(fresh), deltas(transformer))
    assert_same(deltas(fresh_tes[0]), deltas(tes[0]))
    again = export_flux_state_dict(fresh, fresh_tes, torch.float32)
    assert again.keys() == state.keys()
    assert_same(ref_load(again, fresh, fresh_tes[0])[0], ref_load(state, transformer, tes[0])[0])


def sd_scripts_file(rank: int, alpha: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """A file as sd-scripts trains it: one down per fused module, shared by q, k, v (and MLP)."""
    reference = tiny_flux()
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, names in ref_modules(2, 2).items():
        modules = [reference.get_submodule(n) for n in names]
        rows = sum(m.out_features for m in modules)
        state[f"{key}.lora_down.weight"] = torch.randn(rank, modules[0].in_features, generator=gen)
        state[f"{key}.lora_up.weight"] = torch.randn(rows, rank, generator=gen)
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def test_sd_scripts_layout_imports_exactly():
    state = sd_scripts_file(rank=4, alpha=3.0)
    fresh, _ = lora_flux(seed=None, te=False)
    assert import_flux_state_dict(state, fresh, []) == []
    assert_same(deltas(fresh), ref_load(state, fresh, tiny_clip())[0])


def test_misfits_are_problems_and_change_nothing(caplog):
    transformer, tes = lora_flux()
    state = export_flux_state_dict(transformer, tes, torch.float32)
    fresh, fresh_tes = lora_flux(dim=8, seed=2)
    before = [p.detach().clone() for p in lora_parameters(fresh) + lora_parameters(fresh_tes[0])]
    problems = import_flux_state_dict(state, fresh, fresh_tes)
    assert problems[0] == "lora_te1_text_model_encoder_layers_0_mlp_fc1: rank 4 in the file, 8 in the job"
    assert (
        "lora_unet_double_blocks_0_img_attn_qkv: rank 12 in the file, 8 (shared) or 24 (block-diagonal) in the job"
        in import_flux_state_dict({k: v for k, v in state.items() if "img_attn_qkv" in k}, fresh, fresh_tes)
    )
    assert len(problems) == 6 and problems[-1] == f"... and {12 + 26 - 5} more"
    for a, b in zip(before, lora_parameters(fresh) + lora_parameters(fresh_tes[0]), strict=True):
        assert torch.equal(a, b)
    # a dense up at the parts' summed rank is not our export, and not splittable at rank 4
    dense = {k: v for k, v in sd_scripts_file(rank=12, alpha=12.0).items() if "_attn_qkv" in k}
    rank4, _ = lora_flux(te=False)
    assert import_flux_state_dict(dense, rank4, [])[0] == (
        "lora_unet_double_blocks_0_img_attn_qkv: rank 12 in the file, 4 (shared) or 12 (block-diagonal) in the job"
        ": the file's up is not block-diagonal"
    )
    # modules the job lacks are problems; text encoder parts a job does not train are left out
    double_only = tiny_flux()
    add_lora(double_only, flux_target_modules(double_only, "double"), 4, 2.0)
    assert import_flux_state_dict(state, double_only, [])[0] == (
        "lora_unet_single_blocks_0_linear1 is not a module of this model/job"
    )
    unet_state = {k: v for k, v in state.items() if not k.startswith("lora_unet_single")}
    assert import_flux_state_dict(unet_state, double_only, []) == []
    assert "left out" in caplog.text


def test_an_untrained_part_of_a_fused_module_is_zero_rows():
    targets = [t for t in flux_target_modules(tiny_flux()) if t != "transformer_blocks.0.attn.to_v"]
    transformer, partial = tiny_flux(), tiny_flux()
    add_lora(transformer, targets, 4, 2.0)
    add_lora(partial, targets, 4, 2.0)
    for p in lora_parameters(transformer):
        p.data = torch.randn(p.shape)
    state = export_flux_state_dict(transformer, [], torch.float32)
    up = state["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"]
    assert up.shape == (3 * 32, 8) and not up[64:].any()
    unet, _ = ref_load(state, transformer, tiny_clip())
    assert not unet.pop("transformer_blocks.0.attn.to_v").any()
    assert_same(unet, deltas(transformer))
    assert import_flux_state_dict(state, partial, []) == []
    assert_same(deltas(partial), deltas(transformer))
    full, _ = lora_flux(seed=None, te=False)
    assert import_flux_state_dict(state, full, []) == [
        "lora_unet_double_blocks_0_img_attn_qkv: rank 8 in the file, 4 (shared) or 12 (block-diagonal) in the job"
    ]
    shared = {k: v for k, v in sd_scripts_file(4, 4.0).items() if "double_blocks_0_img_attn_qkv" in k}
    assert import_flux_state_dict(shared, partial, []) == [
        "lora_unet_double_blocks_0_img_attn_qkv: changes ['transformer_blocks.0.attn.to_v'], "
        "which this job does not train"
    ]


def test_t5_modules_are_lora_te3():
    from transformers import T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(d_model=16, d_kv=4, num_heads=2, num_layers=1, d_ff=32, vocab_size=32))
    targets = [n for n, m in t5.named_modules() if isinstance(m, torch.nn.Linear)]
    add_lora(t5, targets, 2, 1.0)
    for p in lora_parameters(t5):
        p.data = torch.randn(p.shape)
    clip = tiny_clip()
    add_lora(clip, text_encoder_target_modules(clip), 2, 1.0)
    state = export_flux_state_dict(None, [clip, t5], torch.float32)
    t5_keys = sorted({k.split(".")[0] for k in state if k.startswith("lora_te3_")})
    assert t5_keys[0] == "lora_te3_encoder_block_0_layer_0_SelfAttention_k" and len(t5_keys) == len(targets)
    fresh = T5EncoderModel(t5.config)
    add_lora(fresh, targets, 2, 1.0)
    fresh_clip = tiny_clip()
    add_lora(fresh_clip, text_encoder_target_modules(fresh_clip), 2, 1.0)
    assert import_flux_state_dict(state, None, [fresh_clip, fresh]) == []
    assert_same(deltas(fresh), deltas(t5))


def test_the_render_loader_gives_each_part_only_its_own_rank_and_finds_wrapped_clip_layers():
    """diffusers_lora_state: the same delta W per module as the file, q/k/v each at their own rank
    (not the fused stack's), and CLIP-L names found after peft has wrapped the layers."""
    from trainer.flux_kohya import diffusers_lora_state

    transformer, encoders = lora_flux()
    state = export_flux_state_dict(transformer, encoders, torch.float32)
    out = diffusers_lora_state(state, transformer, encoders[0])  # both already wrapped by peft
    q = "transformer.transformer_blocks.0.attn.to_q"
    assert out[f"{q}.lora_A.weight"].shape[0] == 4  # its own block of the rank-12 qkv stack
    for prefix, model in (("transformer", transformer), ("text_encoder", encoders[0])):
        for name, want in deltas(model).items():
            a, b = out[f"{prefix}.{name}.lora_A.weight"], out[f"{prefix}.{name}.lora_B.weight"]
            torch.testing.assert_close(b @ a, want)
