"""How fast `gptlib prepare` tokenizes: GPT-2's tokenizer (tiktoken) in gptlib's worker
pool, writing shards, beside Hugging Face's `tokenizers` GPT-2 encoding the same documents
on the same cores in the same run (chapter 8.2).

    python bench/bench_prepare.py [--workers 2] [--copies 4] [--rounds 3]

The documents are the non-empty lines (paragraphs) of ../shared/data/tiny_stories_train_head.txt
(the start of TinyStories' train split), `--copies` times over; GPT-2's files come from the same
folder (gpt2.tiktoken for tiktoken, encoder.json and vocab.bpe for `tokenizers`). It exits
with a message where they are absent. Each round times both; the best round of each is
reported in MB of UTF-8 text per second, with the ratio gptlib / tokenizers (above 1:
gptlib's prepare is faster, although it also writes the shards).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gptlib.data import shared_data_dir
from gptlib.gpt2_tokenizer import load_gpt2_tokenizer
from gptlib.prepare import tokenize_to_shards


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    shared = shared_data_dir()
    needed = (
        "tiny_stories_train_head.txt",
        "encoder.json",
        "vocab.bpe",
        "gpt2.tiktoken",
    )
    if shared is None or not all((shared / n).is_file() for n in needed):
        print(f"needs {', '.join(needed)} in ../shared/data (or $GPTLIB_SHARED_DATA)")
        return 1
    os.environ["RAYON_NUM_THREADS"] = str(
        a.workers
    )  # tokenizers' threads: the same cores
    from tokenizers import ByteLevelBPETokenizer

    lines = (shared / "tiny_stories_train_head.txt").read_text().splitlines()
    docs = [line for line in lines if line.strip()] * a.copies
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    ours = load_gpt2_tokenizer(shared)
    theirs = ByteLevelBPETokenizer(
        str(shared / "encoder.json"), str(shared / "vocab.bpe")
    )
    theirs_ids = [e.ids for e in theirs.encode_batch(docs[:50])]
    assert theirs_ids == [ours.encode(d) for d in docs[:50]], "the two GPT-2s disagree"
    print(
        f"{len(docs):,} documents, {mb:.1f} MB, {a.workers} workers, os.cpu_count()="
        f"{os.cpu_count()}"
    )
    best = {"gptlib prepare": 0.0, "tokenizers": 0.0}
    for _ in range(a.rounds):
        out = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        tokenize_to_shards(docs, ours, out, num_workers=a.workers, progress=False)
        best["gptlib prepare"] = max(
            best["gptlib prepare"], mb / (time.perf_counter() - start)
        )
        shutil.rmtree(out)
        start = time.perf_counter()
        theirs.encode_batch(docs)
        best["tokenizers"] = max(best["tokenizers"], mb / (time.perf_counter() - start))
    for name, rate in best.items():
        print(f"{name:16} {rate:6.1f} MB/s")
    print(
        f"ratio gptlib / tokenizers: {best['gptlib prepare'] / best['tokenizers']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
