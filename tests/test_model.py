"""The GPT of chapter 4 (gptlib.model): its checks, counts, presets and compiled form."""

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gptlib.model as gm
from gptlib.model import GPT, PRESETS, GPTConfig, param_count, preset

TINY = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def tiny_model(seed=0, config=TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def tokens(config=TINY, shape=(2, 16), seed=1) -> torch.Tensor:
    return torch.randint(
        0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed)
    )


def closed_form(c: GPTConfig) -> int:
    """Parameter count written out independently of gptlib: embeddings, blocks, final norm."""
    d = c.n_embd
    norm = 2 * d if c.bias else d
    attn = d * 3 * d + d * d + ((3 * d + d) if c.bias else 0)
    mlp = d * 4 * d + 4 * d * d + ((4 * d + d) if c.bias else 0)
    return (
        c.vocab_size * d + c.block_size * d + c.n_layer * (2 * norm + attn + mlp) + norm
    )


# --- the model's behaviour ----------------------------------------------------------------------


def test_forward_shapes_and_tied_head():
    model = tiny_model()
    logits, loss = model(tokens())
    assert logits.shape == (2, 16, TINY.vocab_size) and loss is None
    assert model.lm_head.weight is model.transformer.wte.weight
    names = {n for n, _ in model.named_parameters()}
    assert (
        "transformer.h.1.attn.c_attn.weight" in names
        and "transformer.h.0.mlp.c_proj.bias" in names
    )
    assert "lm_head.weight" not in names  # the tied tensor is registered once, as wte


@settings(max_examples=15, deadline=None)
@given(t=st.integers(0, 15), delta=st.integers(1, TINY.vocab_size - 1))
def test_causality(t, delta):
    """Changing token t never changes the logits at positions before t, and does change those at t."""
    model = tiny_model()
    idx = tokens()
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + delta) % TINY.vocab_size
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t], b[:, t])


@pytest.mark.parametrize("vocab_size", [256, 1024, 50257])
def test_initial_loss_is_close_to_ln_vocab_size(vocab_size):
    config = GPTConfig(
        vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=64
    )
    model = tiny_model(0, config)
    with torch.no_grad():
        _, loss = model(tokens(config, (4, 64)), tokens(config, (4, 64), seed=2))
    assert abs(loss.item() - math.log(vocab_size)) < 0.05


def test_small_model_overfits_one_batch():
    config = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = tiny_model(0, config).train()
    data = tokens(config, (4, 33))
    x, y = data[:, :-1], data[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_targets_of_minus_100_are_ignored():
    model = tiny_model()
    idx, targets = tokens(), tokens(seed=3)
    masked = targets.clone()
    masked[:, :5] = -100
    logits, loss = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(
        logits[:, 5:].flatten(0, 1), targets[:, 5:].flatten()
    )
    torch.testing.assert_close(loss, expected)


def test_gpt2_initialisation():
    config = GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=256)
    model = tiny_model(0, config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - residual_std) < 0.05 * residual_std, name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.05 * 0.02, name
        elif name.endswith(".bias"):
            assert torch.all(p == 0), name
        else:  # layer norm gains
            assert torch.all(p == 1), name


def test_kv_cache_gives_the_same_logits_as_one_pass():
    model = tiny_model()
    idx = tokens(shape=(3, 32))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(3)
        assert cache.max_len == TINY.block_size and cache.pos == 0
        pieces = [
            model(idx[:, a:b], kv_cache=cache)[0]
            for a, b in [(0, 7), (7, 8), (8, 20), (20, 21), (21, 32)]
        ]
    assert cache.pos == 32
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    with pytest.raises(ValueError, match="block_size=32"):
        model(idx[:, :1], kv_cache=cache)


def test_too_long_and_malformed_inputs_are_one_line_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(tokens(), tokens()[:, :3])
    with pytest.raises(ValueError, match="batch_size=0"):
        model.new_kv_cache(0)


def test_new_kv_cache_follows_the_model_dtype():
    model = tiny_model().to(torch.bfloat16)
    assert model.new_kv_cache(2).k.dtype == torch.bfloat16
    assert model.new_kv_cache(2, dtype=torch.float32).k.dtype == torch.float32


def test_gradient_checkpointing_same_gradients_and_only_in_training(monkeypatch):
    config = GPTConfig(
        vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=32, dropout=0.1
    )
    idx, targets = tokens(config), tokens(config, seed=4)

    def grads(checkpointing: bool):
        model = tiny_model(0, config).train()
        model.gradient_checkpointing = checkpointing
        torch.manual_seed(7)  # the same dropout masks
        _, loss = model(idx, targets)
        loss.backward()
        return loss, [p.grad for p in model.parameters()]

    calls = []
    real = gm.checkpoint
    monkeypatch.setattr(
        gm, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k)
    )
    loss_a, grads_a = grads(False)
    assert not calls
    loss_b, grads_b = grads(True)
    assert len(calls) == config.n_layer and all(
        k["use_reentrant"] is False for k in calls
    )
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    model = tiny_model(0, config).eval()
    model.gradient_checkpointing = True
    model(idx)
    assert len(calls) == config.n_layer  # evaluation does not checkpoint


# --- configuration, presets, counts ----------------------------------------------------------


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(n_layer=0), "n_layer=0"),
        (dict(vocab_size=1.5), "vocab_size=1.5"),
        (dict(n_embd=100, n_head=12), "multiple of n_head=12"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(bias="yes"), "bias='yes'"),
        (dict(n_head=True), "n_head=True"),  # a bool is not a size
    ],
)
def test_bad_config_is_a_one_line_error(changes, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**changes)


def test_presets():
    assert preset("micro", vocab_size=512) == GPTConfig(
        vocab_size=512, block_size=256, n_layer=4, n_head=6, n_embd=384
    )
    assert PRESETS["micro"].vocab_size == 4096  # preset() copies
    with pytest.raises(ValueError, match="unknown preset 'gpt5'"):
        preset("gpt5")
    with pytest.raises(ValueError, match="n_layers"):
        preset("gpt2", n_layers=3)
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({"n_layers": 3})


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_equal_the_closed_form(name):
    config = PRESETS[name]
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == closed_form(config) == param_count(config)
    assert model.num_params(non_embedding=True) == param_count(
        config, non_embedding=True
    )
    # non-embedding: without the token and the position embedding (Kaplan et al.)
    embeddings = (config.vocab_size + config.block_size) * config.n_embd
    assert model.num_params() - model.num_params(non_embedding=True) == embeddings


def test_known_gpt2_sizes_and_nano():
    counts = {name: param_count(PRESETS[name]) for name in PRESETS}
    assert counts["gpt2"] == 124_439_808
    assert counts["gpt2-medium"] == 354_823_168
    assert counts["gpt2-large"] == 774_030_080
    assert counts["gpt2-xl"] == 1_557_611_200
    assert 100_000 < counts["nano"] < 1_000_000


@settings(max_examples=20, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    n_layer=st.integers(1, 4),
    vocab=st.integers(1, 300),
    block=st.integers(1, 64),
    bias=st.booleans(),
)
def test_parameter_count_closed_form_for_any_config(
    heads, head_dim, n_layer, vocab, block, bias
):
    config = GPTConfig(
        vocab_size=vocab,
        block_size=block,
        n_layer=n_layer,
        n_head=heads,
        n_embd=heads * head_dim,
        bias=bias,
    )
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == closed_form(config) == param_count(config)


def test_flops_per_token_matches_a_count_of_matmuls():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_model().train()
    B, T = 2, 24
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(tokens(shape=(B, T)), tokens(shape=(B, T), seed=2))
        loss.backward()
    # 6N: the non-embedding parameters and the tied head, which multiplies every token
    n = model.num_params(non_embedding=True) + TINY.vocab_size * TINY.n_embd
    assert model.flops_per_token(T) == 6 * n + 12 * TINY.n_layer * TINY.n_embd * T
    # the counter sees matrix multiplications only: not the biases and layer norms that 6N includes
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert counter.get_total_flops() == B * T * (model.flops_per_token(T) - 6 * vectors)
    with pytest.raises(ValueError, match="seq_len=33"):
        model.flops_per_token(33)


# --- torch.compile ---------------------------------------------------------------------------


# torch 2.13's inductor picks its C++ vector width from the hardware, not from a forced
# ATEN_CPU_CAPABILITY (as `make test-portable` sets): on an AVX-512 machine forced to avx2 it
# computes NaN, forced to default its C++ does not compile. A real CPU never mismatches;
# when the capability is forced, give inductor the same width.
_FORCED_SIMD = {"default": 1, "avx2": 256, "avx512": 512}.get(
    os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
)


def test_torch_compile_fullgraph_same_logits_no_graph_break(monkeypatch):
    import torch._inductor.config as inductor

    if _FORCED_SIMD:
        monkeypatch.setattr(inductor.cpp, "simdlen", _FORCED_SIMD)
    torch._dynamo.reset()
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = tiny_model(0, config)
    idx, targets = tokens(config, (2, 16)), tokens(config, (2, 16), seed=2)
    explanation = torch._dynamo.explain(model)(idx, targets)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        logits, loss = model(idx, targets)
        c_logits, c_loss = compiled(idx, targets)
    torch.testing.assert_close(c_logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_loss, loss, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
