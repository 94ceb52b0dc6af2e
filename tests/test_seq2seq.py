"""Chapter 3: the number task, the learning-rate schedule and the decoders (gptlib.seq2seq),
with a briefly trained gptlib.transformer.Transformer."""

import random

import pytest
import torch
import torch.nn.functional as F

from gptlib.seq2seq import (
    NumberTask,
    greedy_decode,
    noam_lr,
    number_to_words,
    seq2seq_beam_search,
    sequence_scores,
)
from gptlib.transformer import Transformer

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
    assert len(task.test_numbers) == 1000 and all(
        100 <= n < 1_000_000 for n in task.test_numbers
    )
    assert (
        NumberTask().test_numbers
        == task.test_numbers
        != NumberTask(seed=1).test_numbers
    )
    rng = random.Random(0)
    for n in [
        0,
        7,
        40,
        115,
        1_905,
        70_003,
        999_999,
        *rng.sample(range(1_000_000), 200),
    ]:
        words, digits = task.texts(n)
        for direction, (source, target) in (
            ("to-digits", (words, digits)),
            ("to-words", (digits, words)),
        ):
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
    with pytest.raises(
        ValueError, match="'eleventy' is not in the number task's vocabulary"
    ):
        task.tokens("eleventy one")
    with pytest.raises(ValueError, match="n_test=0"):
        NumberTask(n_test=0)


# ---------------------------------------------------------------- the schedule


def test_noam_lr():
    lrs = [noam_lr(s, 512, 4000) for s in range(1, 20_000)]
    assert max(lrs) == lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)
    assert noam_lr(100, 64, 200, factor=2.0) == pytest.approx(
        2 * 64**-0.5 * 100 * 200**-1.5
    )
    with pytest.raises(ValueError, match="step >= 1"):
        noam_lr(0, 512, 4000)


def test_bad_decoding_input():
    model = Transformer(10, 10, 32, 4, 1, 64, 0.0, True, max_len=8)
    src = torch.randint(1, 10, (2, 5))
    with pytest.raises(ValueError, match="max_len=0"):
        greedy_decode(model, src, 0, 1, 2)
    with pytest.raises(ValueError, match="bos and eos must differ"):
        greedy_decode(model, src, 5, 2, 2)
    with pytest.raises(ValueError, match="beam_size=0"):
        seq2seq_beam_search(model, src, 0, 5, 1, 2)
    with pytest.raises(ValueError, match="gnmt_alpha=-0.5 is not allowed"):
        seq2seq_beam_search(model, src, 2, 5, 1, 2, gnmt_alpha=-0.5)


# ---------------------------------------------------------------- training and decoding


def train(task, steps, seed=0, d=32):
    torch.manual_seed(seed)
    model = Transformer(
        len(task.vocab), len(task.vocab), d, 4, 2, 2 * d, 0.0, True, max_len=32
    )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: noam_lr(i + 1, d, warmup=50, factor=2.0)
    )
    rng, losses = random.Random(seed), []
    for step in range(steps):
        src, tgt = task.sample(32, rng, task.DIRECTIONS[step % 2])
        logits = model(src, tgt[:, :-1], src != task.pad_id, tgt[:, :-1] != task.pad_id)
        loss = F.cross_entropy(
            logits.flatten(0, 1),
            tgt[:, 1:].flatten(),
            ignore_index=task.pad_id,
            label_smoothing=0.1,
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


@pytest.mark.parametrize("gnmt_alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("direction", NumberTask.DIRECTIONS)
def test_beam_of_one_is_greedy(trained, direction, gnmt_alpha):
    task, model, _ = trained
    src, mask = held_out(task, direction)
    kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
    greedy = greedy_decode(model, src, **kw)
    beam = seq2seq_beam_search(
        model, src, 1, gnmt_alpha=gnmt_alpha, keep_greedy=False, **kw
    )
    greedy, beam = same_width(greedy, beam, value=task.eos_id)
    assert torch.equal(greedy, beam)


@pytest.mark.parametrize(
    "beam_size,gnmt_alpha", [(2, 0.0), (4, 0.0), (4, 0.6), (6, 1.0)]
)
def test_wider_beam_never_scores_lower_than_greedy(trained, beam_size, gnmt_alpha):
    task, model, _ = trained
    higher = 0
    for direction in task.DIRECTIONS:
        src, mask = held_out(task, direction)
        kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
        greedy, beam = same_width(
            greedy_decode(model, src, **kw),
            seq2seq_beam_search(model, src, beam_size, gnmt_alpha=gnmt_alpha, **kw),
            value=task.eos_id,
        )
        g = sequence_scores(model, src, greedy, task.eos_id, gnmt_alpha, mask)
        b = sequence_scores(model, src, beam, task.eos_id, gnmt_alpha, mask)
        assert (b >= g - 1e-5).all()
        higher += int((b > g + 1e-4).sum())
    assert higher > 0  # on some held-out inputs beam search finds a better output


def test_plain_beam_search_finds_higher_scores(trained):
    # without the greedy safeguard, beam search itself finds the better outputs
    task, model, _ = trained
    src, mask = held_out(task, "to-words")
    kw = dict(max_len=18, bos=task.bos_id, eos=task.eos_id, src_mask=mask)
    greedy, plain = same_width(
        greedy_decode(model, src, **kw),
        seq2seq_beam_search(model, src, 4, gnmt_alpha=0.0, keep_greedy=False, **kw),
        value=task.eos_id,
    )
    g = sequence_scores(model, src, greedy, task.eos_id, 0.0, mask)
    p = sequence_scores(model, src, plain, task.eos_id, 0.0, mask)
    assert (p > g + 1e-4).sum() > (p < g - 1e-4).sum()


def test_sequence_scores_by_hand(trained):
    task, model, _ = trained
    src, mask = held_out(task, "to-digits", n=1)
    ys = torch.tensor(
        [
            [
                task.bos_id,
                task.stoi["4"],
                task.stoi["2"],
                task.eos_id,
                task.eos_id,
                task.stoi["7"],
            ]
        ]
    )
    with torch.no_grad():
        logp = model(src, ys[:, :3], mask).log_softmax(-1)[0]
    by_hand = (
        logp[0, ys[0, 1]] + logp[1, ys[0, 2]] + logp[2, task.eos_id]
    )  # tokens after the first eos do not count
    torch.testing.assert_close(
        sequence_scores(model, src, ys, task.eos_id, 0.0, mask)[0], by_hand
    )
    torch.testing.assert_close(
        sequence_scores(model, src, ys, task.eos_id, 1.0, mask)[0],
        by_hand / ((5 + 3) / 6),
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
    assert torch.equal(
        out, greedy_decode(model, src, 18, task.bos_id, task.eos_id, mask)
    )
