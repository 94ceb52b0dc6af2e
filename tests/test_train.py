"""Chapter 5 in process: shards, sampler, config, schedule, optimiser, AMP, checkpoints, NaN
stop, records, evaluation, the story model and the commands (gptlib.device, shards, config,
checkpoint, records, train, evaluate, story, commands). The tests that need real processes
(SIGKILL, torchrun) are in test_train_processes.py; the `gptlib` program that dispatches to
the commands is chapter 7's (test_cli.py)."""

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_run

from gptlib.batches import BatchSampler
from gptlib.checkpoint import (
    get_rng_state,
    load_checkpoint,
    load_model,
    save_checkpoint,
    set_rng_state,
)
from gptlib.commands import eval_command, prepare_command, train_command
from gptlib.common import HOME_ENV
from gptlib.config import (
    CONFIGS_DIR,
    ConfigError,
    ModelSection,
    build_gpt_config,
    config_from_dict,
    config_to_yaml,
    load_config,
)
from gptlib.data import load_corpus
from gptlib.device import (
    fused_adamw_available,
    peak_flops,
    resolve_device,
    resolve_dtype,
)
from gptlib.evaluate import evaluate_model, evaluate_tokens
from gptlib.gpt2_tokenizer import load_tokenizer
from gptlib.model import GPT, GPTConfig
from gptlib.prepare import (
    corpus_split,
    data_is_prepared,
    prepare_data,
    prepared_summary,
    tokenize_to_shards,
)
from gptlib.pretrained import CheckpointError
from gptlib.records import MetricsLogger, read_metrics
from gptlib.shards import (
    HEADER_BYTES,
    TOKENIZER_FILE,
    ShardError,
    load_split,
    read_shard,
    write_shard,
)
from gptlib.story import STORY_RECIPE, story_config, story_model, story_model_dir
from gptlib.tokenizer import train_bpe
from gptlib.train import (
    CosineSchedule,
    NonFiniteLossError,
    Trainer,
    configure_optimizer,
    train,
)

ROOT = Path(__file__).resolve().parent.parent


def tiny(data_dir, out_dir, *extra: str) -> list[str]:
    """Overrides for a one-layer model that trains six steps, evaluating and saving every three."""
    return tiny_run(
        data_dir,
        out_dir,
        "model.n_layer=1",
        "training.max_steps=6",
        "training.warmup_steps=2",
        "training.eval_interval=3",
        "training.ckpt_interval=3",
        *extra,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepare_data(load_config(None, tiny(d, d / "unused")).data, progress=False)
    return d


# -- shards ---------------------------------------------------------------------------------
def test_shard_round_trip_header_and_dtype(tmp_path):
    ids = np.array([0, 7, 65535, 3])
    p = write_shard(
        tmp_path / "a.bin",
        ids,
        tokenizer="bpe-x",
        vocab_size=65536,
        n_bytes=99,
        n_docs=2,
    )
    s = read_shard(p)
    assert isinstance(s.tokens, np.memmap) and s.tokens.dtype == np.uint16
    assert s.tokens.tolist() == ids.tolist()
    assert s.header == {
        "tokenizer": "bpe-x",
        "vocab_size": 65536,
        "dtype": "uint16",
        "n_tokens": 4,
        "n_bytes": 99,
        "n_docs": 2,
        "tokenizer_id": None,
    }
    assert p.stat().st_size == HEADER_BYTES + 8
    big = read_shard(
        write_shard(tmp_path / "b.bin", [70000, 1], tokenizer="t", vocab_size=100_000)
    )
    assert big.tokens.dtype == np.uint32 and big.tokens.tolist() == [70000, 1]


def test_shard_errors_are_one_line(tmp_path):
    with pytest.raises(ShardError, match="must lie in"):
        write_shard(tmp_path / "x.bin", [5, 10], tokenizer="t", vocab_size=10)
    p = write_shard(tmp_path / "a.bin", np.arange(100), tokenizer="t", vocab_size=1000)
    (tmp_path / "cut.bin").write_bytes(p.read_bytes()[:-3])
    (tmp_path / "foreign.bin").write_bytes(b"hello world" * 200)
    for name, message in (
        ("cut.bin", "truncated"),
        ("foreign.bin", "not a gptlib token shard"),
        ("none.bin", "does not exist"),
    ):
        with pytest.raises(ShardError, match=message) as e:
            read_shard(tmp_path / name)
        assert "\n" not in str(e.value)


def test_parallel_tokenization_equals_serial_and_cuts_shards(tmp_path):
    texts = load_corpus("stories", n_stories=300)["text"]
    tok = train_bpe(texts[:100], vocab_size=300)
    par = tokenize_to_shards(
        texts,
        tok,
        tmp_path / "p",
        num_workers=2,
        shard_tokens=10_000,
        chunk_docs=16,
        progress=False,
    )
    seq = tokenize_to_shards(
        texts, tok, tmp_path / "s", num_workers=1, shard_tokens=10_000, progress=False
    )
    assert len(par) == len(seq) > 2
    a = np.concatenate([read_shard(p).tokens for p in par])
    b = np.concatenate([read_shard(p).tokens for p in seq])
    assert np.array_equal(a, b)
    assert [read_shard(p).header["n_tokens"] for p in par[:-1]] == [10_000] * (
        len(par) - 1
    )
    assert (a == tok.eot_id).sum() == 300  # one separator before every document
    expected = [tok.eot_id] + tok.encode(texts[0])
    assert a[: len(expected)].tolist() == expected
    assert sum(read_shard(p).header["n_bytes"] for p in par) == sum(
        len(t.encode()) for t in texts
    )
    docs = [
        read_shard(p).header["n_docs"] for p in par
    ]  # a document counts in the shard it starts in
    assert sum(docs) == 300 and all(n > 0 for n in docs)
    assert docs == [int((read_shard(p).tokens == tok.eot_id).sum()) for p in par]


def test_prepared_data(data_dir):
    cfg = load_config(None, tiny(data_dir, data_dir / "unused"))
    assert data_is_prepared(cfg.data)
    train_shards, val_shards = (
        load_split(data_dir, "train"),
        load_split(data_dir, "val"),
    )
    assert train_shards[0].header["tokenizer"] == "bpe-300"
    assert val_shards[0].header["n_docs"] == 40
    tok = load_tokenizer(str(data_dir / TOKENIZER_FILE))
    assert tok.vocab_size == train_shards[0].header["vocab_size"]
    assert not data_is_prepared(
        load_config(None, tiny(data_dir, "x", "data.documents=401")).data
    )
    with pytest.raises(ShardError, match="gptlib prepare"):
        load_split(data_dir / "nothing", "train")


def test_local_file_holds_out_every_kth_document(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(20))
    )
    cfg = load_config(
        None, [f"data.source={tmp_path / 'c.jsonl'}", "data.val_fraction=0.25"]
    ).data
    train_texts, _ = corpus_split(cfg, "train")
    val, _ = corpus_split(cfg, "val")
    assert list(val) == ["doc 3", "doc 7", "doc 11", "doc 15", "doc 19"]
    assert len(list(train_texts)) == 15


# -- sampler --------------------------------------------------------------------------------
def test_sampler_is_a_function_of_its_position():
    data = [np.arange(1000), np.arange(1000, 1100)]
    a = BatchSampler(data, block_size=16, batch_size=8, seed=3)
    batches = [a.next() for _ in range(4)]
    x, y = batches[0][0]
    assert (
        x.dtype == torch.int64 and x.shape == (8, 16) and torch.equal(y, x + 1)
    )  # windows of consecutive ids
    b = BatchSampler(data, 16, 8, seed=3)
    b.load_state_dict(a.state_dict() | {"position": 2})
    assert torch.equal(b.next()[0][0], batches[2][0][0])
    assert not torch.equal(batches[0][0][0], batches[1][0][0])
    other = BatchSampler(data, 16, 8, seed=4)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(a.state_dict())
    # every window lies inside one shard
    for step in range(50):
        x, y = a.batch(step, 0)
        assert ((y - x) == 1).all()


def test_sampler_splits_micro_batches_between_ranks():
    data = [np.arange(5000)]
    single = BatchSampler(data, 8, 2, grad_accum=4, seed=0).next()
    ranks = [
        BatchSampler(data, 8, 2, grad_accum=4, seed=0, rank=r, world_size=2).next()
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 2
    merged = [ranks[k % 2][k // 2] for k in range(4)]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(single, merged))
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        BatchSampler(data, 8, 2, grad_accum=3, world_size=2)
    with pytest.raises(ValueError, match="no window"):
        BatchSampler([np.arange(8)], 8, 2)


# -- config ---------------------------------------------------------------------------------
@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: nano\ntraining:\n  lr: 1e-3\n  max_steps: 50\n")
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["training.leraning_rate=1"],
            "unknown key 'training.leraning_rate' (allowed here: out_dir, seed,",
        ),
        (
            ["modle.n_layer=2"],
            "unknown key 'modle' (allowed here: model, training, data, generation)",
        ),
        (["training.lr=fast"], "training.lr: Input should be a valid number"),
        (
            ["training.max_steps=ten"],
            "training.max_steps: Input should be a valid integer",
        ),
        (
            ["training.dtype=float8"],
            "training.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'",
        ),
        (
            ["training.max_steps=-1"],
            "training.max_steps: Input should be greater than 0",
        ),
        (["model.preset=gpt5"], "model.preset: unknown preset 'gpt5'; one of nano,"),
        # the model section is checked by GPTConfig itself, and names the key
        (["model.n_layer=0"], "model.n_layer: GPTConfig n_layer=0 is not allowed"),
        (
            ["model.n_head=5"],
            "model.n_head: GPTConfig n_embd=64 must be a multiple of n_head=5",
        ),
        (["model.dropout=1.5"], "model.dropout: GPTConfig dropout=1.5 is not allowed"),
        (["model.n_layer=2.5"], "model.n_layer: Input should be a valid integer"),
        (
            ["model.nlayer=2"],
            "unknown key 'model.nlayer' (allowed here: preset, vocab_size,",
        ),
        (["training.min_lr=1"], "training.min_lr=1.0 is above training.lr"),
        (["training=3"], "training: Input should be a dictionary"),
        (["lr"], "must look like section.key=value"),
    ],
)
def test_config_errors_name_the_key_in_one_line(config_file, overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(config_file, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)
    if "=" in overrides[0]:
        assert str(config_file) in str(e.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as e:
        load_config(tmp_path / "missing.yaml")
    assert "\n" not in str(e.value)
    (tmp_path / "bad.yaml").write_text("model:\n  preset: [nano\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("training:\n  lr: 1e-3\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'training.batchsize'"):
        load_config(tmp_path / "typo.yaml")


def test_overrides_apply_and_yaml_round_trips(config_file):
    cfg = load_config(
        config_file,
        [
            "training.lr=3e-4",
            "model.dropout=0.1",
            "training.decay_steps=null",
            "generation.top_k=5",
            "training.compile=true",
            "model.n_layer=2",
        ],
    )
    assert (
        cfg.training.lr == 3e-4
        and cfg.model.dropout == 0.1
        and cfg.generation.top_k == 5
    )
    assert (
        cfg.training.compile is True
        and cfg.training.max_steps == 50
        and cfg.training.decay_steps is None
    )
    assert config_from_dict(yaml.safe_load(config_to_yaml(cfg))) == cfg
    gpt = build_gpt_config(cfg.model, tokenizer_vocab=1000)
    assert (gpt.n_layer, gpt.n_embd, gpt.vocab_size, gpt.dropout) == (2, 64, 1000, 0.1)
    padded = build_gpt_config(ModelSection(preset="gpt2", vocab_multiple=64), 50257)
    assert padded.vocab_size == 50304
    with pytest.raises(ConfigError, match="n_embd=100 must be a multiple of n_head=3"):
        build_gpt_config(ModelSection(n_embd=100, n_head=3), 1000)


def test_example_configs_are_valid_and_ship_inside_the_package():
    paths = sorted(CONFIGS_DIR.glob("*.yaml"))
    names = {"story.yaml", "tinystories-33m.yaml", "gpt2-124m-slimpajama.yaml"}
    assert (
        CONFIGS_DIR == ROOT / "gptlib" / "configs" and {p.name for p in paths} >= names
    )
    for path in paths:
        load_config(path)
    # one source for the story recipe: the file story_model() reads, shipped as package data
    assert (
        STORY_RECIPE == CONFIGS_DIR / "story.yaml" and not (ROOT / "configs").exists()
    )
    # (tests/test_install.py checks that the wheel carries them)


def test_shipped_configs_load_by_name_and_run_under_gptlib_home(monkeypatch, tmp_path):
    from gptlib.config import config_names, find_config

    assert config_names() == [
        "gpt2-124m-slimpajama",
        "story",
        "tinystories-33m",
        "tinystories-small",
    ]
    assert find_config("tinystories-33m") == CONFIGS_DIR / "tinystories-33m.yaml"
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path))
    cfg = load_config("story", ["training.max_steps=7"])
    assert cfg.training.max_steps == 7
    assert Path(cfg.training.out_dir).is_relative_to(tmp_path)  # not the current folder
    assert Path(cfg.data.dir).is_relative_to(tmp_path)
    with pytest.raises(ConfigError, match="is a folder: use a YAML file or one of"):
        load_config(tmp_path)


def test_configs_command(capsys):
    from gptlib.commands import configs_command

    assert configs_command([]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [
        "gpt2-124m-slimpajama",
        "story",
        "tinystories-33m",
        "tinystories-small",
    ]
    assert configs_command(["show", "story"]) == 0
    assert capsys.readouterr().out == STORY_RECIPE.read_text()
    assert configs_command(["show", "nope"]) == 1
    assert "config nope does not exist" in capsys.readouterr().err


def test_story_recipe():
    cfg = load_config(STORY_RECIPE)
    m, t = cfg.model, cfg.training
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size) == (2, 4, 128, 128)
    assert (t.max_steps, t.batch_size, t.lr, t.min_lr, t.warmup_steps) == (
        4000,
        8,
        3e-3,
        3e-4,
        50,
    )
    assert t.threads == 2 and t.eval_interval in (250, 500)


def test_model_section_is_gptconfig_s_fields_and_its_checks():
    import dataclasses

    own = {"preset", "vocab_multiple", "init_from", "gradient_checkpointing"}
    fields = {f.name for f in dataclasses.fields(ModelSection)}
    assert fields == own | {f.name for f in dataclasses.fields(GPTConfig)}
    assert build_gpt_config(ModelSection(n_layer=3), 1000) == GPTConfig(
        n_layer=3, vocab_size=1000
    )
    with pytest.raises(
        ConfigError, match=r"^run.yaml: model.block_size: GPTConfig block_size=0"
    ):
        build_gpt_config(ModelSection(block_size=0), 1000, source="run.yaml")
    with pytest.raises(
        ConfigError, match="model.vocab_size=512 is smaller than the tokenizer's 1000"
    ):
        build_gpt_config(ModelSection(vocab_size=512), 1000)


def test_errors_show_user_values_bounded(config_file):
    for override in (
        "training.lr=" + "9" * 5000,
        "training.run_name=[" + "1, " * 5000 + "]",
        "x" * 5000,
    ):
        with pytest.raises(ConfigError) as e:
            load_config(config_file, [override])
        assert len(str(e.value)) < 400 and "\n" not in str(e.value)


# -- optimisation ---------------------------------------------------------------------------
def test_schedule_warmup_cosine_floor():
    s = CosineSchedule(lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    assert [s(0), s(4), s(9)] == [0.1, 0.5, 1.0]
    assert s(60) == pytest.approx(0.55) and s(110) == s(500) == 0.1
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_on_matrices_only():
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16))
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(
        p.dim() == 1 for p in no_decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(
        list(model.parameters())
    )  # tied head once
    assert any(p is model.transformer.wte.weight for p in decay["params"])
    assert opt.defaults["fused"] == (fused_adamw_available("cpu") or None)


# -- precision ------------------------------------------------------------------------------
def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_bf16_autocast_trains_on_cpu(data_dir, tmp_path):
    trainer = Trainer(
        load_config(None, tiny(data_dir, tmp_path, "training.dtype=bfloat16"))
    )
    assert trainer.dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    seen = []
    hook = trainer.raw_model.lm_head.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype)
    )
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    hook.remove()
    assert seen == [torch.bfloat16] * 3  # the matrix products ran in bfloat16
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(
        p.dtype == torch.float32 for p in trainer.raw_model.parameters()
    )  # fp32 master weights
    trainer.close()


def test_fp16_overflow_is_skipped_without_touching_the_weights(data_dir, tmp_path):
    trainer = Trainer(
        load_config(None, tiny(data_dir, tmp_path, "training.dtype=float16"))
    )
    assert trainer.scaler.is_enabled()
    # at a scale of 2**24 the gradient of the float16 logits (about scale / tokens) overflows float16
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    m = trainer.train_step()
    assert m["skipped"] and trainer.skipped_steps == 1 and trainer.step == 1
    assert all(
        torch.equal(before[k], v) for k, v in trainer.raw_model.state_dict().items()
    )
    for st in trainer.optimizer.state_dict()[
        "state"
    ].values():  # Adam's moments untouched too
        assert (
            st["step"] == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()
        )
    assert trainer.scaler.get_scale() == 2.0**23  # halved
    while trainer.step < 20 and trainer.skipped_steps == trainer.step:
        trainer.train_step()  # the scale backs off until the gradients fit
    assert trainer.skipped_steps < trainer.step
    state = trainer.raw_model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert any(not torch.equal(before[k], v) for k, v in state.items())
    trainer.close()


# -- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_round_trip_and_errors(tmp_path):
    state = {"step": 3, "w": torch.arange(5.0), "rng": get_rng_state()}
    path = save_checkpoint(tmp_path / "ck" / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "ck")  # a run folder works too
    assert loaded["step"] == 3 and torch.equal(loaded["w"], state["w"])
    assert [p.name for p in path.parent.iterdir()] == [
        "ckpt.pt"
    ]  # no temporary file left
    (tmp_path / "junk.pt").write_bytes(b"junk")
    torch.save({"not": "ours"}, tmp_path / "foreign.pt")
    for name, message in (
        ("junk.pt", "cannot be read"),
        ("foreign.pt", "not a gptlib training checkpoint"),
        ("none.pt", "does not exist"),
    ):
        with pytest.raises(CheckpointError, match=message) as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)


def test_rng_state_round_trip(tmp_path):
    state = get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(
        load_checkpoint(save_checkpoint(tmp_path / "r.pt", {"rng": state}))["rng"]
    )
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_trainer_checkpoint_holds_everything(data_dir, tmp_path):
    trainer = train(
        load_config(None, tiny(data_dir, tmp_path, "training.dtype=float16"))
    )
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert {
        "model",
        "optimizer",
        "scaler",
        "step",
        "schedule",
        "lr",
        "rng",
        "sampler",
        "config",
    } <= set(state)
    assert (
        state["step"] == 6
        and state["sampler"]["position"] == 6
        and state["scaler"]["scale"] > 0
    )
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert config_from_dict(state["config"]) == trainer.cfg
    assert state["lr"] == trainer.schedule(5)
    # the best model and its tokenizer sit beside the checkpoint
    model, tok = load_model(tmp_path)
    assert model.config == trainer.raw_model.config and tok.vocab_size == 300
    # a resumed trainer continues where this one stopped
    again = Trainer(
        load_config(
            None,
            tiny(data_dir, tmp_path, "training.dtype=float16", "training.max_steps=8"),
        )
    )
    assert (
        again.step == 6
        and again.sampler.position == 6
        and again.scaler.get_scale() == trainer.scaler.get_scale()
    )
    again.close()


# -- failures and records -------------------------------------------------------------------
def test_nan_loss_stops_with_step_and_last_checkpoint(data_dir, tmp_path):
    cfg = load_config(
        None,
        tiny(
            data_dir,
            tmp_path,
            "training.max_steps=50",
            "training.ckpt_interval=1",
            "training.lr=1e30",
            "training.min_lr=0",
            "training.warmup_steps=0",
        ),
    )
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    step = load_checkpoint(tmp_path / "ckpt.pt")["step"]
    assert (
        f"at step {step + 1}: training stopped; the last good checkpoint is {tmp_path / 'ckpt.pt'} (step {step})"
        in str(e.value)
    )
    assert all(
        torch.isfinite(v).all()
        for v in load_checkpoint(tmp_path / "ckpt.pt")["model"].values()
    )


def test_nan_stop_on_the_command_line(data_dir, tmp_path, capsys):
    args = tiny(
        data_dir,
        tmp_path,
        "training.max_steps=50",
        "training.lr=1e30",
        "training.min_lr=0",
        "training.warmup_steps=0",
    )
    (tmp_path / "c.yaml").write_text("model: {preset: nano}\n")
    assert train_command([str(tmp_path / "c.yaml"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("gptlib train: error: loss is ")
        and "no checkpoint was written yet" in err
    )
    assert len(err.splitlines()) == 1


def test_metrics_records_and_resume_truncation(data_dir, tmp_path):
    train(load_config(None, tiny(data_dir, tmp_path)))
    records = read_metrics(tmp_path)
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert {"lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "skipped_steps"} <= set(
        train_records[0]
    )
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[0]["val_perplexity"] == pytest.approx(math.exp(evals[0]["val_loss"]))
    assert [r["step"] for r in records if r.get("event") == "checkpoint"] == [3, 6]
    logger = MetricsLogger(tmp_path, resume_step=3)
    assert max(r["step"] for r in read_metrics(tmp_path)) == 3
    logger.close()


def test_resume_survives_a_metrics_line_cut_short(tmp_path):
    # a run killed while writing leaves half a line; resuming keeps the whole records up to its step
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo'
    )
    assert read_metrics(tmp_path) == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
    ]
    MetricsLogger(tmp_path, resume_step=1).close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]


def test_a_date_in_a_config_file_is_a_config_error(tmp_path):
    # YAML reads 2024-05-01 as a date: the deep copy of the overrides must not choke on it
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  run_name: 2024-05-01\n")
    with pytest.raises(ConfigError, match="run_name"):
        load_config(path, ["training.lr=1e-3"])


def test_checkpoint_errors_are_one_class_across_chapters(tmp_path):
    # chapter 4's CheckpointError: the same class for a training checkpoint and a model folder
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="does not exist|holds no model"):
            load(tmp_path / "none")


def test_a_damaged_checkpoint_is_one_whole_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "junk.pt")
    assert str(e.value) == (
        f"checkpoint {tmp_path / 'junk.pt'} cannot be read: it is damaged or was not "
        "written by torch.save (UnpicklingError)"
    )


def test_optional_loggers_are_off_and_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(
        ConfigError, match="training.wandb=true needs the wandb package"
    ):
        MetricsLogger(tmp_path, wandb=True)
    MetricsLogger(tmp_path).log({"step": 1, "loss": 2.0})  # off: never imported
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]


def test_evaluate_tokens_and_bits_per_byte(data_dir, tmp_path):
    train(load_config(None, tiny(data_dir, tmp_path)))
    model, tok = load_model(tmp_path)
    shards = load_split(data_dir, "val")
    r = evaluate_model(tmp_path, data=data_dir)
    tokens = shards[0].tokens
    assert r["tokens"] == len(tokens) - 1  # every token but the first is predicted once
    n_bytes = shards[0].header["n_bytes"]
    assert r["bits_per_byte"] == pytest.approx(
        r["loss"] / math.log(2) * len(tokens) / n_bytes
    )
    # by hand, on the first window
    x = torch.from_numpy(tokens[:33].astype(np.int64))[None]
    one = evaluate_tokens(model, tokens[:33])
    assert one["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(model(x[:, :-1])[0][0], x[0, 1:]).item(),
        rel=1e-5,
    )
    # a text shorter than a window, and one window and a bit: the short last window counts too
    x = torch.from_numpy(tokens[:41].astype(np.int64))[None]
    logits = model(x[:, :32])[0][0]  # the first window
    by_hand = torch.nn.functional.cross_entropy(
        model(x[:, 32:40])[0][0], x[0, 33:41], reduction="sum"
    )
    by_hand += torch.nn.functional.cross_entropy(
        logits[:32], x[0, 1:33], reduction="sum"
    )
    assert evaluate_tokens(model, tokens[:41])["loss"] == pytest.approx(
        by_hand.item() / 40, rel=1e-5
    )
    short = evaluate_tokens(model, tokens[:10])
    assert short["tokens"] == 9
    assert short["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(model(x[:, :9])[0][0], x[0, 1:10]).item(),
        rel=1e-5,
    )
    with pytest.raises(ValueError, match="1 tokens are too few"):
        evaluate_tokens(model, tokens[:1])
    with pytest.raises(ValueError, match="exactly one of"):
        evaluate_model(tmp_path)


# -- the story model ------------------------------------------------------------------------
def test_story_model_trains_once_then_loads(tmp_path, monkeypatch):
    import gptlib.story

    with pytest.raises(CheckpointError, match="no story model"):
        story_model(tmp_path / "story", train_if_missing=False)
    recipe = yaml.safe_load(STORY_RECIPE.read_text())
    recipe["model"].update(n_layer=1, n_embd=32, n_head=2, block_size=32)
    recipe["training"].update(
        max_steps=4, batch_size=4, eval_interval=2, eval_batches=2
    )
    recipe["training"].update(progress=False, warmup_steps=1)
    recipe["data"].update(documents=300, val_documents=30, vocab_size=300)
    recipe["data"].update(bpe_documents=100, num_workers=1)
    (tmp_path / "tiny-story.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(gptlib.story, "STORY_RECIPE", tmp_path / "tiny-story.yaml")
    model, tok = story_model(tmp_path / "story")
    assert (tmp_path / "story" / "run" / "ckpt.pt").is_file()
    assert model.config.n_layer == 1 and not model.training and tok.eot_id is not None
    published = {p.name for p in (tmp_path / "story").iterdir()}
    assert published >= {
        "model.safetensors",
        "model_config.json",
        "tokenizer.txt",
        "config.yaml",
        "metrics.jsonl",
    }
    mtime = (tmp_path / "story" / "model.safetensors").stat().st_mtime_ns
    again, _ = story_model(tmp_path / "story")  # present: loaded, not trained again
    assert (tmp_path / "story" / "model.safetensors").stat().st_mtime_ns == mtime
    pairs = zip(model.state_dict().values(), again.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_loading_the_story_model_does_not_import_the_trainer():
    import subprocess

    probe = (
        "import sys, gptlib.story, gptlib.checkpoint, gptlib.evaluate; "
        "print(sorted(m for m in ('gptlib.train', 'gptlib.commands') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout == "[]\n"


def test_story_model_dir_is_in_the_project(monkeypatch):
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert story_model_dir() == ROOT / "checkpoints" / "story-gpt"
    cfg = story_config()
    assert cfg.training.out_dir == str(ROOT / "checkpoints" / "story-gpt" / "run")
    assert cfg.data.dir == str(ROOT / "checkpoints" / "story-gpt" / "data")


# -- commands -------------------------------------------------------------------------------
def test_commands_usage_and_errors(capsys, tmp_path):
    assert train_command([str(tmp_path / "none.yaml")]) == 1
    missing = tmp_path / "none.yaml"
    assert capsys.readouterr().err == (
        f"gptlib train: error: config {missing} does not exist: use a YAML file or one"
        " of the shipped configs: gpt2-124m-slimpajama, story, tinystories-33m, tinystories-small\n"
    )
    assert train_command([]) == 1 and "needs a CONFIG file" in capsys.readouterr().err
    assert (
        train_command(["training.lr=1"]) == 1
        and "needs a CONFIG" in capsys.readouterr().err
    )
    assert (
        train_command(["--help"]) == 0
        and "usage: gptlib train" in capsys.readouterr().out
    )
    assert (
        train_command(["--fast"]) == 2
        and "unrecognized arguments" in capsys.readouterr().err
    )
    assert prepare_command(["data.tokenizer=gpt3", "data.source=stories"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gptlib prepare: error: ") and err.count("\n") == 1
    assert eval_command([str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "gptlib eval: error: give exactly one of --data DIR (prepared shards) or --text FILE\n"
    )
    assert eval_command([str(tmp_path), "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"gptlib eval: error: {tmp_path} holds no model"
    )
    assert eval_command(["x", "--dtype", "float8"]) == 2


def test_prepare_command_prepares_once(tmp_path, capsys):
    args = tiny(
        tmp_path / "data", tmp_path / "run", "data.documents=50", "data.val_documents=5"
    )
    assert prepare_command(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"prepared stories in {tmp_path / 'data'}"
    summary = prepared_summary(tmp_path / "data")
    assert out[1] == (
        f"  train: 50 documents, {summary['train']['tokens']:,} tokens "
        f"(all {summary['train']['tokens']:,})"
    )
    assert out[2].startswith("  val: 5 documents, ")
    cfg = load_config(None, args)
    assert data_is_prepared(cfg.data) and len(load_split(tmp_path / "data", "val")) == 1


def test_the_peak_is_unknown_on_a_cpu_and_the_mfu_says_n_a():
    # a measured matrix product is no peak: the model's own products beat it (MFU 160%)
    assert peak_flops(torch.device("cpu"), torch.float32) is None


def test_a_broken_gradient_with_a_finite_loss_stops_too(
    data_dir, tmp_path, monkeypatch
):
    """A NaN gradient norm puts NaN into the weights even when the loss is finite: the
    trainer stops at that step and never checkpoints what followed."""
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def broken_at_step_3(params, max_norm):
        norm = real(params, max_norm)
        calls.append(1)
        return torch.full_like(norm, math.nan) if len(calls) == 3 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", broken_at_step_3)
    cfg = load_config(
        None,
        tiny(data_dir, tmp_path, "training.max_steps=6", "training.log_interval=5",
             "training.ckpt_interval=2"),
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"gradient norm nan, at step 3:") as e:
        train(cfg)
    assert "the last good checkpoint is" in str(e.value) and "(step 2)" in str(e.value)
    assert (
        load_checkpoint(tmp_path / "ckpt.pt")["step"] == 2
    )  # step 4's was never written
