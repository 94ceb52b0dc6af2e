"""Chapter 2: attention, checked against PyTorch's fused kernel and nn.MultiheadAttention."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.attention import (
    CausalSelfAttention,
    KVCache,
    MultiHeadAttention,
    attention,
    attention_weights,
    causal_mask,
    padding_mask,
)


def run_both(q, k, v, ours_mask=None, sdpa_mask=None, is_causal=False):
    """Outputs and input gradients of `attention` and of SDPA, for the same upstream gradient."""
    a = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    b = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out_a = attention(*a, mask=ours_mask)
    out_b = F.scaled_dot_product_attention(*b, attn_mask=sdpa_mask, is_causal=is_causal)
    g = torch.randn_like(out_a)
    (out_a * g).sum().backward()
    (out_b * g).sum().backward()
    return (out_a, *(t.grad for t in a)), (out_b, *(t.grad for t in b))


def assert_all_close(xs, ys):
    """Two float32 paths agree as float32 allows: assert_close's defaults (rtol 1.3e-6, atol 1e-5).
    An absolute 1e-6 is too tight: fused kernels sum in another order on every instruction set."""
    for x, y in zip(xs, ys):
        assert x.shape == y.shape
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y)


# ---------------------------------------------------------------- explicit == SDPA

SHAPES = [
    (1, 1, 1, 1, 8),
    (1, 1, 7, 7, 8),
    (3, 4, 1, 1, 16),
    (2, 4, 9, 9, 16),
    (3, 2, 13, 13, 4),
    (2, 3, 5, 11, 8),
]
KINDS = ["none", "causal", "bool", "additive", "causal_float"]
# SDPA's is_causal aligns the diagonal top-left, so "causal" only for square shapes; the
# shifted (bottom-right) causal mask of rectangular shapes is "causal_float", and the KV cache tests
CASES = [
    (*shape, kind)
    for shape in SHAPES
    for kind in KINDS
    if kind != "causal" or shape[2] == shape[3]
]


@pytest.mark.parametrize("B,H,Tq,Tk,d,kind", CASES)
def test_explicit_equals_sdpa_outputs_and_gradients(B, H, Tq, Tk, d, kind):
    torch.manual_seed(B * 100 + Tq * 10 + Tk)
    q, k, v = (
        torch.randn(B, H, Tq, d),
        torch.randn(B, H, Tk, d),
        torch.randn(B, H, Tk, d + 3),
    )
    ours = sdpa = None
    is_causal = False
    if kind == "causal":
        ours, is_causal = causal_mask(Tq), True
    elif kind == "bool":
        ours = sdpa = (
            torch.rand(B, 1, Tq, Tk) > 0.4
        )  # broadcast over heads; some rows may be empty
    elif kind == "additive":
        ours = sdpa = torch.randn(B, H, Tq, Tk)
    elif (
        kind == "causal_float"
    ):  # the causal mask as 0 / -inf, its diagonal shifted when Tq < Tk
        ours = sdpa = torch.zeros(Tq, Tk).masked_fill(
            ~causal_mask(Tq, Tk), float("-inf")
        )
    assert_all_close(*run_both(q, k, v, ours, sdpa, is_causal))


def test_explicit_equals_sdpa_without_head_dimension():
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 8), torch.randn(6, 8), torch.randn(6, 8)
    assert_all_close(*run_both(q, k, v))


def test_weights_are_a_distribution_over_allowed_keys():
    torch.manual_seed(0)
    mask = torch.rand(2, 3, 6, 6) > 0.5
    mask[..., 0] = True  # every row has at least one key
    w = attention_weights(torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8), mask)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    assert (w[~mask.expand_as(w)] == 0).all()


# ---------------------------------------------------------------- degenerate masks


@pytest.mark.parametrize("float_mask", [False, True])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_fully_masked_rows_output_zeros_without_nan(float_mask, use_sdpa):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, 1] = False  # query 1 of sequence 0 may attend to nothing
    mask[1] = False  # the whole of sequence 1 is masked
    if float_mask:
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    if use_sdpa:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out = attention(q, k, v, mask)
    out.sum().backward()
    assert (out[0, :, 1] == 0).all() and (out[1] == 0).all()
    assert torch.isfinite(out).all()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[1] == 0).all()  # an empty row passes no gradient to its query
    # the rows that do have keys are unaffected by the empty ones
    expected = attention(q[0, :, [0, 2, 3]], k[0], v[0])
    torch.testing.assert_close(out[0, :, [0, 2, 3]], expected)


def test_single_allowed_key_copies_its_value():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 5, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[:, 2] = True
    torch.testing.assert_close(
        attention(q, k, v, mask), v[:, [2] * 5], atol=1e-7, rtol=0
    )


def test_module_with_all_keys_padded_is_finite():
    mha = MultiHeadAttention(8, 2).eval()
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    tokens = torch.tensor(
        [[1, 1, 0, 0], [0, 0, 0, 0]]
    )  # the second context is all padding
    for mha.use_sdpa in (True, False):
        y = mha(x, context=ctx, mask=padding_mask(tokens, 0))
        assert torch.isfinite(y).all()
        # nothing to read: the attention output is zero, so only the output bias remains
        torch.testing.assert_close(y[1], mha.out_proj.bias.expand(3, 8))


# ---------------------------------------------------------------- nn.MultiheadAttention


def copy_from_torch(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        projs = (ours.q_proj, ours.k_proj, ours.v_proj)
        for proj, w in zip(projs, ref.in_proj_weight.chunk(3)):
            proj.weight.copy_(w)
        if ref.in_proj_bias is not None:
            for proj, b in zip(projs, ref.in_proj_bias.chunk(3)):
                proj.bias.copy_(b)
        ours.out_proj.load_state_dict(ref.out_proj.state_dict())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_multihead_equals_torch(bias, use_sdpa, cross, causal):
    torch.manual_seed(0)
    d, H, B, Tq = 24, 4, 3, 6
    Tk = 9 if cross else Tq
    ref = nn.MultiheadAttention(d, H, bias=bias, batch_first=True)
    ours = MultiHeadAttention(d, H, bias=bias, use_sdpa=use_sdpa)
    copy_from_torch(ours, ref)
    x = torch.randn(B, Tq, d)
    ctx = torch.randn(B, Tk, d) if cross else x
    lengths = torch.tensor([Tk, Tk - 2, 3])
    tokens = torch.where(torch.arange(Tk) < lengths[:, None], 7, 0)
    attn_mask = causal_mask(Tq, Tk) if causal else None
    torch_mask = None if attn_mask is None else ~attn_mask  # torch: True = masked out
    y_ref, w_ref = ref(
        x,
        ctx,
        ctx,
        key_padding_mask=tokens == 0,
        attn_mask=torch_mask,
        average_attn_weights=False,
    )
    y = ours(
        x,
        context=ctx if cross else None,
        mask=padding_mask(tokens, 0),
        is_causal=causal,
    )
    torch.testing.assert_close(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(ours.q_proj.weight.grad, ref.in_proj_weight.grad[:d])
    ours.keep_weights = True
    with torch.no_grad():
        ours(
            x,
            context=ctx if cross else None,
            mask=padding_mask(tokens, 0),
            is_causal=causal,
        )
    torch.testing.assert_close(ours.weights, w_ref.detach())


def test_float_mask_combines_with_is_causal():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    bias = torch.randn(2, 1, 1, 5)  # a float key bias, combined with the causal mask
    y = mha(x, mask=bias, is_causal=True)
    full = bias.masked_fill(~causal_mask(5), float("-inf"))
    torch.testing.assert_close(y, mha(x, mask=full))


# ---------------------------------------------------------------- causality


@settings(max_examples=25, deadline=None)
@given(t=st.integers(0, 10), use_sdpa=st.booleans(), seed=st.integers(0, 2**16))
def test_changing_a_later_token_never_changes_earlier_outputs(t, use_sdpa, seed):
    torch.manual_seed(seed)
    T = 12
    csa = CausalSelfAttention(16, 4, use_sdpa=use_sdpa).eval()
    mha = MultiHeadAttention(16, 4, use_sdpa=use_sdpa).eval()
    x = torch.randn(2, T, 16)
    x2 = x.clone()
    x2[:, t + 1] = torch.randn(2, 16) * 10  # change token t + 1
    with torch.no_grad():
        for layer in (csa, lambda z: mha(z, is_causal=True)):
            y, y2 = layer(x), layer(x2)
            torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1])
            assert not torch.allclose(y[:, t + 1], y2[:, t + 1])


# ---------------------------------------------------------------- CausalSelfAttention


def test_causal_self_attention_parameters_are_named_as_in_gpt2():
    csa = CausalSelfAttention(n_embd=32, n_head=4)
    shapes = {name: tuple(p.shape) for name, p in csa.named_parameters()}
    assert shapes == {
        "c_attn.weight": (96, 32),
        "c_attn.bias": (96,),
        "c_proj.weight": (32, 32),
        "c_proj.bias": (32,),
    }
    assert {
        n for n, _ in CausalSelfAttention(32, 4, bias=False).named_parameters()
    } == {
        "c_attn.weight",
        "c_proj.weight",
    }


def test_sdpa_and_explicit_paths_agree_with_gradients():
    torch.manual_seed(0)
    csa = CausalSelfAttention(32, 4)
    x = torch.randn(3, 11, 32, requires_grad=True)
    y1 = csa(x)
    g1 = torch.autograd.grad(y1.sum(), [x, csa.c_attn.weight])
    csa.use_sdpa = False
    y2 = csa(x)
    g2 = torch.autograd.grad(y2.sum(), [x, csa.c_attn.weight])
    assert_all_close((y1, *g1), (y2, *g2))


def test_fused_projection_is_queries_keys_values_in_order():
    torch.manual_seed(0)
    csa = CausalSelfAttention(12, 3).eval()
    mha = MultiHeadAttention(12, 3).eval()
    with torch.no_grad():
        for proj, w, b in zip(
            (mha.q_proj, mha.k_proj, mha.v_proj),
            csa.c_attn.weight.chunk(3),
            csa.c_attn.bias.chunk(3),
        ):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        mha.out_proj.load_state_dict(csa.c_proj.state_dict())
        x = torch.randn(2, 7, 12)
        torch.testing.assert_close(csa(x), mha(x, is_causal=True))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    csa = CausalSelfAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 6, 16)
    csa.eval()
    assert torch.equal(csa(x), csa(x))
    csa.train()
    assert not torch.allclose(csa(x), csa(x))


def test_attention_dropout_keeps_the_expected_output():
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 8), torch.randn(1, 8, 8)
    v = torch.ones(
        1, 8, 1
    )  # every output is the sum of the (dropped, rescaled) weights
    outs = torch.stack([attention(q, k, v, dropout_p=0.5) for _ in range(4000)])
    assert not torch.allclose(outs[0], outs[1])
    torch.testing.assert_close(outs.mean(0), torch.ones(1, 4, 1), atol=0.05, rtol=0)


# ---------------------------------------------------------------- the KV cache


def chunked(csa, x, boundaries, n_layer=1, max_len=32, dtype=None):
    """Run x (B, T, C) through `csa` in pieces [b_i, b_{i+1}) with a KV cache."""
    B, _, C = x.shape
    cache = KVCache(n_layer, B, csa.n_head, C // csa.n_head, max_len, dtype=dtype)
    outs = []
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        assert cache.pos == start
        outs.append(csa(x[:, start:end], kv_cache=cache, layer=n_layer - 1))
        cache.advance(end - start)
    return torch.cat(outs, dim=1), cache


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_kv_cache_pieces_equal_one_causal_pass(use_sdpa):
    torch.manual_seed(0)
    csa = CausalSelfAttention(32, 4, use_sdpa=use_sdpa).eval()
    x = torch.randn(2, 14, 32)
    with torch.no_grad():
        full = csa(x)
        # a prefill of 5, then 1 token at a time, then a chunk of 4 at an offset, then 1 more
        y, cache = chunked(csa, x, [0, 5, 6, 7, 8, 9, 13, 14], n_layer=3)
    assert cache.pos == 14
    torch.testing.assert_close(y, full)


def test_kv_cache_paths_agree_and_token_by_token_from_the_start():
    torch.manual_seed(1)
    csa = CausalSelfAttention(16, 2).eval()
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        full = csa(x)
        y_sdpa, _ = chunked(csa, x, list(range(10)))
        csa.use_sdpa = False
        y_explicit, _ = chunked(csa, x, [0, 3, 9])
    torch.testing.assert_close(y_sdpa, full)
    torch.testing.assert_close(y_explicit, full)


def test_kv_cache_layers_are_separate_and_reset_reuses_buffers():
    cache = KVCache(n_layer=2, batch_size=1, n_head=1, head_dim=2, max_len=4)
    k0, _ = cache.update(0, torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    k1, _ = cache.update(1, 2 * torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert cache.pos == 0  # only advance moves the position
    cache.advance(2)
    assert (k0 == 1).all() and (k1 == 2).all() and k0.shape == (1, 1, 2, 2)
    k, v = cache.update(0, 3 * torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert k.shape == (1, 1, 3, 2) and k[0, 0, :, 0].tolist() == [1, 1, 3]
    cache.reset()
    assert cache.pos == 0 and cache.max_len == 4
    k, _ = cache.update(0, 5 * torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert k.shape == (1, 1, 1, 2) and (k == 5).all()


def test_kv_cache_dtype_and_nbytes():
    cache = KVCache(2, 1, 2, 4, 8, dtype=torch.float64)
    assert cache.k.dtype == torch.float64 and cache.nbytes == 2 * 2 * 1 * 2 * 8 * 4 * 8
    csa = CausalSelfAttention(8, 2).eval()
    x = torch.randn(1, 5, 8)
    with torch.no_grad():
        y, _ = chunked(csa, x, [0, 2, 5], dtype=torch.float64)  # fp32 layer, fp64 cache
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, csa(x))


def test_kv_cache_errors_are_one_line():
    cache = KVCache(2, 1, 2, 4, max_len=5)
    ok = torch.zeros(1, 2, 3, 4)
    cache.update(0, ok, ok)
    cache.advance(3)
    with pytest.raises(
        ValueError, match=r"KV cache full: pos 3 \+ 3 new positions > max_len 5"
    ) as info:
        cache.update(0, ok, ok)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="layer=2"):
        cache.update(2, ok[:, :, :1], ok[:, :, :1])
    with pytest.raises(ValueError, match=r"expected both \(B=1, H=2, T_new, hd=4\)"):
        cache.update(0, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    with pytest.raises(ValueError, match="cannot advance"):
        cache.advance(3)
    with pytest.raises(ValueError, match="max_len=0"):
        KVCache(1, 1, 1, 1, max_len=0)
    csa = CausalSelfAttention(8, 2)
    with pytest.raises(ValueError, match="KV cache full"):
        csa(torch.randn(1, 3, 8), kv_cache=cache, layer=1)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [MultiHeadAttention, CausalSelfAttention])
def test_width_not_divisible_by_heads(cls):
    with pytest.raises(ValueError, match="is not divisible by") as info:
        cls(10, 3)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="dropout"):
        cls(8, 2, dropout=1.5)


@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,match",
    [
        ((2, 5, 8), (2, 5, 4), (2, 5, 8), "same last dimension"),
        ((2, 5, 8), (2, 5, 8), (2, 6, 8), "same length"),
        ((2, 5, 8), (3, 5, 8), (3, 5, 8), "same batch dimensions"),
        ((2, 1, 5, 8), (2, 5, 8), (2, 5, 8), "same number of dimensions"),
        ((8,), (8,), (8,), "same number of dimensions"),
    ],
)
def test_mismatched_qkv_shapes(q_shape, k_shape, v_shape, match):
    with pytest.raises(ValueError, match=match) as info:
        attention(torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape))
    assert "\n" not in str(info.value)


def test_bad_masks_and_inputs():
    q = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(q, q, q, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="neither bool"):
        attention(q, q, q, mask=torch.ones(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="dropout_p"):
        attention(q, q, q, dropout_p=1.0)
    with pytest.raises(
        ValueError, match=r"x of shape \(2, 5, 6\) is not \(B, T, d_model=8\)"
    ):
        MultiHeadAttention(8, 2)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="differ in batch size"):
        MultiHeadAttention(8, 2)(torch.randn(2, 5, 8), context=torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="n_embd=8"):
        CausalSelfAttention(8, 2)(torch.randn(5, 8))
    with pytest.raises(ValueError, match="t_q <= t_k"):
        causal_mask(5, 3)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        padding_mask(torch.ones(5), 0)


def test_causal_and_padding_masks():
    assert causal_mask(3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    assert causal_mask(1, 4).tolist() == [[True, True, True, True]]
    m = padding_mask(torch.tensor([[3, 4, 0], [0, 5, 0]]), pad_id=0)
    assert m.shape == (2, 1, 1, 3) and m[:, 0, 0].tolist() == [
        [True, True, False],
        [False, True, False],
    ]
