"""Hostile input and concurrent use, class by class: configs, corpus files, token shards,
tokenizer files, checkpoints, command-line arguments, concurrent runs, a full disk.

Every case ends in a refusal whose message is one line, names the value (or the file)
and says what is allowed; none runs on with a wrong answer, hangs or loses work.
"""

import base64
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_run

from gptlib.__main__ import main
from gptlib.batches import BatchSampler
from gptlib.checkpoint import (
    LOCK_FILE,
    RunLock,
    RunLockedError,
    load_checkpoint,
    save_checkpoint,
)
from gptlib.common import write_atomically
from gptlib.config import RUN_CONFIG_FILE, ConfigError, load_config
from gptlib.data import DataSourceError, load_corpus
from gptlib.evaluate import evaluate_tokens
from gptlib.gpt2_tokenizer import load_gpt2_tokenizer
from gptlib.logits import SamplingError, check_sampling_args
from gptlib.model import GPT, GPTConfig
from gptlib.prepare import prepare_data, tokenize_to_shards
from gptlib.pretrained import CheckpointError, read_weights, save_pretrained
from gptlib.shards import HEADER_BYTES, ShardError, load_split, read_shard, write_shard
from gptlib.tokenizer import BPETokenizer, train_bpe
from gptlib.train import Trainer


def run_cli(capsys, *argv) -> tuple[int, str]:
    """`gptlib ARGV` in this process: its exit status and its stderr."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def one_line_error(err: str, *parts: str) -> str:
    """The error line of a command's stderr, checked to be one line holding `parts`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in err, err
    last = lines[-1]
    for part in parts:
        assert part in last, (part, last)
    return last


def tiny(data_dir, out_dir, *extra):
    return tiny_run(
        data_dir, out_dir, "model.n_layer=1", "training.max_steps=2", *extra
    )


def train_args(tmp_path, *overrides) -> list:
    """`gptlib train` arguments: a config file (the command needs one), then overrides."""
    config = write_yaml(tmp_path / "tiny.yaml", "model:\n  preset: nano\n")
    return [config, *overrides]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained two-step run: its data folder and its out_dir."""
    root = tmp_path_factory.mktemp("hostile")
    trainer = Trainer(load_config(None, tiny(root / "data", root / "run")))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return root / "data", root / "run"


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- configs -------------------------------------------------------------------------------
def test_nested_aliases_are_refused_at_once_without_expanding(tmp_path):
    # "billion laughs": 9 ** 8 = 43 million items from a file of ~600 bytes
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    lines.append("model: *h")
    path = write_yaml(tmp_path / "laughs.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"laughs.yaml: not valid YAML at line 2: alias"
    ):
        load_config(path)
    assert time.perf_counter() - start < 5
    # an override with aliases is not parsed as YAML: it stays text, never expanded
    cfg = load_config(None, ["training.run_name=[&a [1, 1], *a, *a]"])
    assert cfg.training.run_name == "[&a [1, 1], *a, *a]"


def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path):
    path = write_yaml(tmp_path / "big.yaml", "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(
        ConfigError, match=r"big.yaml is 2,097,155 bytes: a config is at most 1,048,576"
    ):
        load_config(path)


def test_an_error_message_never_renders_a_whole_large_value(tmp_path):
    path = write_yaml(
        tmp_path / "wide.yaml", yaml.safe_dump({"model": [[1] * 10_000] * 50})
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(str(e.value)) < 400 and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "{}\n"])
def test_an_empty_config_is_refused_not_a_silent_124m_run(tmp_path, text):
    path = write_yaml(tmp_path / "empty.yaml", text)
    with pytest.raises(ConfigError, match="empty.yaml is empty: give it some settings"):
        load_config(path)
    # with changes on the command line, an empty file is a legitimate start
    assert load_config(path, ["model.preset=nano"]).model.preset == "nano"


def test_a_config_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder: use a YAML file or one of"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.lr=.inf", "training.lr"),
        ("training.lr=.nan", "training.lr"),
        ("training.min_lr=-.inf", "training.min_lr"),
        ("training.peak_flops=.inf", "training.peak_flops"),
        ("model.dropout=.nan", "model.dropout"),
        ("generation.temperature=.inf", "generation.temperature"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.n_layer=1000000000000000000000000",
            "n_layer=1000000000000000000000000 is not allowed",
        ),
        ("model.n_embd=10000000", r"parameters: at most 1e\+12 are allowed"),
        ("model.block_size=" + "9" * 5000, "model.block_size"),
    ],
)
def test_absurd_model_sizes_fail_at_once_not_after_minutes_of_building(
    override, message
):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override, "model.n_head=1"])
    assert time.perf_counter() - start < 2


def test_model_settings_that_cannot_apply_with_init_from_are_refused(run, tmp_path):
    # regression: block_size=64 was accepted, the run trained at 32, config.yaml said 64
    _, out = run
    with pytest.raises(
        ConfigError, match=r"model\.block_size=64 cannot apply with model\.init_from"
    ):
        load_config(None, [f"model.init_from={out}", "model.block_size=64"])
    with pytest.raises(ConfigError, match=r"model\.preset='nano' cannot apply"):
        load_config(None, [f"model.init_from={out}", "model.preset=nano"])
    cfg = load_config(
        None, [f"model.init_from={out}", "model.gradient_checkpointing=true"]
    )
    assert cfg.model.init_from == str(out)


# -- corpus files --------------------------------------------------------------------------
def _parquet(path: Path, **columns) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


CORPUS_CASES = {
    "empty.txt": (b"", "empty.txt holds no text: it is empty or only whitespace"),
    "blank.txt": (b"  \n\n\t \n", "blank.txt holds no text"),
    "binary.txt": (
        b"ab\x00cd\n",
        "binary.txt, line 1: a NUL byte: this is a binary file",
    ),
    "latin1.txt": (
        b"fine\ncaf\xe9 au lait\n",
        "latin1.txt, line 2: byte 0xe9 at column 4 is not UTF-8",
    ),
    "notext.jsonl": (
        b'{"body": "a"}\n',
        "notext.jsonl has no 'text' column (its columns: ['body'])",
    ),
    "missing.jsonl": (
        b'{"text": "a"}\n{"body": "b"}\n',
        "missing.jsonl, row 2: no 'text'",
    ),
    "broken.jsonl": (
        b'{"text": "a"}\n{"text": "b"\n',
        "broken.jsonl: line 2 is not valid JSON",
    ),
    "number.jsonl": (
        b'{"text": 5}\n',
        "number.jsonl: column 'text' holds int64, not text",
    ),
    "nothing.jsonl": (b"", "nothing.jsonl: it holds no rows"),
}


@pytest.mark.parametrize("name", sorted(CORPUS_CASES))
def test_a_bad_corpus_file_is_one_line_naming_the_file_and_the_place(
    tmp_path, monkeypatch, name
):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    content, message = CORPUS_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataSourceError) as e:
        list(load_corpus(path)["text"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_deeply_nested_json_line_is_named_not_a_recursion_error(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a"}\n' + "[" * 200_000 + "\n")
    with pytest.raises(DataSourceError, match=r"deep\.jsonl: line 2 is not valid JSON"):
        load_corpus(path)


def test_an_unexpected_failure_reading_a_text_file_names_the_file(
    tmp_path, monkeypatch
):
    import gptlib.data

    def denied(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gptlib.data, "_text_file_dataset", denied)
    (tmp_path / "a.txt").write_text("hello\n")
    with pytest.raises(DataSourceError, match=r"a\.txt cannot be read: .*Permission"):
        load_corpus(tmp_path / "a.txt")


def test_a_parquet_file_without_a_text_column(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    path = _parquet(tmp_path / "body.parquet", body=["a", "b"])
    with pytest.raises(DataSourceError, match=r"body.parquet has no 'text' column"):
        load_corpus(path)


def test_gptlib_prepare_reports_a_bad_corpus_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    status, err = run_cli(
        capsys, "prepare", f"data.source={bad}", f"data.dir={tmp_path}/d"
    )
    assert status == 1
    one_line_error(err, "gptlib prepare: error:", "latin1.txt, line 1", "not UTF-8")


def test_a_corpus_too_small_to_hold_out_validation_says_how_many_it_needs(
    tmp_path, monkeypatch
):
    # regression: 11 documents at val_fraction 0.01 ended in ZeroDivisionError
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    small = tmp_path / "small.txt"
    small.write_text("".join(f"Story {i} about a cat.\n\n" for i in range(11)))
    cfg = load_config(
        None,
        [
            f"data.source={small}",
            f"data.dir={tmp_path}/d",
            "data.vocab_size=260",
            "data.documents=null",
            "data.val_documents=null",
            "data.num_workers=1",
        ],
    )
    with pytest.raises(
        ShardError, match=r"every 100th, so the file needs at least 100 documents"
    ):
        prepare_data(cfg.data, progress=False)


# -- token shards --------------------------------------------------------------------------
def _damage(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_a_shard_with_a_garbage_header_is_named(tmp_path):
    path = write_shard(tmp_path / "a.bin", [1, 2, 3], tokenizer="t", vocab_size=8)
    _damage(path, 16, b"garbage!!")
    with pytest.raises(ShardError, match=r"a\.bin: its header is damaged \(not JSON\)"):
        read_shard(path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_tokens", "3", "n_tokens='3' is not a int"),
        ("dtype", "float64", "dtype='float64', n_tokens=3: expected uint16 or uint32"),
        ("vocab_size", None, "vocab_size=None is not a int"),
    ],
)
def test_a_shard_header_of_the_wrong_types_is_named(tmp_path, field, value, message):
    meta = {"tokenizer": "t", "vocab_size": 8, "dtype": "uint16", "n_tokens": 3}
    meta[field] = value
    text = json.dumps(meta).encode()
    head = (
        b"GPTSHARD" + (1).to_bytes(4, "little") + len(text).to_bytes(4, "little") + text
    )
    path = tmp_path / "a.bin"
    path.write_bytes(
        head.ljust(HEADER_BYTES, b"\0") + np.array([1, 2, 3], np.uint16).tobytes()
    )
    with pytest.raises(ShardError, match=message):
        read_shard(path)


def test_an_id_beyond_the_vocabulary_names_the_shard_and_the_id(tmp_path):
    path = write_shard(
        tmp_path / "a.bin", np.arange(64) % 8, tokenizer="t", vocab_size=8
    )
    _damage(path, HEADER_BYTES, (60000).to_bytes(2, "little"))  # the first id
    sampler = BatchSampler([read_shard(path)], block_size=63, batch_size=1)
    with pytest.raises(
        ShardError,
        match=r"a\.bin: token id 60000 near position 0 is not below its vocab_size 8",
    ):
        sampler.batch(0)
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match=r"token id 60000 is not an id of the model"):
        evaluate_tokens(model, read_shard(path).tokens)


def test_shards_of_another_tokenizer_with_the_same_name_and_size_are_refused(
    run, tmp_path, capsys
):
    # regression: eval gave a meaningless loss, exit 0
    data, out = run
    cfg = load_config(
        None, tiny(tmp_path / "other", tmp_path / "unused", "data.seed=7")
    )
    prepare_data(cfg.data, progress=False)
    ours, theirs = (
        read_shard(data / "val_000000.bin"),
        read_shard(tmp_path / "other" / "val_000000.bin"),
    )
    assert ours.header["tokenizer"] == theirs.header["tokenizer"]
    assert ours.header["vocab_size"] == theirs.header["vocab_size"]
    assert ours.header["tokenizer_id"] != theirs.header["tokenizer_id"]
    status, err = run_cli(capsys, "eval", out, "--data", tmp_path / "other")
    assert status == 1
    one_line_error(
        err, "was tokenized with bpe-300", "not the model's tokenizer bpe-300"
    )
    # and resuming the run on them
    with pytest.raises(
        CheckpointError, match="was trained on shards of another tokenizer"
    ):
        Trainer(
            load_config(
                None,
                tiny(tmp_path / "other", out, "data.seed=7", "training.max_steps=4"),
            )
        )


def test_shards_of_two_tokenizers_in_one_split_are_refused(tmp_path):
    a = train_bpe(["the cat sat"] * 5, 262)
    b = train_bpe(["a dog ran"] * 5, 262)
    for k, tok in enumerate((a, b)):
        ids = tok.encode("the cat sat a dog ran")
        write_shard(
            tmp_path / f"train_00000{k}.bin",
            ids,
            tokenizer="bpe-262",
            vocab_size=262,
            tokenizer_id=tok.fingerprint,
        )
    with pytest.raises(ShardError, match="come from different tokenizers"):
        load_split(tmp_path, "train")


# -- tokenizer files -----------------------------------------------------------------------
def _tiktoken_file(path: Path, n: int) -> Path:
    tokens = [bytes([b]) for b in range(256)] + [b"t%d" % k for k in range(n - 256)]
    lines = [f"{base64.b64encode(t).decode()} {rank}" for rank, t in enumerate(tokens)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_truncated_gpt2_tiktoken_file_is_refused_naming_what_is_missing(tmp_path):
    # regression: 19,197 of 50,256 ranks loaded without a word, vocab_size still 50257
    path = _tiktoken_file(tmp_path / "gpt2.tiktoken", 19_197)
    with pytest.raises(
        ValueError,
        match=r"gpt2\.tiktoken holds 19,197 ranks, GPT-2's tokenizer has 50,256",
    ):
        load_gpt2_tokenizer(path)


def test_a_gpt2_tiktoken_of_the_right_size_but_other_ranks_is_refused(tmp_path):
    path = _tiktoken_file(tmp_path / "gpt2.tiktoken", 50_256)
    with pytest.raises(
        ValueError, match=r"sha256 [0-9a-f]{16}\.\.\. is not that of GPT-2's ranks"
    ):
        load_gpt2_tokenizer(path)


def test_the_fingerprint_depends_on_the_ids_not_on_the_order_of_a_dict():
    a = train_bpe(["the cat sat"] * 5, 262, special_tokens=("<|a|>", "<|b|>"))
    swapped = dict(reversed(list(a.special_tokens.items())))
    b = BPETokenizer(a.ranks, swapped, a.pattern)
    assert a.fingerprint == b.fingerprint
    other = BPETokenizer(a.ranks, {"<|a|>": 261, "<|b|>": 260}, a.pattern)
    assert other.fingerprint != a.fingerprint


def test_a_gpt2_tiktoken_checked_out_with_crlf_endings_still_loads(
    shared_data, tmp_path
):
    crlf = tmp_path / "gpt2.tiktoken"
    crlf.write_bytes(
        (shared_data / "gpt2.tiktoken").read_bytes().replace(b"\n", b"\r\n")
    )
    assert load_gpt2_tokenizer(crlf).vocab_size == 50257


def test_the_real_gpt2_files_load_in_full(shared_data):
    for name in ("gpt2.tiktoken", "encoder.json"):
        tok = load_gpt2_tokenizer(shared_data / name)
        assert tok.vocab_size == 50257 and len(tok.ranks) == 50256


def test_a_truncated_gptlib_tokenizer_file_names_the_line(tmp_path):
    path = tmp_path / "tokenizer.txt"
    train_bpe(["low lower lowest"] * 3, 262).save(path)
    path.write_text("\n".join(path.read_text().splitlines()[:100]) + "\n")
    with pytest.raises(
        ValueError,
        match=r"tokenizer\.txt, line \d+: the header announces \d+ tokens but the file holds 99",
    ):
        BPETokenizer.load(path)


# -- checkpoints ---------------------------------------------------------------------------
def test_damaged_checkpoints_are_one_line(run, tmp_path, capsys):
    _, out = run
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(
        CheckpointError, match=r"ckpt\.pt cannot be read: it is damaged"
    ):
        load_checkpoint(tmp_path / "ckpt.pt")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: cannot read the weights"
    ):
        read_weights(tmp_path / "model.safetensors")
    status, err = run_cli(capsys, "eval", tmp_path / "ckpt.pt", "--data", run[0])
    assert status == 1
    one_line_error(err, "gptlib eval: error:", "ckpt.pt")


def test_a_pickle_with_code_in_pytorch_model_bin_is_refused_without_running_it(
    tmp_path,
):
    transformers = pytest.importorskip("transformers")
    from gptlib.pretrained import gpt_from_hf

    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=1, n_head=2, n_embd=8, n_positions=16, vocab_size=64
        )
    )
    folder = tmp_path / "evil"
    hf.config.save_pretrained(folder)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({**hf.state_dict(), "payload": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(
        ValueError,
        match=r"evil: refused pytorch_model\.bin: its pickle holds more than tensors \(GLOBAL",
    ):
        gpt_from_hf(folder)
    assert not marker.exists()


def test_saved_files_get_the_usual_permissions(run):
    _, out = run
    expected = 0o666 & ~_umask()
    for name in ("model.safetensors", "model_config.json", "ckpt.pt", "tokenizer.txt"):
        assert (out / name).stat().st_mode & 0o777 == expected, name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- command-line arguments ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "-4"], "argument --batch-size: '-4' is not an integer >= 1"),
        (["--batch-size", "0"], "argument --batch-size: '0' is not an integer >= 1"),
        (
            ["--max-batches", "-1"],
            "argument --max-batches: '-1' is not an integer >= 1",
        ),
        (["--max-batches", "0"], "argument --max-batches: '0' is not an integer >= 1"),
        (
            ["--batch-size", "lots"],
            "argument --batch-size: 'lots' is not an integer >= 1",
        ),
    ],
)
def test_eval_numbers_are_checked(run, capsys, args, message):
    # regression: --batch-size -4 scored 10 of 11,146 tokens and exited 0
    data, out = run
    status, err = run_cli(capsys, "eval", out, "--data", data, *args)
    assert status == 2
    one_line_error(err, message)


def test_eval_of_an_empty_text_file(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path / "home"))
    (tmp_path / "empty.txt").write_text("")
    status, err = run_cli(capsys, "eval", run[1], "--text", tmp_path / "empty.txt")
    assert status == 1
    one_line_error(err, "empty.txt holds no text")


def test_evaluate_tokens_checks_its_numbers_too():
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
    for name, value in (("batch_size", -4), ("batch_size", 0), ("max_batches", -1)):
        with pytest.raises(ValueError, match=f"{name}={value} is not allowed"):
            evaluate_tokens(model, np.arange(20) % 8, **{name: value})


@pytest.mark.parametrize(
    "args, status, message",
    [
        (
            ["--max-new-tokens", "1000000000000"],
            1,
            "max_new_tokens=1000000000000 is not allowed: use an integer >= 0 and <= 1000000",
        ),
        (
            ["--max-new-tokens", "-3"],
            2,
            "argument --max-new-tokens: '-3' is not an integer >= 1",
        ),
        (
            ["--num-samples", "0"],
            2,
            "argument --num-samples: '0' is not an integer >= 1",
        ),
        (["--top-p", "1.5"], 1, "top_p=1.5 is not allowed"),
        (["--temperature", "nan"], 1, "temperature=nan is not allowed"),
        (["--device", "tpu"], 1, "device 'tpu' is not one of auto, cpu, cuda"),
    ],
)
def test_sample_arguments_are_checked_before_any_work(
    run, capsys, args, status, message
):
    got, err = run_cli(capsys, "sample", "--checkpoint", run[1], *args)
    assert got == status
    one_line_error(err, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sample_on_cuda_without_cuda_is_one_line(run, capsys):
    status, err = run_cli(capsys, "sample", "--checkpoint", run[1], "--device", "cuda")
    assert status == 1
    one_line_error(err, "device 'cuda', but this PyTorch sees no CUDA GPU")


def test_max_new_tokens_is_bounded_in_the_library():
    with pytest.raises(
        SamplingError, match="max_new_tokens=10000000000 is not allowed"
    ):
        check_sampling_args(max_new_tokens=10**10)


# -- concurrent runs -----------------------------------------------------------------------
HOLD = """
import sys, time
from gptlib.checkpoint import RunLock
lock = RunLock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_on_a_locked_out_dir_fails_at_once_naming_the_holder(
    run, tmp_path, capsys
):
    # regression: two runs on one out_dir interleaved their records and one crashed
    data, _ = run
    out = tmp_path / "run"
    out.mkdir()
    holder = _holder(out)
    try:
        args = train_args(tmp_path, *tiny(data, out))
        start = time.perf_counter()
        status, err = run_cli(capsys, "train", *args)
        assert status == 1 and time.perf_counter() - start < 10
        one_line_error(err, f"is in use by another run (PID {holder.pid})")
        assert not (out / "metrics.jsonl").exists()  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_trainer_left_open_in_this_process_is_named_as_such(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="in use by this process: a Trainer"):
            RunLock(tmp_path)


def test_a_killed_holder_never_leaves_its_folder_locked(tmp_path):
    holder = _holder(tmp_path)
    with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
        RunLock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RunLock(tmp_path):  # the operating system released it with the process
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_lock_is_released_when_a_run_ends_or_fails_to_start(run, tmp_path):
    data, _ = run
    out = tmp_path / "run"
    trainer = Trainer(load_config(None, tiny(data, out)))
    trainer.close()
    RunLock(out).release()  # free after close()
    with pytest.raises(ValueError):  # fails while setting up, after taking the lock
        Trainer(
            load_config(
                None,
                tiny(
                    data,
                    out,
                    "data.dir=" + str(tmp_path / "nothing"),
                    "data.source=" + str(tmp_path / "none.txt"),
                ),
            )
        )
    RunLock(out).release()


def test_config_yaml_describes_the_checkpoint_when_nothing_was_trained(
    run, tmp_path, capsys
):
    # regression: a re-run with overrides rewrote config.yaml though no step was trained
    data, out = run
    before = (out / RUN_CONFIG_FILE).read_text()
    args = tiny(data, out, "training.lr=0.05", "training.max_steps=1")
    status, _ = run_cli(capsys, "train", *train_args(tmp_path, *args))
    assert status == 0
    assert (out / RUN_CONFIG_FILE).read_text() == before


def test_the_records_say_mfu_n_a_on_a_cpu(run):
    _, out = run
    records = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in records if "mfu" in r]
    assert steps and all(r["mfu"] is None for r in steps)


# -- a full disk ---------------------------------------------------------------------------
def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")
    with pytest.raises(
        OSError, match=r"cannot write .*notes\.txt: No space left on device"
    ) as e:
        write_atomically(path, _full_disk)
    assert e.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [
        "notes.txt"
    ]


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path, monkeypatch
):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(
        OSError, match=r"cannot write .*ckpt\.pt: No space left on device"
    ):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_a_full_disk_while_writing_shards_names_the_shard(tmp_path, monkeypatch):
    tok = train_bpe(
        ["the cat sat on the mat"] * 5, 262, special_tokens=("<|endoftext|>",)
    )
    import gptlib.common

    monkeypatch.setattr(gptlib.common.os, "replace", _full_disk)  # the last write
    with pytest.raises(
        OSError, match=r"cannot write .*train_000000\.bin: No space left"
    ):
        tokenize_to_shards(["the cat"], tok, tmp_path, num_workers=1, progress=False)


def test_save_pretrained_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import gptlib.pretrained

    def full(*_args, **_kwargs):  # how safetensors reports it: not an OSError
        raise SafetensorError("Error while serializing: I/O error: No space left")

    monkeypatch.setattr(gptlib.pretrained, "save_file", full)
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(
        OSError, match=r"model\.safetensors: Error while serializing: I/O error: No"
    ):
        save_pretrained(model, tmp_path)
