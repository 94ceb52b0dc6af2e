"""The GPT of chapter 4: GPT-2 exactly (against transformers), its checks, counts and checkpoints."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gptlib.model as gm
from gptlib.model import (
    GPT,
    PRESETS,
    CheckpointError,
    GPTConfig,
    load_weights,
    param_count,
    preset,
    read_weights,
)

transformers = pytest.importorskip("transformers")

TINY = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def tiny_model(seed=0, config=TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def tokens(config=TINY, shape=(2, 16), seed=1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def closed_form(c: GPTConfig) -> int:
    """Parameter count written out independently of gptlib: embeddings, blocks, final norm."""
    d = c.n_embd
    norm = 2 * d if c.bias else d
    attn = d * 3 * d + d * d + ((3 * d + d) if c.bias else 0)
    mlp = d * 4 * d + 4 * d * d + ((4 * d + d) if c.bias else 0)
    return c.vocab_size * d + c.block_size * d + c.n_layer * (2 * norm + attn + mlp) + norm


# --- Hugging Face interop ---------------------------------------------------------------------


def hf_gpt2(seed=0, **changes):
    torch.manual_seed(seed)
    config = dict(
        vocab_size=211, n_positions=48, n_embd=48, n_layer=3, n_head=4, bos_token_id=None, eos_token_id=None
    )
    config.update(changes)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()


def test_from_hf_gives_the_same_logits():
    hf = hf_gpt2()
    ours = GPT.from_hf(hf).eval()
    assert ours.config == GPTConfig(vocab_size=211, block_size=48, n_layer=3, n_head=4, n_embd=48)
    idx = tokens(ours.config, (3, 48))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected)
    # the conversion copies: changing our weights leaves the HF model alone
    with torch.no_grad():
        ours.transformer.wte.weight.zero_()
    assert hf.transformer.wte.weight.abs().sum() > 0


def test_to_hf_round_trips_to_the_same_logits():
    ours = tiny_model(3)
    hf = ours.to_hf()
    assert isinstance(hf, transformers.GPT2LMHeadModel) and not hf.training
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0])
        back = GPT.from_hf(hf)
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), back.state_dict().values()))
    # Conv1D stores (in, out): the transpose of nn.Linear
    w = ours.transformer.h[0].mlp.c_fc.weight  # (4d, d)
    assert torch.equal(hf.transformer.h[0].mlp.c_fc.weight, w.t())


def test_from_hf_loads_a_local_directory(tmp_path):
    hf = hf_gpt2(seed=5)
    hf.save_pretrained(tmp_path / "gpt2-like")
    idx = tokens(GPTConfig(vocab_size=211), (2, 10))
    with torch.no_grad():
        expected = hf(idx).logits
        for where in (tmp_path / "gpt2-like", str(tmp_path / "gpt2-like")):
            torch.testing.assert_close(GPT.from_hf(where).eval()(idx)[0], expected)


def test_hub_name_offline_is_a_one_line_error_naming_the_local_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # and nothing is cached
    with pytest.raises(ValueError, match="local directory") as info:
        GPT.from_hf("gpt2-not-cached")
    assert "\n" not in str(info.value) and "gpt2-not-cached" in str(info.value)


def test_local_gpt2_uses_the_env_var_or_reports_none(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(gm.GPT2_DIR_ENV, raising=False)
    assert gm.local_gpt2("gpt2") is None
    monkeypatch.setenv(gm.GPT2_DIR_ENV, str(tmp_path))
    assert gm.local_gpt2("gpt2") == tmp_path


@pytest.mark.parametrize("bad", ["./no-such-dir", "/no/such/dir", "a/b/c"])
def test_from_hf_missing_local_path(bad):
    with pytest.raises(ValueError, match="not a directory holding a saved GPT2LMHeadModel"):
        GPT.from_hf(bad)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(activation_function="relu"), "activation_function"),
        (dict(n_inner=100), "n_inner"),
        (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    ],
)
def test_from_hf_refuses_what_our_gpt_cannot_compute(changes, field):
    with pytest.raises(ValueError, match=field):
        GPT.from_hf(hf_gpt2(**changes))


def test_from_hf_refuses_untied_and_foreign_models():
    hf = hf_gpt2()
    hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone() + 1)
    with pytest.raises(ValueError, match="untied"):
        GPT.from_hf(hf)
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        GPT.from_hf(torch.nn.Linear(2, 2))


def test_to_hf_needs_biases():
    with pytest.raises(ValueError, match="bias=False"):
        GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False)).to_hf()


# --- the model's behaviour ----------------------------------------------------------------------


def test_forward_shapes_and_tied_head():
    model = tiny_model()
    logits, loss = model(tokens())
    assert logits.shape == (2, 16, TINY.vocab_size) and loss is None
    assert model.lm_head.weight is model.transformer.wte.weight
    names = {n for n, _ in model.named_parameters()}
    assert "transformer.h.1.attn.c_attn.weight" in names and "transformer.h.0.mlp.c_proj.bias" in names
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
    config = GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=64)
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
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].flatten(0, 1), targets[:, 5:].flatten())
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
            model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 20), (20, 21), (21, 32)]
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
    config = GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=32, dropout=0.1)
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
    monkeypatch.setattr(gm, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    loss_a, grads_a = grads(False)
    assert not calls
    loss_b, grads_b = grads(True)
    assert len(calls) == config.n_layer and all(k["use_reentrant"] is False for k in calls)
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
    assert model.num_params(non_embedding=True) == param_count(config, non_embedding=True)
    assert model.num_params() - model.num_params(non_embedding=True) == config.block_size * config.n_embd


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
def test_parameter_count_closed_form_for_any_config(heads, head_dim, n_layer, vocab, block, bias):
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=heads, n_embd=heads * head_dim, bias=bias)  # fmt: skip
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
    n = model.num_params(non_embedding=True)
    assert model.flops_per_token(T) == 6 * n + 12 * TINY.n_layer * TINY.n_embd * T
    # the counter sees matrix multiplications only: not the biases and layer norms that 6N includes
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert counter.get_total_flops() == B * T * (model.flops_per_token(T) - 6 * vectors)
    with pytest.raises(ValueError, match="seq_len=33"):
        model.flops_per_token(33)


# --- torch.compile ---------------------------------------------------------------------------


def test_torch_compile_fullgraph_same_logits_no_graph_break():
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


# --- saving and loading ----------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model(2)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.safetensors", "model_config.json"]
    stored = read_weights(tmp_path / "ckpt" / "model.safetensors")
    assert "lm_head.weight" not in stored and "transformer.wte.weight" in stored  # tied: saved once
    assert json.loads((tmp_path / "ckpt" / "model_config.json").read_text()) == {
        "vocab_size": 97, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0, "bias": True,
    }  # fmt: skip
    loaded = GPT.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    idx = tokens()
    assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_save_load_keeps_the_dtype_and_overwrites_cleanly(tmp_path):
    model = tiny_model().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # again, over the first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model_config.json"]
    loaded = GPT.from_pretrained(str(tmp_path))
    assert loaded.transformer.wte.weight.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_loading_into_another_architecture_lists_the_mismatches(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    other = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=48))
    with pytest.raises(CheckpointError) as info:
        load_weights(other, read_weights(tmp_path / "model.safetensors"), source="model.safetensors")
    message = str(info.value)
    assert "\n" not in message
    assert "transformer.wte.weight is (97, 32) in model.safetensors but (97, 48) in the model" in message
    assert "more" in message  # the list is cut after a few, with the count of the rest
    # a config that no longer matches the weights: from_pretrained names both
    config = json.loads((tmp_path / "model_config.json").read_text())
    (tmp_path / "model_config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.2\.ln_1\.weight \(32,\) is missing"):
        GPT.from_pretrained(tmp_path)
    # and extra tensors are named too
    with pytest.raises(CheckpointError, match=r"extra\.weight \(3,\) in the file is not in the model"):
        load_weights(
            tiny_model(), {**tiny_model().state_dict(), "extra.weight": torch.zeros(3)}, source="the file"
        )


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_are_a_one_line_error_naming_the_file(tmp_path, damage):
    tiny_model().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00not safetensors" * 64, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError) as info:
        GPT.from_pretrained(tmp_path)
    assert str(weights) in str(info.value) and "\n" not in str(info.value)


def test_missing_or_broken_config_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="model_config.json"):
        GPT.from_pretrained(tmp_path)
    hf_gpt2().save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="use GPT.from_hf"):
        GPT.from_pretrained(tmp_path / "hf")
    tiny_model().save_pretrained(tmp_path)
    (tmp_path / "model_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model_config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model_config.json").write_text(json.dumps({"n_layers": 2}))
    with pytest.raises(CheckpointError, match="unknown GPTConfig fields"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model_config.json").write_text(json.dumps({"n_layer": 2}))
    with pytest.raises(CheckpointError, match="no such weights file"):
        GPT.from_pretrained(tmp_path)
