"""Chapter 3: the encoder-decoder transformer, checked against torch.nn.Transformer, and its decoders."""

import random
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.attention import MultiHeadAttention
from gptlib.transformer import (
    NumberTask,
    Transformer,
    beam_search,
    greedy_decode,
    noam_lr,
    number_to_words,
    sequence_scores,
    sinusoidal_encoding,
)

# ---------------------------------------------------------------- torch.nn.Transformer


def copy_from_torch(ours: Transformer, ref: nn.Transformer) -> None:
    def copy_attention(dst: MultiHeadAttention, src: nn.MultiheadAttention):
        for proj, w, b in zip(
            (dst.q_proj, dst.k_proj, dst.v_proj), src.in_proj_weight.chunk(3), src.in_proj_bias.chunk(3)
        ):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        dst.out_proj.load_state_dict(src.out_proj.state_dict())

    with torch.no_grad():
        pairs = [*zip(ours.encoder, ref.encoder.layers), *zip(ours.decoder, ref.decoder.layers)]
        for layer, ref_layer in pairs:
            copy_attention(layer.self_attn, ref_layer.self_attn)
            layer.ff.linear1.load_state_dict(ref_layer.linear1.state_dict())
            layer.ff.linear2.load_state_dict(ref_layer.linear2.state_dict())
            layer.norm1.load_state_dict(ref_layer.norm1.state_dict())
            layer.norm2.load_state_dict(ref_layer.norm2.state_dict())
        for layer, ref_layer in zip(ours.decoder, ref.decoder.layers):
            copy_attention(layer.cross_attn, ref_layer.multihead_attn)
            layer.norm3.load_state_dict(ref_layer.norm3.state_dict())
        if ref.encoder.norm is not None:
            ours.encoder_norm.load_state_dict(ref.encoder.norm.state_dict())
            ours.decoder_norm.load_state_dict(ref.decoder.norm.state_dict())


def torch_transformer(d, heads, layers, d_ff, norm_first, final_norm):
    kwargs = dict(
        d_model=d, nhead=heads, dim_feedforward=d_ff, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested-tensor fast path notes
        if final_norm:  # PyTorch's default: a final LayerNorm after each stack, in both placements
            return nn.Transformer(num_encoder_layers=layers, num_decoder_layers=layers, **kwargs)
        encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**kwargs), layers, norm=None)
        decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kwargs), layers, norm=None)
        return nn.Transformer(custom_encoder=encoder, custom_decoder=decoder, **kwargs)


def padded_batch(B=3, S=9, T=7, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, vocab, (B, S), generator=g)
    tgt = torch.randint(1, vocab, (B, T), generator=g)
    for i, (s_len, t_len) in enumerate([(S, T), (S - 3, T - 2), (2, 3)][:B]):
        src[i, s_len:] = 0
        tgt[i, t_len:] = 0
    return src, tgt


@pytest.mark.parametrize(
    "norm_first,final_norm", [(False, None), (False, True), (True, None), (True, True)], ids=str
)
def test_equals_torch_transformer(norm_first, final_norm):
    torch.manual_seed(0)
    d, heads, layers, d_ff = 32, 4, 3, 48
    uses_final_norm = norm_first if final_norm is None else final_norm
    ref = torch_transformer(d, heads, layers, d_ff, norm_first, uses_final_norm)
    ours = Transformer(20, 23, d, heads, layers, d_ff, 0.0, norm_first, final_norm=final_norm)
    assert isinstance(ours.encoder_norm, nn.LayerNorm) == uses_final_norm
    copy_from_torch(ours, ref)
    src, tgt = padded_batch()
    src_mask, tgt_mask = src != 0, tgt != 0
    x_src, x_tgt = ours.embed(ours.src_embed, src), ours.embed(ours.tgt_embed, tgt)
    causal = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)  # torch: True = masked
    memory_ref = ref.encoder(x_src, src_key_padding_mask=~src_mask)
    hidden = ref.decoder(
        x_tgt, memory_ref, tgt_mask=causal, tgt_is_causal=True,
        tgt_key_padding_mask=~tgt_mask, memory_key_padding_mask=~src_mask,
    )  # fmt: skip
    torch.testing.assert_close(ours.encode(src, src_mask), memory_ref)
    logits = ours(src, tgt, src_mask, tgt_mask)
    torch.testing.assert_close(logits, ours.generator(hidden))
    # and without any padding
    full = torch.randint(1, 20, (2, 6)), torch.randint(1, 23, (2, 5))
    hidden = ref(
        ours.embed(ours.src_embed, full[0]), ours.embed(ours.tgt_embed, full[1]), tgt_mask=causal[:5, :5]
    )
    torch.testing.assert_close(ours(*full), ours.generator(hidden))


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_does_not_change_real_positions(norm_first):
    torch.manual_seed(0)
    model = Transformer(20, 20, 32, 4, 2, 64, 0.0, norm_first).eval()
    src, tgt = padded_batch()
    with torch.no_grad():
        batch = model(src, tgt, src != 0, tgt != 0)
        more = model(F.pad(src, (0, 4)), F.pad(tgt, (0, 3)), F.pad(src, (0, 4)) != 0, F.pad(tgt, (0, 3)) != 0)
        for i in range(src.shape[0]):  # each sequence alone, without any padding
            s, t = src[i][src[i] != 0][None], tgt[i][tgt[i] != 0][None]
            alone = model(s, t)
            torch.testing.assert_close(batch[i, : t.shape[1]], alone[0])
            torch.testing.assert_close(more[i, : t.shape[1]], alone[0])


def test_padding_changes_outputs_without_the_mask():
    # the check above can fail: without the source mask, padding does leak into the outputs
    torch.manual_seed(0)
    model = Transformer(20, 20, 32, 4, 2, 64, 0.0, True).eval()
    src, tgt = padded_batch()
    with torch.no_grad():
        masked = model(src, tgt, src != 0)
        unmasked = model(src, tgt)
    assert not torch.allclose(masked[1], unmasked[1], atol=1e-3)


# ---------------------------------------------------------------- the task


@pytest.mark.parametrize(
    "n,words",
    [
        (0, "zero"),
        (13, "thirteen"),
        (20, "twenty"),
        (99, "ninety-nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (1000, "one thousand"),
        (1010, "one thousand ten"),
        (20_000, "twenty thousand"),
        (100_001, "one hundred thousand one"),
        (999_999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_number_to_words_rejects_bad_numbers():
    for bad in (-1, 1_000_000, 2.5, "7"):
        with pytest.raises(ValueError, match="is not an integer from 0 to 999999"):
            number_to_words(bad)


def test_task_round_trip_and_held_out_set():
    task = NumberTask()
    assert len(task.test_numbers) == 1000 and all(100 <= n < 1_000_000 for n in task.test_numbers)
    assert NumberTask().test_numbers == task.test_numbers != NumberTask(seed=1).test_numbers
    rng = random.Random(0)
    for n in [0, 7, 40, 115, 1_905, 70_003, 999_999, *rng.sample(range(1_000_000), 200)]:
        words, digits = task.texts(n)
        for direction, (source, target) in (("to-digits", (words, digits)), ("to-words", (digits, words))):
            src, tgt = task.batch([n], [direction])
            assert task.decode(src[0]) == f"<{direction}> {source}"
            assert task.decode(tgt[0]) == target
            assert tgt[0, 0] == task.bos_id and task.eos_id in tgt[0].tolist()
    held_out = set(task.test_numbers)
    seen = set()
    for _ in range(100):
        src, tgt = task.sample(64, rng)
        for s in src:
            text = task.decode(s)
            if text.startswith("<to-words>"):
                seen.add(int(text.split(" ", 1)[1].replace(",", "")))
    assert len(seen) > 2000 and not seen & held_out


def test_task_bad_input():
    task = NumberTask(n_test=5)
    with pytest.raises(ValueError, match="direction 'sideways' is not one of"):
        task.pair(5, "sideways")
    with pytest.raises(ValueError, match="'eleventy' is not in the number task's vocabulary"):
        task.tokens("eleventy one")
    with pytest.raises(ValueError, match="n_test=0"):
        NumberTask(n_test=0)


# ---------------------------------------------------------------- pieces


def test_sinusoidal_encoding():
    pe = sinusoidal_encoding(64, 16)
    assert pe.shape == (64, 16)
    torch.testing.assert_close(pe[5, 0], torch.tensor(5.0).sin())
    torch.testing.assert_close(pe[5, 1], torch.tensor(5.0).cos())
    torch.testing.assert_close(pe[7, 14], torch.tensor(7 / 10000 ** (14 / 16)).sin())
    torch.testing.assert_close(pe.pow(2).view(64, 8, 2).sum(-1), torch.ones(64, 8))  # sin^2 + cos^2
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_encoding(10, 7)


def test_noam_lr():
    lrs = [noam_lr(s, 512, 4000) for s in range(1, 20_000)]
    assert max(lrs) == lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)
    assert noam_lr(100, 64, 200, factor=2.0) == pytest.approx(2 * 64**-0.5 * 100 * 200**-1.5)
    with pytest.raises(ValueError, match="step >= 1"):
        noam_lr(0, 512, 4000)


def test_bad_model_input():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        Transformer(10, 10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_layers=0"):
        Transformer(10, 10, 32, 4, 0)
    model = Transformer(10, 10, 32, 4, 1, 64, 0.0, True, max_len=8)
    src, tgt = torch.randint(1, 10, (2, 5)), torch.randint(1, 10, (2, 4))
    with pytest.raises(ValueError, match="src_mask must be a bool tensor of shape"):
        model(src, tgt, src_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="L <= max_len=8"):
        model(torch.randint(1, 10, (2, 9)), tgt)
    with pytest.raises(ValueError, match="must be"):
        model(src, tgt[:1])
    with pytest.raises(ValueError, match="max_len=0"):
        greedy_decode(model, src, 0, 1, 2)
    with pytest.raises(ValueError, match="beam_size=0"):
        beam_search(model, src, 0, 5, 1, 2)


# ---------------------------------------------------------------- training and decoding


def train(task, steps, seed=0, d=32):
    torch.manual_seed(seed)
    model = Transformer(len(task.vocab), len(task.vocab), d, 4, 2, 2 * d, 0.0, True, max_len=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: noam_lr(i + 1, d, warmup=50, factor=2.0)
    )
    rng, losses = random.Random(seed), []
    for step in range(steps):
        src, tgt = task.sample(32, rng, task.DIRECTIONS[step % 2])
        logits = model(src, tgt[:, :-1], src != task.pad_id, tgt[:, :-1] != task.pad_id)
        loss = F.cross_entropy(
            logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=task.pad_id, label_smoothing=0.1
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.fixture(scope="module")
def trained():
    """A briefly trained model, uncertain enough that beam search has something to find; and
    its task and losses."""
    task = NumberTask(n_test=200)
    model, losses = train(task, 250)
    return task, model, losses


def test_training_lowers_the_loss(trained):
    task, _, losses = trained
    first, last = sum(losses[:10]) / 10, sum(losses[70:80]) / 10
    assert last < 0.6 * first, (first, last)
    assert train(task, 5)[1] == losses[:5]  # a fixed seed fixes the run


def held_out(task, direction, n=100):
    src, _ = task.batch(task.test_numbers[:n], [direction] * n)
    return src, src != task.pad_id


def same_width(*ys, value):
    width = max(y.shape[1] for y in ys)
    return [F.pad(y, (0, width - y.shape[1]), value=value) for y in ys]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("direction", NumberTask.DIRECTIONS)
def test_beam_of_one_is_greedy(trained, direction, length_penalty):
    task, model, _ = trained
    src, mask = held_out(task, direction)
    kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
    greedy = greedy_decode(model, src, **kw)
    beam = beam_search(model, src, 1, length_penalty=length_penalty, keep_greedy=False, **kw)
    greedy, beam = same_width(greedy, beam, value=task.eos_id)
    assert torch.equal(greedy, beam)


@pytest.mark.parametrize("beam_size,length_penalty", [(2, 0.0), (4, 0.0), (4, 0.6), (6, 1.0)])
def test_wider_beam_never_scores_lower_than_greedy(trained, beam_size, length_penalty):
    task, model, _ = trained
    higher = 0
    for direction in task.DIRECTIONS:
        src, mask = held_out(task, direction)
        kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
        greedy, beam = same_width(
            greedy_decode(model, src, **kw), beam_search(model, src, beam_size, length_penalty=length_penalty, **kw),
            value=task.eos_id,
        )  # fmt: skip
        g = sequence_scores(model, src, greedy, task.eos_id, length_penalty, mask)
        b = sequence_scores(model, src, beam, task.eos_id, length_penalty, mask)
        assert (b >= g - 1e-5).all()
        higher += int((b > g + 1e-4).sum())
    assert higher > 0  # on some held-out inputs beam search finds a better output


def test_plain_beam_search_finds_higher_scores(trained):
    # without the greedy safeguard, beam search itself finds the better outputs
    task, model, _ = trained
    src, mask = held_out(task, "to-words")
    kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
    greedy, plain = same_width(
        greedy_decode(model, src, **kw), beam_search(model, src, 4, length_penalty=0.0, keep_greedy=False, **kw),
        value=task.eos_id,
    )  # fmt: skip
    g = sequence_scores(model, src, greedy, task.eos_id, 0.0, mask)
    p = sequence_scores(model, src, plain, task.eos_id, 0.0, mask)
    assert (p > g + 1e-4).sum() > (p < g - 1e-4).sum()


def test_sequence_scores_by_hand(trained):
    task, model, _ = trained
    src, mask = held_out(task, "to-digits", n=1)
    ys = torch.tensor(
        [[task.bos_id, task.stoi["4"], task.stoi["2"], task.eos_id, task.eos_id, task.stoi["7"]]]
    )
    with torch.no_grad():
        logp = model(src, ys[:, :3], mask).log_softmax(-1)[0]
    by_hand = (
        logp[0, ys[0, 1]] + logp[1, ys[0, 2]] + logp[2, task.eos_id]
    )  # tokens after the first eos do not count
    torch.testing.assert_close(sequence_scores(model, src, ys, task.eos_id, 0.0, mask)[0], by_hand)
    torch.testing.assert_close(
        sequence_scores(model, src, ys, task.eos_id, 1.0, mask)[0], by_hand / ((5 + 3) / 6)
    )


def test_greedy_decode_pads_with_eos_and_restores_mode(trained):
    task, model, _ = trained
    src, mask = held_out(task, "to-words", n=20)
    model.train()
    out = greedy_decode(model, src, 18, task.bos_id, task.eos_id, mask)
    assert model.training
    model.eval()
    assert (out[:, 0] == task.bos_id).all()
    for row in out.tolist():
        if task.eos_id in row:
            first = row.index(task.eos_id)
            assert all(t == task.eos_id for t in row[first:])
    assert torch.equal(out, greedy_decode(model, src, 18, task.bos_id, task.eos_id, mask))
