"""Bytes per token of Llama 2's tokenizer and of GPT-2's on the same TinyStories text.

Chapter 8 converts llama2.c's published TinyStories losses (nats per Llama 2 token) to
bits per byte; this script measures the bytes per token that conversion divides by. It
needs llama2.c's `tokenizer.model` (Llama 2's 32,000-id SentencePiece model, in the
llama2.c repository) and `pip install sentencepiece`; neither is a gptlib dependency.

    python bench/bytes_per_token.py --llama2 path/to/tokenizer.model \
        [--text ../shared/data/tiny_stories_train_head.txt]

The text is TinyStories as in `tiny_stories_train_head.txt`: stories separated by a
single newline, paragraphs inside a story by a blank line. Each story is stripped and
encoded with one BOS token before it, as llama2.c's `tinystories.py pretokenize` does;
GPT-2's count has one `<|endoftext|>` per story, as `gptlib prepare` writes it.
"""

import argparse
import sys
from pathlib import Path

from gptlib.data import shared_data_dir, split_documents
from gptlib.gpt2_tokenizer import load_gpt2_tokenizer


def read_stories(path: Path) -> list[str]:
    """The stories of a TinyStories text file, stripped, in order (chapter 0's
    "newline" split: a line right after a non-blank line starts a new story)."""
    with open(path, encoding="utf-8") as f:
        return list(split_documents(f, "newline"))


def main(argv=None) -> int:
    shared = shared_data_dir()
    default = shared / "tiny_stories_train_head.txt" if shared else None
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--llama2", type=Path, required=True, help="llama2.c tokenizer.model"
    )
    p.add_argument(
        "--text",
        type=Path,
        default=default,
        help="TinyStories text",
        required=default is None,
    )
    a = p.parse_args(argv)
    try:
        import sentencepiece
    except ImportError:
        sys.exit("needs sentencepiece: pip install sentencepiece")
    for path in (a.llama2, a.text):
        if not path.is_file():
            sys.exit(f"no file at {path}")
    stories = read_stories(a.text)
    n_bytes = sum(len(s.encode("utf-8")) for s in stories)
    llama2 = sentencepiece.SentencePieceProcessor(model_file=str(a.llama2))
    gpt2 = load_gpt2_tokenizer()
    counts = {
        f"Llama 2 ({llama2.vocab_size():,} ids, a BOS per story)": sum(
            len(llama2.encode(s)) + 1 for s in stories
        ),
        f"GPT-2 ({gpt2.vocab_size:,} ids, an <|endoftext|> per story)": sum(
            len(gpt2.encode_ordinary(s)) + 1 for s in stories
        ),
    }
    print(f"{a.text.name}: {len(stories):,} stories, {n_bytes:,} UTF-8 bytes")
    for name, tokens in counts.items():
        print(f"{name:50} {tokens:9,} tokens  {n_bytes / tokens:.3f} bytes/token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
