"""Chapter 5's prepare at chapter 8's scale: local files shaped like TinyStories (V2 text
files) and SlimPajama (JSON lines with meta.redpajama_set_name), exact token counts, a
token budget shared among sets by weights, and a prepare killed by SIGKILL that resumes to
byte-identical shards."""

import filecmp
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from gptlib.config import ConfigError, load_config
from gptlib.prepare import (
    TokenBudget,
    prepare_data,
    prepared_summary,
    tokenize_to_shards,
)
from gptlib.shards import load_split, read_shard
from gptlib.stories import generate_stories
from gptlib.tokenizer import BPETokenizer, train_bpe

SETS = ["RedPajamaCommonCrawl"] * 4 + ["RedPajamaC4"] * 2
SETS += ["RedPajamaWikipedia", "RedPajamaBook"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A TinyStories-V2-shaped text file and a SlimPajama-shaped JSON-lines file."""
    d = tmp_path_factory.mktemp("corpora")
    stories = generate_stories(600, seed=3)
    tiny = d / "TinyStoriesV2-GPT4-train.txt"
    tiny.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories))
    slim = d / "slimpajama.jsonl"
    rows = [
        {"text": t, "meta": {"redpajama_set_name": SETS[i % len(SETS)]}}
        for i, t in enumerate(generate_stories(800, seed=4))
    ]
    slim.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"tiny": tiny, "slim": slim, "stories": stories, "rows": rows}


def local(source, data_dir, *extra) -> list[str]:
    return [
        f"data.source={source}",
        f"data.dir={data_dir}",
        "data.tokenizer=bpe",
        "data.vocab_size=300",
        "data.bpe_documents=200",
        "data.val_fraction=0.1",
        "data.num_workers=1",
        "data.shard_tokens=20000",
        *extra,
    ]


def test_tinystories_file_token_counts_are_exact(files, tmp_path):
    cfg = load_config("tinystories-small", local(files["tiny"], tmp_path)).data
    summary = prepared_summary(prepare_data(cfg, progress=False))
    tok = BPETokenizer.load(tmp_path / "tokenizer.txt")
    # every 10th story is held out; each document is <|endoftext|> and its ids
    train = [s for i, s in enumerate(files["stories"]) if i % 10 != 9]
    val = files["stories"][9::10]
    for split, docs in (("train", train), ("val", val)):
        expected = sum(len(tok.encode(d)) + 1 for d in docs)
        shards = load_split(tmp_path, split)
        assert sum(s.header["n_tokens"] for s in shards) == expected
        assert summary[split]["tokens"] == expected
        assert summary[split]["docs"] == len(docs)
        ids = [int(i) for s in shards for i in s.tokens]
        assert ids.count(tok.eot_id) == len(docs)
        assert tok.decode(ids[1:40]) == docs[0][: len(tok.decode(ids[1:40]))]
    assert len(load_split(tmp_path, "train")) > 1  # several shards of 20,000 ids


def test_the_set_mix_is_honoured_by_tokens(files, tmp_path):
    shares = {
        "RedPajamaCommonCrawl": 0.5,
        "RedPajamaWikipedia": 0.3,
        "RedPajamaBook": 0.2,
    }
    extra = ("data.tokens=30000", f"data.sets={shares}")
    cfg = load_config("gpt2-124m-slimpajama", local(files["slim"], tmp_path, *extra))
    summary = prepared_summary(prepare_data(cfg.data, progress=False))["train"]
    tok = BPETokenizer.load(tmp_path / "tokenizer.txt")
    # the same selection, by hand: in order, a document while its set's share has room
    quota = {k: round(30000 * w) for k, w in shares.items()}
    taken: dict[str, int] = {}
    kept = [r for i, r in enumerate(files["rows"]) if i % 10 != 9]
    for row in kept:
        name = row["meta"]["redpajama_set_name"]
        if name in quota and taken.get(name, 0) < quota[name]:
            taken[name] = taken.get(name, 0) + len(tok.encode(row["text"])) + 1
        if all(taken.get(k, 0) >= q for k, q in quota.items()):
            break
    assert summary["sets"] == dict(sorted(taken.items()))
    assert summary["tokens"] == sum(taken.values())
    longest = max(len(tok.encode(r["text"])) + 1 for r in kept)
    for name, q in quota.items():  # each share met, overshooting by under a document
        assert q <= summary["sets"][name] < q + longest
    assert "RedPajamaC4" not in summary["sets"]


def test_budget_without_sets_caps_the_tokens(files, tmp_path):
    cfg = load_config(
        "tinystories-small", local(files["tiny"], tmp_path, "data.tokens=5000")
    )
    summary = prepared_summary(prepare_data(cfg.data, progress=False))["train"]
    assert 5000 <= summary["tokens"] < 5000 + 2000 and set(summary["sets"]) == {"all"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.sets={RedPajamaWeb: 1}", "is not one of SlimPajama's sets"),
        ("data.sets={RedPajamaC4: 0}", "every weight is 0"),
        ("data.sets={RedPajamaC4: -1}", "data.sets"),
    ],
)
def test_bad_set_mixes_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("gpt2-124m-slimpajama", [override])
    assert "\n" not in str(e.value)


def test_sets_need_a_corpus_with_sets(files, tmp_path):
    with pytest.raises(ConfigError, match="applies to SlimPajama"):
        load_config("tinystories-small", ["data.sets={RedPajamaC4: 1}"])
    cfg = load_config(
        "gpt2-124m-slimpajama",
        local(files["tiny"], tmp_path, "data.sets={RedPajamaC4: 1}"),
    )
    with pytest.raises(ValueError, match="row 1: no meta.redpajama_set_name"):
        prepare_data(cfg.data, progress=False)


def test_token_budget_checks_its_weights():
    with pytest.raises(ValueError, match="must be finite numbers >= 0"):
        TokenBudget(100, {"a": float("nan")})
    assert TokenBudget(100, {"a": 1, "b": 1}).quota == {"a": 50, "b": 50}
    assert TokenBudget().quota is None and not TokenBudget().full


KILLED = """
import os, signal, sys
from gptlib.prepare import tokenize_to_shards
from gptlib.stories import generate_stories
from gptlib.tokenizer import BPETokenizer

def killed_after(n, texts):
    for i, t in enumerate(texts):
        if i == n:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception: gone
        yield t

tok = BPETokenizer.load(sys.argv[2])
stories = generate_stories(600, seed=3)
tokenize_to_shards(killed_after(int(sys.argv[3]), stories), tok, sys.argv[1],
                   shard_tokens=8000, num_workers=2, chunk_docs=16, progress=False)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize("kill_at", [250, 431])
def test_a_killed_prepare_resumes_to_identical_shards(tmp_path, kill_at):
    stories = generate_stories(600, seed=3)
    tok = train_bpe(stories[:200], vocab_size=300)
    tok.save(tmp_path / "tok.txt")
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    out = tmp_path / "resumed"
    run = subprocess.run(
        [
            sys.executable,
            str(script),
            str(out),
            str(tmp_path / "tok.txt"),
            str(kill_at),
        ],
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    saved = json.loads((out / "train.progress.json").read_text())
    assert 0 < saved["shards"] and 0 < saved["read"] <= kill_at
    options = dict(shard_tokens=8000, num_workers=1, chunk_docs=16, progress=False)
    kept = sorted(out.glob("train_*.bin"))[: saved["shards"]]
    written = {p.name: p.stat().st_mtime_ns for p in kept}
    resumed = tokenize_to_shards(stories, tok, out, resume=True, **options)
    whole = tokenize_to_shards(stories, tok, tmp_path / "whole", **options)
    assert [p.name for p in resumed] == [p.name for p in whole]
    assert all(filecmp.cmp(a, b, shallow=False) for a, b in zip(resumed, whole))
    done = json.loads((out / "train.progress.json").read_text())
    assert done["done"] and done["shards"] == len(whole)
    # it went on from the saved position: the shards written before the kill were kept
    assert {p.name: p.stat().st_mtime_ns for p in kept} == written
    headers = [read_shard(p).header for p in resumed]
    assert sum(h["n_docs"] for h in headers) == len(stories)


def test_prepare_data_resumes_a_stopped_run_of_the_same_settings(
    files, tmp_path, monkeypatch
):
    """prepare_data records its settings while it runs; a second call with the same
    settings continues the stopped run (no new tokenizer, the shards kept), and one with
    other settings starts again."""
    import gptlib.prepare as prepare

    cfg = load_config("tinystories-small", local(files["tiny"], tmp_path / "a")).data
    real = prepare.corpus_split
    calls = {"n": 0}

    def stopping(cfg, split):
        texts, total = real(cfg, split)

        def gen():
            for i, t in enumerate(texts):
                if split == "train" and i == 400 and calls["n"] == 0:
                    calls["n"] += 1
                    raise KeyboardInterrupt
                yield t

        return gen(), total

    monkeypatch.setattr(prepare, "corpus_split", stopping)
    small_chunks = functools.partial(prepare.tokenize_to_shards, chunk_docs=16)
    monkeypatch.setattr(prepare, "tokenize_to_shards", small_chunks)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, progress=False)
    assert (tmp_path / "a" / "preparing.json").is_file()
    assert (tmp_path / "a" / "train.progress.json").is_file()
    tokenizer_before = (tmp_path / "a" / "tokenizer.txt").read_bytes()
    prepare_data(cfg, progress=False)  # resumes
    assert (tmp_path / "a" / "tokenizer.txt").read_bytes() == tokenizer_before
    monkeypatch.setattr(prepare, "corpus_split", real)
    fresh = load_config("tinystories-small", local(files["tiny"], tmp_path / "b")).data
    prepare_data(fresh, progress=False)
    for split in ("train", "val"):
        a, b = load_split(tmp_path / "a", split), load_split(tmp_path / "b", split)
        assert len(a) == len(b)
        assert all(filecmp.cmp(x.path, y.path, shallow=False) for x, y in zip(a, b))
    assert not (tmp_path / "a" / "preparing.json").exists()


def test_a_document_longer_than_a_shard_resumes_to_identical_shards(tmp_path):
    """Stopped between two shards of one long document, the run resumes to the same
    shards and headers as one that never stopped."""
    tok = train_bpe(generate_stories(50), vocab_size=300)
    texts = ["a short one.", " ".join(generate_stories(6)), "another short one."]
    options = dict(shard_tokens=200, num_workers=1, chunk_docs=1, progress=False)
    whole = tokenize_to_shards(texts, tok, tmp_path / "whole", **options)
    assert len(whole) > 4  # the long document fills several shards

    def stopped_after_two(items):
        yield from items[:2]
        raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        tokenize_to_shards(stopped_after_two(texts), tok, out, **options)
    saved = json.loads((out / "train.progress.json").read_text())
    assert saved["read"] == 2 and len(saved["carry"]) < 200
    resumed = tokenize_to_shards(texts, tok, out, resume=True, **options)
    assert [read_shard(p).header for p in resumed] == [
        read_shard(p).header for p in whole
    ]
    assert all(filecmp.cmp(a, b, shallow=False) for a, b in zip(resumed, whole))
    headers = [read_shard(p).header for p in whole]
    assert [h["n_docs"] for h in headers[:3]] == [2, 0, 0]  # where each document starts


def test_a_finished_split_is_not_tokenized_again(tmp_path):
    tok = train_bpe(generate_stories(50), vocab_size=300)
    stories = generate_stories(200)
    options = dict(shard_tokens=5000, num_workers=1, progress=False)
    first = tokenize_to_shards(stories, tok, tmp_path, **options)
    written = {p: p.stat().st_mtime_ns for p in first}

    def never(items):
        raise AssertionError("a finished split was read again")
        yield

    again = tokenize_to_shards(never(stories), tok, tmp_path, resume=True, **options)
    assert again == first and {p: p.stat().st_mtime_ns for p in again} == written


def test_a_new_prepare_never_takes_the_tokenizer_of_another(
    files, tmp_path, monkeypatch
):
    """A prepare with other settings, stopped while it trains its tokenizer, must not
    pick up the tokenizer of the run before it when started again."""
    import gptlib.prepare as prepare

    old = load_config("tinystories-small", local(files["tiny"], tmp_path)).data
    prepare_data(old, progress=False)
    new = load_config(
        "tinystories-small", local(files["tiny"], tmp_path, "data.vocab_size=400")
    ).data

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "train_bpe", stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(new, progress=False)
    monkeypatch.undo()
    prepare_data(new, progress=False)
    assert BPETokenizer.load(tmp_path / "tokenizer.txt").vocab_size == 400
    assert read_shard(load_split(tmp_path, "train")[0].path).header["vocab_size"] == 400
