"""The playground (chapter 7), driven from Python as a reader drives it with the mouse: set the
widgets, click, wait, read the output."""

import html

import pytest
import torch

from gptlib.model import GPT, GPTConfig
from gptlib.playground import STORY_MODEL, Playground, ProbabilityBars, find_checkpoints
from gptlib.sampling import generate_text
from gptlib.stories import generate_stories
from gptlib.tokenizer import train_bpe


@pytest.fixture(scope="module")
def tok():
    return train_bpe(generate_stories(200), 400)


def tiny_gpt(tok, seed=0):
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32
        )
    )
    torch.nn.init.normal_(
        model.transformer.wte.weight, std=0.25
    )  # livelier than GPT-2's 0.02
    return model.eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_gpt(tok)


@pytest.fixture
def pg(model, tok):
    return Playground({"tiny": (model, tok)}, prompt="Once upon a time")


def run(pg, **values):
    """Set widget values, click Generate, wait for the end."""
    for name, value in values.items():
        getattr(pg, name).value = value
    pg.generate_button.click()
    assert pg.wait(timeout=60), "generation did not end"
    return pg.text


def test_generate_streams_the_library_s_text_into_the_output(pg, model, tok):
    text = run(
        pg,
        temperature=0.9,
        top_k=40,
        top_p=0.95,
        repetition_penalty=1.2,
        length=25,
        seed=4,
    )
    options = dict(
        temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.2, seed=4
    )
    expected = generate_text(
        model, tok, "Once upon a time", 25, stop=tok.eot_id, **options
    )[0]
    assert text == expected and text
    assert (
        f"<b>{html.escape('Once upon a time')}</b>{html.escape(text)}</div>"
        in pg.output.value
    )
    assert pg.status.value.startswith(f"{pg.n_tokens} tokens in ")
    assert pg.n_tokens == 25 or pg.status.value.endswith("end of story)")
    assert (
        not pg.generate_button.disabled and pg.stop_button.disabled
    )  # ready for the next click


def test_same_seed_same_text_other_seed_other_text_and_greedy(pg, model, tok):
    a, b, c = run(pg, length=30, seed=1), run(pg, seed=1), run(pg, seed=2)
    assert a == b and a != c
    greedy = run(pg, temperature=0.0, seed=-1)
    assert (
        greedy
        == generate_text(
            model, tok, "Once upon a time", 30, temperature=0, stop=tok.eot_id
        )[0]
    )


def test_stop_at_eot_box_lets_the_model_go_on(pg, model, tok):
    pg.stop_at_eot.value = False
    text = run(pg, length=40, seed=5, temperature=1.5)
    assert (
        text
        == generate_text(model, tok, "Once upon a time", 40, temperature=1.5, seed=5)[0]
    )
    assert pg.n_tokens == 40


def test_bars_show_the_last_distribution_and_the_filters(pg):
    run(pg, length=12, top_k=3, seed=0)
    probs = [
        p for _, p in pg.bars.shown
    ]  # top-k 3: at most three tokens are left to show
    assert (
        1 <= len(probs) <= 3 and probs == sorted(probs, reverse=True) and min(probs) > 0
    )
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert [label.value for label in pg.bars.labels[len(probs) :]] == [""] * (
        10 - len(probs)
    )
    assert (
        sum(label.value.startswith("▶") for label in pg.bars.labels) <= 1
    )  # the chosen token
    assert "before token" in pg.bars.title.value


def test_stop_ends_generation_between_tokens(pg):
    def click_stop(change):
        if pg.n_tokens >= 3:
            pg.stop_button.click()

    pg.throttle = 0.0  # redraw after every token, so that the observer sees each one
    pg.output.observe(click_stop, "value")
    run(pg, length=400, seed=0)
    assert 3 <= pg.n_tokens < 10 and pg.status.value.endswith("stopped)")
    pg.output.unobserve(click_stop, "value")
    run(pg, length=5)  # the next Generate starts afresh
    assert pg.n_tokens == 5 or pg.status.value.endswith("end of story)")


def test_generation_runs_in_a_background_thread_so_stop_can_arrive(pg):
    pg.length.value = 400
    pg.generate_button.click()  # returns at once: the kernel is free
    assert pg.running and pg.generate_button.disabled and not pg.stop_button.disabled
    pg.generate_button.click()  # a second click while running is ignored
    pg.stop_button.click()
    assert pg.wait(timeout=60)
    assert pg.n_tokens < 400 and pg.status.value.endswith("stopped)")


def test_checkpoint_picker_loads_each_model_once_when_first_used(model, tok):
    calls = []

    def load_other():
        calls.append(1)
        return tiny_gpt(tok, seed=1), tok

    pg = Playground({"tiny": (model, tok), "other": load_other}, prompt="Once")
    assert pg.checkpoint.options == ("tiny", "other") and calls == []
    pg.checkpoint.value = "other"
    assert "loads on the first Generate" in pg.status.value
    first = run(pg, length=15, seed=3, temperature=1.0)
    second = run(pg, length=15, seed=3, temperature=1.0)
    assert calls == [1] and first == second
    pg.checkpoint.value = "tiny"
    assert (
        run(pg, length=15, seed=3, temperature=1.0) != first
    )  # another model, another text


def test_errors_show_in_the_status_line_and_leave_the_buttons_usable(model, tok):
    def broken():
        raise FileNotFoundError("gpt2 weights are not on this machine")

    pg = Playground({"tiny": (model, tok), "gpt2": broken}, preload=False)
    pg.checkpoint.value = "gpt2"
    run(pg)
    assert pg.status.value == "error: gpt2 weights are not on this machine"
    assert not pg.generate_button.disabled and pg.stop_button.disabled
    pg.checkpoint.value = "tiny"
    pg.prompt.value = ""  # an empty prompt starts from <|endoftext|>
    run(pg, length=5, seed=0)
    assert pg.n_tokens >= 1 and pg.status.value.startswith(f"{pg.n_tokens} tokens in")
    with pytest.raises(ValueError, match="checkpoints is empty"):
        Playground({})


def test_find_checkpoints_lists_the_story_model_and_checkpoint_folders(tmp_path):
    (tmp_path / "run-a").mkdir()
    (tmp_path / "run-a" / "model.safetensors").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    names = list(find_checkpoints(tmp_path))
    assert names[0] == STORY_MODEL and "run-a" in names and "notes" not in names


def test_the_story_model_choice_trains_it_if_missing_then_loads_it_for_decoding(
    monkeypatch,
):
    import gptlib.playground

    calls = []
    monkeypatch.setattr(
        gptlib.playground, "story_model", lambda: calls.append("train if missing")
    )
    monkeypatch.setattr(
        gptlib.playground, "load_sampling_model", lambda c: calls.append(c) or c
    )
    assert find_checkpoints()[STORY_MODEL]() is None and calls == [
        "train if missing",
        None,
    ]


def test_probability_bars_and_repr(tok):
    bars = ProbabilityBars(4)
    probs = torch.tensor([0.1, 0.6, 0.3] + [0.0] * (tok.vocab_size - 3))
    bars.update(probs, tok, chosen=2, step=7)
    assert [round(p, 3) for _, p in bars.shown] == [
        0.6,
        0.3,
        0.1,
    ]  # the fourth has probability 0
    assert (
        bars.labels[1].value.startswith("▶") and bars.values[0].value.strip() == "60.0%"
    )
    assert (
        bars.labels[3].value == ""
        and repr(bars).startswith("ProbabilityBars(")
        and "60.0%" in repr(bars)
    )
    bars.clear()
    assert bars.shown == [] and bars.bars[0].value == 0.0
    pg = Playground({"tiny": (tiny_gpt(tok), tok)}, prompt="Hi")
    assert repr(pg) == "Playground(checkpoint='tiny', prompt='Hi')"


def test_gpt2_is_offered_and_runs_when_its_weights_are_present(
    tmp_path, monkeypatch, shared_data
):
    import transformers

    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    monkeypatch.setenv(
        "GPTLIB_GPT2_DIR", str(tmp_path / "gpt2")
    )  # stands in for real GPT-2 weights
    monkeypatch.setenv("GPTLIB_SHARED_DATA", str(shared_data))  # GPT-2's tokenizer
    choices = find_checkpoints(tmp_path / "no-runs")
    assert list(choices)[:2] == [STORY_MODEL, "gpt2"]
    pg = Playground({"gpt2": choices["gpt2"]}, prompt="Hello")
    run(pg, length=6, seed=0)
    assert pg.status.value.startswith(f"{pg.n_tokens} tokens in") and pg.n_tokens >= 1
