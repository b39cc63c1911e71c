"""Long (150/225-token) and weighted captions, checked against references built here.

The tiny models' byte-level CLIP tokenizer gives one token per character (spaces split
words), so token positions are easy to count: a word of k letters is k tokens.
"""

from __future__ import annotations

import random

import pytest
import torch

from trainer.models import load_base_model
from trainer.text import encode_texts, parse_prompt_attention


@pytest.fixture(scope="module")
def sd15(tiny_sd15):
    return _frozen(load_base_model(str(tiny_sd15)))


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl):
    return _frozen(load_base_model(str(tiny_sdxl)))


def _frozen(model):
    for te in model.text_encoders:
        te.eval().requires_grad_(False)
    return model


CPU = torch.device("cpu")


def words(count: int, seed: int, length: int = 4) -> str:
    """``count`` words of ``length`` random letters: count * length tokens."""
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length)) for _ in range(count)
    )


def encode(model, texts, clip_skip=1, **kw):
    return encode_texts(model.family, model.text_encoders, model.tokenizers, texts, clip_skip, CPU, **kw)


# References: the encoder called directly -----------------------------------------------


def ref_ids(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids


def ref_chunks(ids: torch.Tensor) -> torch.Tensor:
    """(B, n*75+2) -> (B*n, 77): BOS, 75 tokens, the row's last id (pad == eos tokenizers)."""
    n = (ids.shape[1] - 2) // 75
    return torch.stack(
        [torch.cat([row[:1], row[1 + 75 * k : 76 + 75 * k], row[-1:]]) for row in ids for k in range(n)]
    )


def ref_states(model, encoder_index: int, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """The old recipe on (rows, 77) ids: SD1.5 final-normed [-clip_skip], SDXL [-(clip_skip+1)]."""
    te = model.text_encoders[encoder_index]
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
    if model.family == "sd15":
        return te.final_layer_norm(out.hidden_states[-clip_skip])
    return out.hidden_states[-(clip_skip + 1)]


def ref_merge(states: torch.Tensor, n: int) -> torch.Tensor:
    """(B*n, 77, D) -> (B, n*75+2, D) by gathering positions: BOS, inner 75 of each chunk, last."""
    flat = states.reshape(states.shape[0] // n, n * 77, states.shape[-1])
    keep = [0] + [77 * k + j for k in range(n) for j in range(1, 76)] + [77 * n - 1]
    return flat[:, keep]


def ref_embeds(model, texts: list[str], max_token_length: int) -> torch.Tensor:
    n = max_token_length // 75
    parts = []
    for i, tok in enumerate(model.tokenizers):
        ids = ref_ids(tok, texts, max_token_length + 2)
        parts.append(ref_merge(ref_states(model, i, ref_chunks(ids) if n > 1 else ids), n))
    return torch.cat(parts, dim=-1)


class Spy:
    """Records the input ids each wrapped text encoder receives."""

    def __init__(self, model, monkeypatch):
        self.calls: list[list[torch.Tensor]] = [[] for _ in model.text_encoders]
        for i, te in enumerate(model.text_encoders):
            monkeypatch.setattr(te, "forward", self._wrap(te.forward, self.calls[i]))

    @staticmethod
    def _wrap(forward, calls):
        def spy(input_ids, *args, **kwargs):
            calls.append(input_ids.clone())
            return forward(input_ids, *args, **kwargs)

        return spy


# 1. Defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_defaults_match_the_old_recipe_sd15(sd15, clip_skip):
    texts = ["a photo, of a cat", words(40, 1)]  # the second is longer than 75 tokens: truncated
    got = encode(sd15, texts, clip_skip)
    ids = ref_ids(sd15.tokenizers[0], texts, 77)
    assert got.pooled is None
    assert torch.equal(got.embeds, ref_states(sd15, 0, ids, clip_skip))


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_defaults_match_the_old_recipe_sdxl(sdxl, clip_skip):
    texts = ["a photo, of a cat", words(40, 1)]
    got = encode(sdxl, texts, clip_skip)
    ids = [ref_ids(tok, texts, 77) for tok in sdxl.tokenizers]
    want = torch.cat([ref_states(sdxl, i, ids[i], clip_skip) for i in range(2)], dim=-1)
    assert torch.equal(got.embeds, want)
    with torch.no_grad():
        pooled = sdxl.text_encoders[1](ids[1]).text_embeds
    assert torch.equal(got.pooled, pooled)


def test_max_token_length_must_be_75_150_or_225(sd15):
    with pytest.raises(ValueError, match="max_token_length"):
        encode(sd15, ["a cat"], max_token_length=100)


# 2. Chunks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("max_token_length", [150, 225])
def test_long_captions_are_encoded_in_chunks(family, max_token_length, request, monkeypatch):
    model = request.getfixturevalue(family)
    n = max_token_length // 75
    texts = ["a short caption", words(30, 2), words(70, 3)]  # 13, 120 and 280 tokens
    spy = Spy(model, monkeypatch)
    got = encode(model, texts, max_token_length=max_token_length)
    tok = model.tokenizers[0]
    for calls in spy.calls:
        (ids,) = calls
        assert ids.shape == (len(texts) * n, 77)
        assert (ids[:, 0] == tok.bos_token_id).all()
        assert (ids[:, -1] == tok.eos_token_id).all()  # the tiny tokenizers pad with EOS
    assert got.embeds.shape[:2] == (len(texts), max_token_length + 2)
    assert torch.equal(got.embeds, ref_embeds(model, texts, max_token_length))
    if family == "sdxl":
        rows = ref_chunks(ref_ids(model.tokenizers[1], texts, max_token_length + 2))
        with torch.no_grad():
            pooled = model.text_encoders[1](rows).text_embeds
        assert torch.equal(got.pooled, pooled[::n])  # each caption's first chunk
        # the first chunk is the 75-token encoding (up to batch-size rounding)
        torch.testing.assert_close(got.pooled, encode(model, texts).pooled, rtol=1e-5, atol=1e-5)


def test_tokens_past_75_reach_the_embeds(sd15):
    first_75 = words(15, 4, length=5)  # 75 tokens
    long = f"{first_75} {words(9, 5, length=5)}"  # 120 tokens
    assert len(sd15.tokenizers[0](first_75).input_ids) == 77
    both = encode(sd15, [long, first_75], max_token_length=150).embeds
    assert torch.equal(both[0, :76], both[1, :76])  # chunk 1 sees the same 75 tokens
    assert not torch.allclose(both[0, 76:151], both[1, 76:151])  # chunk 2: tokens 76..120 vs padding
    short = encode(sd15, [long]).embeds  # 75 tokens: truncated, tokens 76.. lost
    assert torch.equal(short[0, :76], both[0, :76])


def test_sdxl_pad_token_chunks_end_with_eos(tiny_sdxl, monkeypatch):
    """SDXL's real tokenizer_2 pads with "!": chunks are closed with EOS as sd-scripts does."""
    model = _frozen(load_base_model(str(tiny_sdxl)))
    tok2 = model.tokenizers[1]
    tok2.pad_token = "!"
    bos, eos, pad = tok2.bos_token_id, tok2.eos_token_id, tok2.pad_token_id
    assert pad != eos
    caption = words(20, 5)  # 80 tokens
    tokens = tok2(caption).input_ids[1:-1]
    assert len(tokens) == 80
    spy = Spy(model, monkeypatch)
    got = encode(model, [caption], max_token_length=225)
    want = torch.tensor(
        [
            [bos, *tokens[:75], eos],  # full chunk: its last id (a pad) becomes EOS
            [bos, *tokens[75:], eos] + [pad] * 70,  # the caption's own EOS, then pads
            [bos, eos] + [pad] * 75,  # empty chunk: BOS EOS pad ...
        ]
    )
    assert torch.equal(spy.calls[1][0], want)
    assert torch.equal(spy.calls[0][0], ref_chunks(ref_ids(model.tokenizers[0], [caption], 227)))
    want_states = ref_merge(ref_states(model, 1, want), 3)
    assert torch.equal(got.embeds[..., -want_states.shape[-1] :], want_states)


# 3. Weighted captions ----------------------------------------------------------------------


def test_parse_prompt_attention_examples():
    assert parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
        ("a ", 1.0),
        ("house", 1.5730000000000004),
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641000000000006),
        (".", 1.1),
    ]
    assert parse_prompt_attention("normal text") == [("normal text", 1.0)]
    assert parse_prompt_attention("an (important) word") == [("an ", 1.0), ("important", 1.1), (" word", 1.0)]
    assert parse_prompt_attention("[less]") == [("less", 1 / 1.1)]
    assert parse_prompt_attention("(unbalanced") == [("unbalanced", 1.1)]
    assert parse_prompt_attention(r"\(literal\]") == [("(literal]", 1.0)]
    assert parse_prompt_attention(r"a \\ b \[c\)") == [(r"a \ b [c)", 1.0)]
    assert parse_prompt_attention("(unnecessary)(parens)") == [("unnecessaryparens", 1.1)]
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("x: y) z]") == [("x: y) z]", 1.0)]  # unmatched closers are text


def _weighted_positions(tokenizer, before: str, tag: str) -> range:
    start = 1 + len(tokenizer(before).input_ids) - 2
    return range(start, start + len(tokenizer(tag).input_ids) - 2)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_weighted_tag_scales_its_token_states(family, request):
    model = request.getfixturevalue(family)
    got = encode(model, ["a small (tagword:1.2) on grass"], weighted=True)
    plain = "a small tagword on grass"
    pos = list(_weighted_positions(model.tokenizers[0], "a small", "tagword"))
    assert len(pos) == 7
    want = ref_embeds(model, [plain], 75)
    other = [p for p in range(77) if p not in pos]
    assert torch.equal(got.embeds[:, other], want[:, other])
    torch.testing.assert_close(got.embeds[:, pos], 1.2 * want[:, pos], rtol=1e-6, atol=0)
    assert not torch.allclose(got.embeds[:, pos], want[:, pos])
    if family == "sdxl":  # pooled is not weighted
        assert torch.equal(got.pooled, encode(model, [plain]).pooled)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_weighted_tag_across_the_chunk_boundary(family, request):
    model = request.getfixturevalue(family)
    before = words(14, 6, length=5)  # 70 tokens: the tag's 8 tokens are positions 71..78
    after = words(10, 7)
    got = encode(model, [f"{before} (tagwords:0.5) {after}"], max_token_length=150, weighted=True)
    want = ref_embeds(model, [f"{before} tagwords {after}"], 150)
    pos = list(_weighted_positions(model.tokenizers[0], before, "tagwords"))
    assert pos == list(range(71, 79))  # 71..75 in chunk 1, 76..78 in chunk 2
    other = [p for p in range(152) if p not in pos]
    assert torch.equal(got.embeds[:, other], want[:, other])
    torch.testing.assert_close(got.embeds[:, pos], 0.5 * want[:, pos], rtol=1e-6, atol=0)


def test_weighted_without_brackets_is_the_plain_encoding(sdxl, monkeypatch):
    texts = ["plain words only", words(70, 8)]  # the long one is truncated at 225 tokens
    spy = Spy(sdxl, monkeypatch)
    got = encode(sdxl, texts, max_token_length=225, weighted=True)
    for i, tok in enumerate(sdxl.tokenizers):
        assert torch.equal(spy.calls[i][0], ref_chunks(ref_ids(tok, texts, 227)))
    assert torch.equal(got.embeds, ref_embeds(sdxl, texts, 225))


def test_brackets_are_text_unless_weighted(sd15):
    plain = encode(sd15, ["a (cat:1.5)"]).embeds
    with torch.no_grad():
        want = ref_states(sd15, 0, ref_ids(sd15.tokenizers[0], ["a (cat:1.5)"], 77))
    assert torch.equal(plain, want)


# 4. Gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_gradients_flow_through_weighted_chunks(family, request):
    model = request.getfixturevalue(family)
    te = model.text_encoders[-1]
    param = dict(te.named_parameters())[
        "text_model.encoder.layers.0.self_attn.q_proj.weight"
        if family == "sdxl"
        else "encoder.layers.0.self_attn.q_proj.weight"
    ]
    param.requires_grad_(True)
    try:
        out = encode(model, [f"(big:1.3) {words(30, 9)}", "[small] cat"], max_token_length=150, weighted=True)
        loss = out.embeds.sum() + (out.pooled.sum() if out.pooled is not None else 0)
        loss.backward()
        assert param.grad is not None and param.grad.abs().sum() > 0
    finally:
        param.requires_grad_(False)
        param.grad = None
