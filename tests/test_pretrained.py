"""Chapter 4's checkpoints and GPT-2 weights in and out (gptlib.pretrained): safetensors
round trips, one-line errors, and the same logits as transformers' GPT2LMHeadModel."""

import json

import pytest
import torch

import gptlib.pretrained as gp
from gptlib.model import GPT, GPTConfig
from gptlib.pretrained import (
    CheckpointError,
    gpt_from_hf,
    gpt_to_hf,
    load_pretrained,
    load_weights,
    read_weights,
    save_pretrained,
)

transformers = pytest.importorskip("transformers")

TINY = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def tiny_model(seed=0, config=TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def tokens(config=TINY, shape=(2, 16), seed=1) -> torch.Tensor:
    return torch.randint(
        0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed)
    )


# --- Hugging Face interop ---------------------------------------------------------------------


def hf_gpt2(seed=0, **changes):
    torch.manual_seed(seed)
    config = dict(
        vocab_size=211,
        n_positions=48,
        n_embd=48,
        n_layer=3,
        n_head=4,
        bos_token_id=None,
        eos_token_id=None,
    )
    config.update(changes)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()


def test_from_hf_gives_the_same_logits():
    hf = hf_gpt2()
    ours = gpt_from_hf(hf).eval()
    assert ours.config == GPTConfig(
        vocab_size=211, block_size=48, n_layer=3, n_head=4, n_embd=48
    )
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
    hf = gpt_to_hf(ours)
    assert isinstance(hf, transformers.GPT2LMHeadModel) and not hf.training
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0])
        back = gpt_from_hf(hf)
        assert all(
            torch.equal(a, b)
            for a, b in zip(ours.state_dict().values(), back.state_dict().values())
        )
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
            torch.testing.assert_close(gpt_from_hf(where).eval()(idx)[0], expected)


def test_hub_name_offline_is_a_one_line_error_naming_the_local_option(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # and nothing is cached
    with pytest.raises(ValueError, match="local directory") as info:
        gpt_from_hf("gpt2-not-cached")
    assert "\n" not in str(info.value) and "gpt2-not-cached" in str(info.value)


def test_local_gpt2_uses_the_env_var_or_reports_none(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(gp.GPT2_DIR_ENV, raising=False)
    assert gp.local_gpt2("gpt2") is None
    monkeypatch.setenv(gp.GPT2_DIR_ENV, str(tmp_path))
    assert gp.local_gpt2("gpt2") == tmp_path


@pytest.mark.parametrize("bad", ["./no-such-dir", "/no/such/dir", "a/b/c"])
def test_from_hf_missing_local_path(bad):
    with pytest.raises(
        ValueError, match="not a directory holding a saved GPT2LMHeadModel"
    ):
        gpt_from_hf(bad)


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
        gpt_from_hf(hf_gpt2(**changes))


def test_from_hf_refuses_untied_and_foreign_models():
    hf = hf_gpt2()
    hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone() + 1)
    with pytest.raises(ValueError, match="untied"):
        gpt_from_hf(hf)
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        gpt_from_hf(torch.nn.Linear(2, 2))


def test_to_hf_needs_biases():
    with pytest.raises(ValueError, match="bias=False"):
        gpt_to_hf(
            GPT(
                GPTConfig(
                    vocab_size=50,
                    block_size=8,
                    n_layer=1,
                    n_head=2,
                    n_embd=8,
                    bias=False,
                )
            )
        )


# --- saving and loading ----------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model(2)
    save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "model.safetensors",
        "model_config.json",
    ]
    stored = read_weights(tmp_path / "ckpt" / "model.safetensors")
    assert (
        "lm_head.weight" not in stored and "transformer.wte.weight" in stored
    )  # tied: saved once
    assert json.loads((tmp_path / "ckpt" / "model_config.json").read_text()) == {
        "vocab_size": 97,
        "block_size": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_embd": 32,
        "dropout": 0.0,
        "bias": True,
    }
    loaded = load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items()
    ):
        assert torch.equal(a, b), name
    idx = tokens()
    assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_save_load_keeps_the_dtype_and_overwrites_cleanly(tmp_path):
    model = tiny_model().to(torch.bfloat16)
    save_pretrained(model, tmp_path)
    save_pretrained(model, tmp_path)  # again, over the first
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "model_config.json",
    ]
    loaded = load_pretrained(str(tmp_path))
    assert loaded.transformer.wte.weight.dtype == torch.bfloat16
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values())
    )


def test_loading_into_another_architecture_lists_the_mismatches(tmp_path):
    save_pretrained(tiny_model(), tmp_path)
    other = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=3, n_head=4, n_embd=48))
    with pytest.raises(CheckpointError) as info:
        load_weights(
            other,
            read_weights(tmp_path / "model.safetensors"),
            source="model.safetensors",
        )
    message = str(info.value)
    assert "\n" not in message
    assert (
        "transformer.wte.weight is (97, 32) in model.safetensors but (97, 48) in the model"
        in message
    )
    assert "more" in message  # the list is cut after a few, with the count of the rest
    # a config that no longer matches the weights: from_pretrained names both
    config = json.loads((tmp_path / "model_config.json").read_text())
    (tmp_path / "model_config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(
        CheckpointError, match=r"transformer\.h\.2\.ln_1\.weight \(32,\) is missing"
    ):
        load_pretrained(tmp_path)
    # and extra tensors are named too
    with pytest.raises(
        CheckpointError, match=r"extra\.weight \(3,\) in the file is not in the model"
    ):
        load_weights(
            tiny_model(),
            {**tiny_model().state_dict(), "extra.weight": torch.zeros(3)},
            source="the file",
        )


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_are_a_one_line_error_naming_the_file(tmp_path, damage):
    save_pretrained(tiny_model(), tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "garbage": b"\x00not safetensors" * 64,
            "empty": b"",
        }[damage]
    )
    with pytest.raises(CheckpointError) as info:
        load_pretrained(tmp_path)
    assert str(weights) in str(info.value) and "\n" not in str(info.value)


def test_missing_or_broken_config_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="model_config.json"):
        load_pretrained(tmp_path)
    hf_gpt2().save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="use gpt_from_hf"):
        load_pretrained(tmp_path / "hf")
    save_pretrained(tiny_model(), tmp_path)
    (tmp_path / "model_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model_config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "model_config.json").write_text(json.dumps({"n_layers": 2}))
    with pytest.raises(CheckpointError, match="unknown GPTConfig fields"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model_config.json").write_text(json.dumps({"n_layer": 2}))
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_pretrained(tmp_path)
