"""Chapter 8: the shipped configs by name, the throughput bench on a CPU, the speed
measurement and the results helpers."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_run

from gptlib.checkpoint import CHECKPOINT_FILE, load_model
from gptlib.commands import configs_command
from gptlib.config import build_gpt_config, config_names, load_config
from gptlib.model import GPT, param_count, preset
from gptlib.pretrained import gpt_to_hf
from gptlib.records import read_metrics
from gptlib.sampling import generate_text
from gptlib.scaling import (
    PUBLISHED_RESULTS,
    TINYSTORIES_BYTES_PER_TOKEN,
    _loss,
    bits_per_byte,
    describe_device,
    measure_training_speed,
    sample_at_checkpoints,
    smoke_overrides,
)
from gptlib.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
# parameters of each shipped config's model with GPT-2's padded vocabulary (or the BPE's)
EXPECTED_MILLIONS = {
    "gpt2-124m-slimpajama": 124.5,
    "story": 0.5,
    "tinystories-33m": 67.4,
    "tinystories-small": 20.6,
}


def test_every_shipped_config_loads_by_name_and_builds_its_model(capsys):
    assert sorted(config_names()) == sorted(EXPECTED_MILLIONS)
    for name in config_names():
        cfg = load_config(name)
        vocab = 50257 if cfg.data.tokenizer == "gpt2" else cfg.data.vocab_size
        model_cfg = build_gpt_config(cfg.model, vocab)
        with torch.device("meta"):  # the shapes, without allocating 124M weights
            model = GPT(model_cfg)
        n = sum(p.numel() for p in model.parameters())
        assert n == param_count(model_cfg)
        print(f"{name}: {n:,} parameters")
        assert round(n / 1e6, 1) == EXPECTED_MILLIONS[name]
        if cfg.data.tokenizer == "gpt2":
            assert model_cfg.vocab_size == 50304  # padded to a multiple of 64
    printed = capsys.readouterr().out
    assert "gpt2-124m-slimpajama: 124,475,904 parameters" in printed
    configs_command([])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == config_names()


def test_the_gpt2_recipe_takes_half_a_million_tokens_a_step_and_mixes_slimpajama():
    cfg = load_config("gpt2-124m-slimpajama")
    t, d = cfg.training, cfg.data
    assert t.batch_size * t.grad_accum * 1024 == 524_288
    assert abs(d.tokens - 524_288 * t.max_steps) < 524_288  # 10B tokens: 19,073 steps
    assert len(d.sets) == 7 and math.isclose(sum(d.sets.values()), 100.0)


def test_smoke_overrides_keep_a_config_runnable():
    cfg = load_config("tinystories-small", smoke_overrides("stories.txt", "/tmp/x"))
    assert cfg.training.device == "cpu" and cfg.data.tokenizer == "bpe"
    assert cfg.model.vocab_multiple == 64 and cfg.training.grad_accum == 2


def test_measure_training_speed_times_ours_and_transformers_on_the_same_loss():
    config = preset("nano", vocab_size=128, block_size=16, n_layer=1)
    torch.manual_seed(0)
    ours = GPT(config)
    theirs = gpt_to_hf(ours)
    x, y = torch.randint(0, 128, (2, 16)), torch.randint(0, 128, (2, 16))
    torch.testing.assert_close(_loss(ours, x, y), _loss(theirs, x, y))
    cpu = torch.device("cpu")
    for model in (ours, theirs):
        speed = measure_training_speed(
            model, config, batch_size=2, device=cpu, steps=2, warmup=1
        )
        assert speed["tokens_per_s"] > 0 and speed["mfu"] is None
        assert speed["ms_per_step"] == pytest.approx(1000 * 32 / speed["tokens_per_s"])


def test_describe_device_says_smoke_without_a_gpu():
    line = describe_device(torch.device("cpu"))
    assert line.startswith("device: cpu, no GPU") and "smoke run" in line


def test_bits_per_byte_and_the_published_rows():
    assert bits_per_byte(math.log(2) * 8, 2.0) == pytest.approx(4.0)
    assert {r["source"] for r in PUBLISHED_RESULTS} == {"llama2.c README"}
    assert [r["loss"] for r in PUBLISHED_RESULTS] == [1.072, 0.847, 0.760]
    # llama2.c's rows in bits per byte: Llama 2's tokens are shorter than GPT-2's
    llama2 = TINYSTORIES_BYTES_PER_TOKEN["Llama 2"]
    assert {r["bytes_per_token"] for r in PUBLISHED_RESULTS} == {llama2}
    assert llama2 < TINYSTORIES_BYTES_PER_TOKEN["GPT-2"]
    bpb = [bits_per_byte(r["loss"], r["bytes_per_token"]) for r in PUBLISHED_RESULTS]
    assert bpb == pytest.approx([0.4182, 0.3304, 0.2965], abs=1e-4)


def test_the_bytes_per_token_bench_splits_tinystories_into_its_stories(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bytes_per_token import read_stories
    finally:
        sys.path.remove(str(ROOT / "bench"))
    text = tmp_path / "stories.txt"
    text.write_text(
        "Tom ran.\n\nHe fell.\nLily sang.\n\n\nThe end.\n", encoding="utf-8"
    )
    assert read_stories(text) == ["Tom ran.\n\nHe fell.", "Lily sang.\n\n\nThe end."]


def _run(data_dir, out_dir, on_checkpoint=None) -> Trainer:
    # dropout on: the training draws from torch's generator between checkpoints
    overrides = ("model.n_layer=1", "model.dropout=0.1", "training.max_steps=4")
    overrides += ("training.ckpt_interval=2",)
    trainer = Trainer(
        load_config(None, tiny_run(data_dir, out_dir, *overrides)), on_checkpoint
    )
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def test_samples_at_checkpoints_are_recorded_and_leave_the_training_alone(tmp_path):
    options = dict(temperature=0.8, top_k=20)
    hook = sample_at_checkpoints(["Once", "The dog"], 6, seed=3, **options)
    rng_states = []

    def sample_and_watch(trainer):  # torch's random state, before and after sampling
        rng_states.append(torch.get_rng_state())
        hook(trainer)
        rng_states.append(torch.get_rng_state())

    sampled = _run(tmp_path / "data", tmp_path / "sampled", sample_and_watch)
    assert len(rng_states) == 4
    assert all(torch.equal(a, b) for a, b in zip(rng_states[::2], rng_states[1::2]))
    plain = _run(tmp_path / "data", tmp_path / "plain")
    for a, b in zip(sampled.raw_model.parameters(), plain.raw_model.parameters()):
        assert torch.equal(a, b)  # sampling drew nothing from the training's generators
    written = [r for r in read_metrics(tmp_path / "sampled") if "sample" in r]
    assert [(r["step"], r["prompt"]) for r in written] == [
        (2, "Once"),
        (2, "The dog"),
        (4, "Once"),
        (4, "The dog"),
    ]
    assert not any("sample" in r for r in read_metrics(tmp_path / "plain"))
    # the last samples are the checkpoint's model, sampled as chapter 6 samples
    model, tokenizer = load_model(tmp_path / "sampled" / CHECKPOINT_FILE)
    for r in written[2:]:
        again = generate_text(model, tokenizer, r["prompt"], 6, seed=3, **options)
        assert again == [r["sample"]]


@pytest.mark.parametrize("prompts", [[], 7, ["ok", None]])
def test_sample_at_checkpoints_rejects_prompts_that_are_not_text(prompts):
    with pytest.raises(ValueError, match="give a string or a list of strings") as e:
        sample_at_checkpoints(prompts)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_kk=40), r"sampling options \['top_kk'\] are not among"),
        (dict(temperature=-1.0), "temperature"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(seed="x"), "seed"),
    ],
)
def test_sample_at_checkpoints_checks_its_options_before_any_training(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        sample_at_checkpoints("Once", **kwargs)
    assert "\n" not in str(e.value)


def test_throughput_bench_runs_on_a_cpu_with_a_tiny_preset():
    run = subprocess.run(
        [
            sys.executable,
            "bench/throughput.py",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--batch",
            "2",
            "--context",
            "32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("device: ")  # cpu here; a GPU's name on a GPU
    row = lines[-1].split()
    assert row[0] == "nano" and row[1:4] == ["2", "x", "32"]
    assert row[5] == "n/a" and float(row[-1]) > 0
