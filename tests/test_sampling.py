"""Decoding (chapter 6: gptlib.logits, gptlib.sampling, gptlib.beam, gptlib.sample): the KV
cache gives the reference's logits, seeds reproduce, beam 1 is greedy, n-gram blocking
holds, the edge cases behave as documented, and `gptlib sample` samples."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gptlib.beam import beam_search
from gptlib.logits import (
    NGramBlocker,
    SamplingError,
    apply_repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from gptlib.model import GPT, GPTConfig
from gptlib.sample import decode_layout, load_sampling_model, sample_command
from gptlib.sampling import (
    StopCriteria,
    TextStreamer,
    generate,
    generate_text,
    stream,
    stream_text,
)
from gptlib.stories import generate_stories
from gptlib.tokenizer import train_bpe


def tiny_gpt(vocab_size=97, block_size=16, n_layer=2, seed=0):
    """A small random GPT whose next-token distributions are peaked (clear argmax gaps)."""
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=2,
            n_embd=32,
        )
    )
    torch.nn.init.normal_(
        model.transformer.wte.weight, std=0.25
    )  # GPT-2's 0.02 gives near-ties
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_gpt()


@pytest.fixture(scope="module")
def tok():
    return train_bpe(generate_stories(200), 400)


@pytest.fixture(scope="module")
def story_gpt(tok):
    return tiny_gpt(vocab_size=tok.vocab_size, block_size=32)


def prompt(B, T, vocab=97, seed=1):
    return torch.randint(
        0, vocab, (B, T), generator=torch.Generator().manual_seed(seed)
    )


def greedy_reference(model, idx, n):
    """The textbook loop: no cache, the context cropped to block_size, argmax."""
    logits_per_step = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -model.config.block_size :])[0][:, -1]
            logits_per_step.append(logits)
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx, logits_per_step


# ---- the KV cache gives the reference's tokens and logits, also past a full window ----------------


@pytest.mark.parametrize(
    "B,T,n", [(2, 5, 40), (1, 1, 30), (1, 16, 12), (3, 15, 20), (1, 20, 10)]
)
def test_greedy_with_cache_equals_reference_at_every_step(model, B, T, n):
    idx = prompt(B, T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # T=20 > block_size warns (tested below)
        ref_ids, ref_logits = greedy_reference(model, idx[:, -16:], n)
        for use_cache in (True, False):
            steps = list(stream(model, idx, n, temperature=0, use_cache=use_cache))
            assert len(steps) == n
            tokens = torch.stack([s.tokens for s in steps], dim=1)
            assert torch.equal(tokens, ref_ids[:, -n:])
            for step, ref in zip(steps, ref_logits):
                torch.testing.assert_close(step.logits, ref)


def test_generate_with_and_without_cache_agree_past_the_window(model):
    idx = prompt(2, 7)
    with_cache = generate(model, idx, 50, temperature=0)
    assert with_cache.shape == (2, 57)
    assert torch.equal(
        with_cache, generate(model, idx, 50, temperature=0, use_cache=False)
    )


def test_shift_overflow_is_exact_until_the_window_fills_then_keeps_going(model):
    idx = prompt(1, 6)
    exact = list(stream(model, idx, 40, temperature=0))
    shifted = list(stream(model, idx, 40, temperature=0, overflow="shift"))
    assert len(shifted) == 40
    for a, b in list(zip(exact, shifted))[
        : 16 - 6 + 1
    ]:  # the window fills after 11 steps
        torch.testing.assert_close(a.logits, b.logits)
    with pytest.raises(SamplingError, match="overflow"):
        generate(model, idx, 3, overflow="slide")


# ---- seeds, samples, filters --------------------------------------------------------------------


def test_same_seed_same_sample_whatever_the_global_rng(model):
    idx = prompt(1, 4)
    torch.manual_seed(123)
    a = generate(model, idx, 30, temperature=1.2, top_k=20, seed=5, num_samples=3)
    torch.rand(10)  # advance the global generator: the seed alone decides
    b = generate(model, idx, 30, temperature=1.2, top_k=20, seed=5, num_samples=3)
    c = generate(model, idx, 30, temperature=1.2, top_k=20, seed=6, num_samples=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (
        a.shape == (3, 34) and len({tuple(r) for r in a[:, 4:].tolist()}) > 1
    )  # samples differ


def test_temperature_zero_is_greedy_whatever_the_filters(model):
    idx = prompt(1, 3)
    greedy = greedy_reference(model, idx, 25)[0]
    assert torch.equal(generate(model, idx, 25, temperature=0), greedy)
    assert torch.equal(
        generate(model, idx, 25, temperature=0, top_k=2, top_p=0.3, seed=1), greedy
    )


@pytest.mark.parametrize("k", [0, None, 97, 1000])
def test_top_k_zero_none_or_vocab_is_no_filter(model, k):
    z = torch.randn(3, 97)
    assert torch.equal(top_k_filter(z, k), z)
    idx = prompt(1, 3)
    assert torch.equal(
        generate(model, idx, 20, top_k=k, seed=2), generate(model, idx, 20, seed=2)
    )


def test_top_p_one_is_no_filter_and_a_tiny_top_p_keeps_one_token(model):
    z = torch.randn(3, 97)
    assert torch.equal(top_p_filter(z, 1.0), z) and torch.equal(
        top_p_filter(z, None), z
    )
    kept = top_p_filter(z, 1e-12).isfinite()
    assert kept.sum(-1).tolist() == [1, 1, 1] and torch.equal(
        kept.float().argmax(-1), z.argmax(-1)
    )
    idx = prompt(1, 3)
    assert torch.equal(
        generate(model, idx, 20, top_p=1.0, seed=2), generate(model, idx, 20, seed=2)
    )
    assert torch.equal(
        generate(model, idx, 20, top_p=1e-9, seed=2),
        greedy_reference(model, idx, 20)[0],
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 60),
    p=st.floats(0.01, 0.99),
    penalty=st.floats(0.5, 3.0),
    n=st.integers(1, 4),
)
def test_filters_equal_transformers_processors(seed, k, p, penalty, n):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 50, generator=g) * 4
    ids = torch.randint(
        0, 6, (3, 25), generator=g
    )  # few distinct tokens: many repeated n-grams
    assert torch.equal(top_k_filter(z, k), TopKLogitsWarper(k)(ids, z.clone()))
    assert torch.equal(top_p_filter(z, p), TopPLogitsWarper(p)(ids, z.clone()))
    torch.testing.assert_close(
        apply_repetition_penalty(z, ids, penalty),
        RepetitionPenaltyLogitsProcessor(penalty)(ids, z.clone()),
    )
    ours = z.clone()
    for row in range(3):
        ours[row, list(NGramBlocker(n, ids[row].tolist()).banned())] = float("-inf")
    assert torch.equal(ours, NoRepeatNGramLogitsProcessor(n)(ids, z.clone()))


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(st.integers(0, 3), max_size=30), n=st.integers(1, 4))
def test_ngram_blocker_bans_what_a_scan_of_the_sequence_bans(seq, n):
    blocker = NGramBlocker(n)
    for t, token in enumerate(seq):
        prefix = seq[max(0, t - n + 1) : t]
        scan = {
            seq[i + n - 1] for i in range(t - n + 1) if seq[i : i + n - 1] == prefix
        }
        assert blocker.banned() == (scan if t >= n - 1 else set())
        blocker.push(token)


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_ngram_blocker_needs_a_positive_size(n):
    with pytest.raises(SamplingError, match="^no_repeat_ngram_size="):
        NGramBlocker(n)


# ---- no-repeat n-grams ----------------------------------------------------------------------------


def repeats_an_ngram(seq, n, start):
    """Does an n-gram ending at a position >= start occur earlier in seq?"""
    for end in range(max(start, n - 1), len(seq)):
        gram = seq[end - n + 1 : end + 1]
        if any(seq[i : i + n] == gram for i in range(end - n + 1)):
            return True
    return False


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    T=st.integers(1, 12),
    greedy=st.booleans(),
)
def test_no_repeat_ngram_never_repeats_an_ngram(model, n, seed, T, greedy):
    idx = prompt(2, T, seed=seed)
    out = generate(
        model,
        idx,
        40,
        temperature=0 if greedy else 1.5,
        no_repeat_ngram_size=n,
        seed=seed,
    )
    for row in out.tolist():
        assert not repeats_an_ngram(row, n, start=T)
    best = beam_search(model, idx[0], 25, beam_size=3, no_repeat_ngram_size=n)[0]
    assert not repeats_an_ngram(best.tokens.tolist(), n, start=T)


def test_greedy_repeats_without_blocking_and_blocking_fails_clearly_when_no_token_is_left():
    small = tiny_gpt(vocab_size=6, block_size=16)
    idx = torch.tensor([[1, 2]])
    assert repeats_an_ngram(
        generate(small, idx, 30, temperature=0)[0].tolist(), 2, start=2
    )
    with pytest.raises(SamplingError, match="no_repeat_ngram_size=1 bans every token"):
        generate(small, idx, 10, no_repeat_ngram_size=1, temperature=0)


# ---- beam search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [None, [3, 50, 7]])
@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_one_is_greedy(model, stop, use_cache):
    for seed in range(4):
        idx = prompt(1, 1 + seed * 3, seed=seed)
        greedy = generate(model, idx, 30, temperature=0, stop=stop)[0]
        best = beam_search(
            model,
            idx,
            30,
            beam_size=1,
            stop=stop,
            use_cache=use_cache,
            length_penalty=0.7,
        )[0]
        assert torch.equal(best.tokens, greedy)


def test_beam_search_cache_equals_no_cache_and_ranks_by_score(model):
    idx = prompt(1, 4, seed=3)
    a = beam_search(
        model, idx, 30, beam_size=4, num_return=4, stop=[5]
    )  # fills the window
    b = beam_search(
        model, idx, 30, beam_size=4, num_return=4, stop=[5], use_cache=False
    )
    assert [h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
    assert [h.score for h in a] == sorted((h.score for h in a), reverse=True)
    for h in (
        a
    ):  # the score is the sum of the model's log-probabilities, normalised by length
        n = len(h.tokens) - 4
        with torch.no_grad():
            logp = [
                model(h.tokens[None, : 4 + i][:, -16:])[0][0, -1]
                .log_softmax(-1)[h.tokens[4 + i]]
                .item()
                for i in range(n)
            ]
        assert h.logprob == pytest.approx(
            sum(logp), abs=1e-3
        ) and h.score == pytest.approx(h.logprob / n)
    with pytest.raises(SamplingError, match="num_return"):
        beam_search(model, idx, 5, beam_size=2, num_return=3)


# ---- prompts, stops, text ----------------------------------------------------------------------------


def test_empty_prompt_starts_from_endoftext(story_gpt, tok):
    out = generate(story_gpt, [], 5, tokenizer=tok, seed=0)
    assert out.shape == (1, 6) and out[0, 0].item() == tok.eot_id
    assert generate(story_gpt, "", 5, tokenizer=tok, seed=0).tolist() == out.tolist()
    assert generate(story_gpt, [], 3, eot_id=7, temperature=0)[0, 0].item() == 7
    with pytest.raises(SamplingError, match="idx is empty"):
        generate(story_gpt, [], 3)


def test_too_long_prompt_keeps_its_last_block_size_tokens_and_warns(model):
    idx = prompt(1, 40)
    with pytest.warns(
        UserWarning, match="40 tokens is longer than block_size=16: keeping its last 16"
    ) as w:
        out = generate(model, idx, 5, temperature=0)
    assert w[0].filename == __file__  # the warning points at the caller
    assert torch.equal(out[:, :16], idx[:, -16:])
    assert torch.equal(out, generate(model, idx[:, -16:], 5, temperature=0))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -2}, "no_repeat_ngram_size"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"seed": "x"}, "seed"),
        ({"num_samples": 0}, "num_samples"),
        ({"stop": [1.5]}, "stop"),
        ({"stop": "\n"}, "stop"),  # a stop string without a tokenizer
    ],
)
def test_bad_parameters_give_one_line_errors_naming_them(model, kwargs, name):
    args = {"max_new_tokens": 5, **kwargs}
    for fn in (generate, stream):
        with pytest.raises(SamplingError) as e:
            fn(model, [1, 2], **args)
        assert str(e.value).startswith(f"{name}=") and "\n" not in str(e.value)


def test_bad_prompts_and_beam_arguments(model):
    for idx, match in [
        ([[[1]]], "shape"),
        ([1, 200], "200, outside the vocabulary"),
        ("hi", "pass tokenizer"),
    ]:
        with pytest.raises(SamplingError, match=match):
            generate(model, idx, 2)
    for kwargs, name in [
        ({"beam_size": 0}, "beam_size"),
        ({"length_penalty": float("inf")}, "length_penalty"),
    ]:
        with pytest.raises(SamplingError, match=f"^{name}="):
            beam_search(model, [1], 3, **kwargs)
    with pytest.raises(SamplingError, match="one"):
        beam_search(model, prompt(2, 3), 3)


def test_stop_tokens_finish_rows_which_are_then_padded(model):
    idx = prompt(4, 3)
    free = generate(model, idx, 30, seed=1)
    stop_token = free[0, 3 + 4].item()  # a token that row 0 produces at its fifth step
    out = generate(model, idx, 30, seed=1, stop=stop_token, pad_id=-1 % 97)
    row = out[0, 3:].tolist()
    end = row.index(stop_token)
    assert end <= 4 and all(t == 96 for t in row[end + 1 :])
    for r in out[
        :, 3:
    ].tolist():  # no row goes on after its first stop token (except padding)
        if stop_token in r:
            assert all(t == 96 for t in r[r.index(stop_token) + 1 :])
    steps = list(stream(model, idx[:1], 30, seed=1, stop=stop_token))
    assert (
        len(steps) == end + 1 and steps[-1].finished.all()
    )  # one row: the loop ends with it


def test_stop_strings_and_streamed_text(story_gpt, tok):
    texts = generate_text(story_gpt, tok, "Once upon a time", 40, seed=3, num_samples=4)
    assert len(texts) == 4
    probe = next(t for t in texts if len(t) > 6)
    stop = probe[3:5]  # two characters that a sample produces
    cut = generate_text(
        story_gpt, tok, "Once upon a time", 40, seed=3, num_samples=4, stop=[stop]
    )
    assert all(stop not in t for t in cut)
    assert cut[texts.index(probe)] == probe[: probe.index(stop)]
    streamed = "".join(
        stream_text(story_gpt, tok, "Once upon a time", 40, seed=3, stop=[stop])
    )
    first = generate_text(story_gpt, tok, "Once upon a time", 40, seed=3, stop=[stop])[
        0
    ]
    assert streamed == first and stop not in streamed
    ends = generate_text(
        story_gpt,
        tok,
        "Once",
        60,
        seed=0,
        temperature=2.0,
        stop=tok.eot_id,
        num_samples=3,
    )
    assert all("<|endoftext|>" not in t for t in ends)


def test_text_streamer_never_splits_a_character_nor_leaks_a_stop_string(tok):
    text = "Mia saw a 🦊 and said: héllo wörld 日本! The end. More."
    ids = tok.encode(text)
    assert (
        len(ids) > len(tok.encode("Mia saw a")) + 4
    )  # the fox and the accents are split into bytes
    streamer = TextStreamer(tok)
    pieces = [streamer.push(i) for i in ids] + [streamer.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    streamer = TextStreamer(tok, stop_strings=["The end."])
    pieces = [streamer.push(i) for i in ids] + [streamer.flush()]
    assert "".join(pieces) == text[: text.index("The end.")] and streamer.stopped
    assert StopCriteria(["The end."], tok)(ids) and not StopCriteria(["xyz"], tok)(ids)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(0, 399), max_size=40))
def test_streamed_text_is_the_decoded_text_even_for_invalid_utf8(tok, ids):
    streamer = TextStreamer(tok)  # random ids: bytes that are often not valid UTF-8
    assert "".join([streamer.push(i) for i in ids] + [streamer.flush()]) == tok.decode(
        ids
    )


def test_generation_leaves_training_mode_alone_and_runs_in_eval_mode():
    model = GPT(
        GPTConfig(
            vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.5
        )
    ).train()
    a = generate(model, [1, 2, 3], 10, temperature=0)
    assert model.training
    assert torch.equal(
        a, generate(model, [1, 2, 3], 10, temperature=0)
    )  # no dropout while decoding


def test_decode_layout_changes_the_storage_only(model):
    import copy

    columns = decode_layout(copy.deepcopy(model))
    assert columns.lm_head.weight is columns.transformer.wte.weight  # still tied
    for name, p in columns.named_parameters():
        q = dict(model.named_parameters())[name]
        assert p.shape == q.shape and torch.equal(p, q)
        if name.endswith("c_attn.weight"):
            assert p.stride() == (1, p.shape[0])  # column by column
    idx = prompt(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(columns(idx)[0], model(idx)[0])
    assert torch.equal(
        generate(columns, idx, 30, temperature=0),
        generate(model, idx, 30, temperature=0),
    )


def test_load_sampling_model_reads_a_checkpoint_in_decode_layout(checkpoint, story_gpt):
    loaded, tokenizer = load_sampling_model(checkpoint)
    assert not loaded.training and loaded.lm_head.weight.stride() == (
        1,
        loaded.config.vocab_size,
    )
    assert tokenizer.vocab_size == loaded.config.vocab_size
    assert torch.equal(loaded.lm_head.weight, story_gpt.lm_head.weight)


def test_zero_new_tokens_returns_the_prompt(model):
    idx = prompt(2, 3)
    assert (
        torch.equal(generate(model, idx, 0), idx) and list(stream(model, idx, 0)) == []
    )


def test_stream_returns_what_generate_returns(model):
    idx = prompt(2, 3)
    steps = stream(model, idx, 12, seed=4, stop=[5])
    tokens = []
    with pytest.raises(StopIteration) as end:
        while True:
            tokens.append(next(steps).tokens)
    assert torch.equal(
        end.value.value, torch.cat([idx, torch.stack(tokens, dim=1)], dim=1)
    )
    assert torch.equal(end.value.value, generate(model, idx, 12, seed=4, stop=[5]))


# ---- gptlib sample -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, story_gpt, tok):
    """A checkpoint folder as chapter 5 writes it: weights, config, tokenizer, the run's config.yaml."""
    from gptlib.config import RUN_CONFIG_FILE, TrainConfig, config_to_yaml
    from gptlib.pretrained import save_pretrained
    from gptlib.shards import TOKENIZER_FILE

    folder = tmp_path_factory.mktemp("ckpt")
    save_pretrained(story_gpt, folder)
    tok.save(folder / TOKENIZER_FILE)
    cfg = TrainConfig()
    cfg.generation.prompt, cfg.generation.max_new_tokens, cfg.generation.seed = (
        "Once upon a time",
        12,
        3,
    )
    (folder / RUN_CONFIG_FILE).write_text(config_to_yaml(cfg))
    return folder


def test_sample_command_streams_text_with_the_run_defaults(
    checkpoint, story_gpt, tok, capsys
):
    assert sample_command(["--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    expected = generate_text(
        story_gpt,
        tok,
        "Once upon a time",
        12,
        temperature=0.8,
        top_k=50,
        seed=3,
        stop=tok.eot_id,
    )[0]  # the GenerationSection defaults: temperature 0.8, top_k 50
    assert out == "Once upon a time" + expected + "\n"
    argv = ["--checkpoint", str(checkpoint), "--prompt", "Tom", "--max-new-tokens", "9"]
    assert sample_command([*argv, "--temperature", "0", "--num-samples", "2"]) == 0
    samples = capsys.readouterr().out.strip().split("\n---\n")
    greedy = (
        "Tom"
        + generate_text(story_gpt, tok, "Tom", 9, temperature=0, stop=tok.eot_id)[0]
    )
    assert samples == [greedy, greedy]
    assert sample_command([*argv, "--beam-size", "1"]) == 0
    assert capsys.readouterr().out == greedy + "\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--top-p", "1.5"], "gptlib sample: error: top_p=1.5 is not allowed"),
        (
            ["--temperature", "-1"],
            "gptlib sample: error: temperature=-1.0 is not allowed",
        ),
        (
            ["--checkpoint", "/nonexistent/run"],
            "gptlib sample: error: checkpoint '/nonexistent/run' does not exist",
        ),
        (
            ["--checkpoint", "gpt2-xl"],
            "gptlib sample: error: gpt2-xl weights are not on this machine",
        ),
    ],
)
def test_sample_command_bad_input_is_one_line(
    checkpoint, capsys, monkeypatch, args, message
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(
        "HF_HOME", "/nonexistent/hf"
    )  # no cached GPT-2 here, whatever this machine has
    argv = ["--checkpoint", str(checkpoint), "--max-new-tokens", "3", *args]
    assert sample_command(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_sample_command_without_a_story_model_says_how_to_get_one(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path))  # no checkpoints/story-gpt there
    assert sample_command(["--prompt", "Hi"]) == 1
    err = capsys.readouterr().err
    assert (
        "no story model in" in err
        and "gptlib train story" in err
        and err.count("\n") == 1
    )
    with pytest.raises(ValueError, match="no story model"):
        load_sampling_model()  # it never trains one itself
    assert not (tmp_path / "checkpoints" / "story-gpt" / "model.safetensors").exists()
    assert (
        sample_command(["--temperature", "warm"]) == 2
    )  # argparse: usage and the problem
    assert "invalid float value: 'warm'" in capsys.readouterr().err


def test_gptlib_sample_command_runs_in_a_subprocess(checkpoint):
    import subprocess
    import sys

    argv = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "Lily",
        "--max-new-tokens",
        "5",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gptlib", *argv, "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Lily") and result.stderr.startswith("[")


@pytest.fixture
def fake_gpt2(tmp_path, monkeypatch, shared_data):
    """A tiny random model with GPT-2's vocabulary, saved by transformers where $GPTLIB_GPT2_DIR
    points: the code path of real GPT-2 weights, without them."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    monkeypatch.setenv("GPTLIB_GPT2_DIR", str(tmp_path / "gpt2"))
    monkeypatch.setenv(
        "GPTLIB_SHARED_DATA", str(shared_data)
    )  # GPT-2's tokenizer: gpt2.tiktoken
    return tmp_path / "gpt2"


def test_gpt2_weights_when_present_sample_through_the_same_code(fake_gpt2, capsys):
    model, tokenizer = load_sampling_model("gpt2")
    assert tokenizer.eot_id == 50256 and model.config.vocab_size == 50257
    prompt = tokenizer.encode("Hello, world")
    ids = generate(model, prompt, 8, temperature=0)[0, len(prompt) :].tolist()
    ids = ids[: ids.index(tokenizer.eot_id)] if tokenizer.eot_id in ids else ids
    text = generate_text(
        model, tokenizer, "Hello, world", 8, temperature=0, stop=tokenizer.eot_id
    )[0]
    assert text == tokenizer.decode(ids)
    args = [
        "--checkpoint",
        "gpt2",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
    ]
    assert sample_command(args) == 0
    expected = (
        "Hello"
        + generate_text(
            model, tokenizer, "Hello", 5, temperature=0, stop=tokenizer.eot_id
        )[0]
    )
    assert capsys.readouterr().out == expected + "\n"


def test_ngram_bans_leave_the_yielded_raw_logits_alone(model):
    # Step.logits is documented as the logits before any processing: no -inf from the bans
    steps = list(
        stream(model, [1, 2, 1, 2, 1], 6, temperature=0, no_repeat_ngram_size=2)
    )
    assert all(torch.isfinite(step.logits).all() for step in steps)
    assert any(
        torch.isinf(step.probs.log()).any() for step in steps[1:]
    )  # the bans did apply


def test_beam_search_needs_a_new_token(model):
    with pytest.raises(SamplingError, match="max_new_tokens=0 is not allowed"):
        beam_search(model, [1, 2], 0)


def test_shift_overflow_with_a_one_token_window():
    one = tiny_gpt(block_size=1)
    assert generate(one, [3], 4, temperature=0, overflow="shift").shape == (1, 5)


def test_stop_strings_from_a_shell_keep_non_ascii_characters():
    from gptlib.sample import _stop_string

    assert (
        _stop_string("é\\n猫\\t") == "é\n猫\t" and _stop_string("plain é") == "plain é"
    )
