"""Byte-level BPE speed: gptlib against Hugging Face `tokenizers`, side by side in one run.

    python bench/bench_tokenizer.py [--mb 10] [--vocab 4096] [--naive-fraction 0.005] [--repeats 2]

Training, a `--vocab` vocabulary (special token included) on about `--mb` MB of text:
tinyshakespeare and the TinyStories slice from the sample data folder (when present), then
generated stories up to the size. The same documents go to

* `train_bpe` (gptlib's fast trainer, one core);
* `tokenizers`' `BpeTrainer` with the byte-level pre-tokenizer (GPT-2's split pattern),
  the 256 byte alphabet and the same special token (Rust, on all cores);
* `train_bpe_naive`, which is far too slow for the whole corpus. It is timed twice: on a
  slice (every k-th document, `--naive-fraction` of the text) for all merges, scaled by the
  size, since each of its merges is a full pass over the corpus; and on the whole corpus
  for its first merges, scaled by the number of merges (an upper bound: later merges are
  cheaper, as the sequences shrink). The ratio uses the smaller of the two estimates. On
  the slice, the fast trainer's merges are checked against the naive trainer's.

Encoding, MB/s of UTF-8 text, with GPT-2's vocabulary on the same documents: gptlib's
`to_tiktoken()` against a `tokenizers` GPT-2 tokenizer built from the sample folder's
vocab.bpe + encoder.json (both on one thread, and batched on all cores), with gptlib's
pure-Python encoder for scale; the ids of the two are checked to be the same.

Times on a shared machine are noisy: every figure is the best of `--repeats` runs.
"""

import argparse
import os
import platform
import time
import warnings

import tiktoken

from gptlib.bpe import GPT2_PATTERN, learn_merges_naive, training_chunks
from gptlib.data import EOT, shared_data_dir
from gptlib.gpt2_tokenizer import gpt2_bytes_to_unicode, load_gpt2_tokenizer
from gptlib.stories import generate_stories
from gptlib.tokenizer import train_bpe, train_bpe_naive


def corpus(mb: float) -> tuple[list[str], str]:
    """Documents of about `mb` MB: the real sample texts, then generated stories."""
    docs, parts = [], []
    shared = shared_data_dir()
    if shared is not None:
        shakespeare = (shared / "tinyshakespeare_input.txt").read_text(encoding="utf-8")
        stories = (shared / "tiny_stories_train_head.txt").read_text(encoding="utf-8")
        docs += [d for d in shakespeare.split("\n\n") if d.strip()]
        docs += [d for d in stories.split("\n") if d.strip()]
        parts.append("tinyshakespeare + TinyStories slice (2.1 MB)")
    size = sum(len(d.encode("utf-8")) for d in docs)
    n = 0
    while size < mb * 1e6:
        batch = generate_stories(2000, start=n)
        n += len(batch)
        for story in batch:
            if size >= mb * 1e6:
                break
            docs.append(story)
            size += len(story.encode("utf-8"))
    parts.append("generated stories")
    # interleave, so that every slice of the list is a sample of the whole
    docs = [
        docs[i] for i in sorted(range(len(docs)), key=lambda i: (i * 7919) % len(docs))
    ]
    return docs, " + ".join(parts)


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def hf_train(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def hf_gpt2(shared):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(
        models.BPE.from_file(str(shared / "encoder.json"), str(shared / "vocab.bpe"))
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def naive_first_merges(docs: list[str], k: int) -> float:
    """Seconds per merge of the naive trainer on the whole corpus, over its first `k` merges."""
    chunks = [
        list(c.encode("utf-8"))
        for part in training_chunks(docs, GPT2_PATTERN, (EOT,))
        for c in part
    ]
    t0 = time.perf_counter()
    learn_merges_naive(chunks, k)
    return (time.perf_counter() - t0) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mb", type=float, default=10.0, help="training text, MB (default 10)"
    )
    parser.add_argument(
        "--vocab", type=int, default=4096, help="vocabulary size (default 4096)"
    )
    parser.add_argument(
        "--naive-fraction",
        type=float,
        default=0.005,
        help="naive trainer's slice (0.005)",
    )
    parser.add_argument(
        "--naive-full-merges",
        type=int,
        default=3,
        help="naive merges timed on the whole corpus",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="best of this many runs (default 2)"
    )
    args = parser.parse_args()
    import tokenizers

    docs, what = corpus(args.mb)
    size = sum(len(d.encode("utf-8")) for d in docs)
    cores = os.cpu_count()
    print(
        f"machine: {platform.machine()}, {cores} CPU cores, Python {platform.python_version()}, "
        f"tiktoken {tiktoken.__version__}, tokenizers {tokenizers.__version__}"
    )
    print(
        f"corpus: {len(docs):,} documents, {size / 1e6:.2f} MB ({what}); vocabulary {args.vocab}"
    )

    # ---- training
    fast_s, ours = best_of(args.repeats, lambda: train_bpe(docs, args.vocab))
    print(f"train_bpe: {fast_s:.2f} s, {len(ours.merges)} merges")
    hf_s, hf = best_of(args.repeats, lambda: hf_train(docs, args.vocab))
    byte_of = {ch: b for b, ch in gpt2_bytes_to_unicode().items()}
    hf_tokens = {bytes(byte_of[c] for c in t) for t in hf.get_vocab() if t != EOT}
    common = len(hf_tokens & set(ours.ranks))
    print(
        f"tokenizers BpeTrainer: {hf_s:.2f} s, {hf.get_vocab_size()} tokens; {common} of our {len(ours.ranks)} "
        "non-special tokens are among its tokens"
    )

    step = max(1, round(1 / args.naive_fraction))
    piece = docs[::step]
    piece_size = sum(len(d.encode("utf-8")) for d in piece)
    with warnings.catch_warnings():
        # a small slice may allow fewer merges: we scale by the merges too
        warnings.simplefilter("ignore")
        slice_fast_s, slice_fast = best_of(1, lambda: train_bpe(piece, args.vocab))
        naive_slice_s, slice_naive = best_of(
            1, lambda: train_bpe_naive(piece, args.vocab)
        )
    assert slice_naive.merges == slice_fast.merges, (
        "the fast and naive trainers disagree"
    )
    print(
        f"naive on a {piece_size / 1e3:.0f} kB slice: {naive_slice_s:.1f} s for {len(slice_naive.merges)} merges "
        f"(fast: {slice_fast_s:.2f} s, same merges)"
    )
    naive_by_slice = (
        naive_slice_s
        * (size / piece_size)
        * (len(ours.merges) / max(len(slice_naive.merges), 1))
    )
    per_merge = naive_first_merges(docs, args.naive_full_merges)
    naive_by_merges = per_merge * len(ours.merges)
    print(
        f"naive on the whole corpus: {per_merge:.1f} s per merge over its first {args.naive_full_merges}"
    )
    naive_s = min(naive_by_slice, naive_by_merges)

    # ---- encoding
    shared = shared_data_dir()
    rows = []
    if shared is None:
        print("no sample data folder: GPT-2 encoding comparison skipped")
    else:
        gpt2 = load_gpt2_tokenizer(shared / "gpt2.tiktoken")
        enc = gpt2.to_tiktoken()
        hf2 = hf_gpt2(shared)
        hf_batch = getattr(hf2, "encode_batch_fast", hf2.encode_batch)
        check = docs[:3000]
        assert [e.ids for e in hf2.encode_batch(check)] == enc.encode_ordinary_batch(
            check
        ), "GPT-2 ids differ"
        mb = size / 1e6
        t_tk1, _ = best_of(args.repeats, lambda: [enc.encode_ordinary(d) for d in docs])
        t_hf1, _ = best_of(args.repeats, lambda: [hf2.encode(d).ids for d in docs])
        t_tkn, _ = best_of(
            args.repeats, lambda: enc.encode_ordinary_batch(docs, num_threads=cores)
        )
        t_hfn, _ = best_of(args.repeats, lambda: hf_batch(docs))
        py_docs = docs[: max(1, len(docs) // 10)]
        py_mb = sum(len(d.encode("utf-8")) for d in py_docs) / 1e6
        # an empty cache of chunks
        fresh = load_gpt2_tokenizer(shared / "gpt2.tiktoken")
        t_py, _ = best_of(1, lambda: [fresh.encode_ordinary(d) for d in py_docs])
        rows = [
            ("one thread", mb / t_tk1, mb / t_hf1),
            (f"batch, {cores} threads", mb / t_tkn, mb / t_hfn),
        ]
        print(
            f"pure-Python encoder (gptlib encode, GPT-2, {py_mb:.1f} MB, cold cache): {py_mb / t_py:.2f} MB/s"
        )

    # ---- the tables
    print()
    print(
        f"Training a {args.vocab}-token vocabulary on {size / 1e6:.1f} MB ({cores}-core CPU):"
    )
    print()
    print("| trainer | time | vs gptlib fast |")
    print("|---|---:|---:|")
    print(f"| gptlib `train_bpe` (pure Python, 1 core) | {fast_s:.1f} s | 1x |")
    print(
        f"| Hugging Face `tokenizers` BpeTrainer (Rust, {cores} cores) | {hf_s:.1f} s | {hf_s / fast_s:.2f}x |"
    )
    print(
        f"| gptlib `train_bpe_naive`, scaled from a {piece_size / 1e3:.0f} kB slice | {naive_by_slice / 3600:.1f} h "
        f"| {naive_by_slice / fast_s:,.0f}x |"
    )
    print(
        f"| gptlib `train_bpe_naive`, scaled from its first merges on all of it | {naive_by_merges / 3600:.1f} h "
        f"| {naive_by_merges / fast_s:,.0f}x |"
    )
    print()
    print(
        f"fast vs tokenizers: {fast_s / hf_s:.2f}x its time (goal: within 5x); "
        f"fast vs naive: {naive_s / fast_s:,.0f}x faster (goal: at least 100x)"
    )
    if rows:
        print()
        print(f"Encoding with GPT-2's vocabulary, MB/s ({cores}-core CPU):")
        print()
        print("| | gptlib `to_tiktoken()` | `tokenizers` GPT-2 | ratio |")
        print("|---|---:|---:|---:|")
        for name, a, b in rows:
            print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
