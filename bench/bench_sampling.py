"""Decoding speed on CPU, side by side in one run (chapter 6, section 6.11).

Greedy decoding in tokens per second:
  * gptlib's `generate` without the KV cache and with it, and
  * gptlib's `generate` with the cache, the model as chapter 4 builds it and in
    `decode_layout` (section 6.11, what `gptlib sample` uses on CPU), against `transformers`'
    `generate` on the very same weights (converted with `gpt_to_hf`, chapter 4),
for two models with random weights (the speed does not depend on them): the story model's
shape (4 layers, 128 wide, vocabulary 1024) and GPT-2 124M's shape. Both get a context of
1088 positions so that a 64-token prompt plus 1024 new tokens never fills the window: this
measures the cache itself, not the refill of section 6.8. GPT-2's shape is too slow without
a cache on a CPU (minutes per run), so it is compared with `transformers` only.

    .venv/bin/python bench/bench_sampling.py               # about 5 minutes on 2 cores
    .venv/bin/python bench/bench_sampling.py --quick       # 64 and 128 tokens, a smoke run

Each figure is the best of `--repeats` runs, ours and theirs taking turns; on a shared
machine the figures are noisy. One thread by default: decoding one sequence is a chain of
small matrix-vector products, and on the 2-core machine the book was written on, splitting
them over two threads made both libraries several times slower.
"""

import argparse
import copy
import os
import platform
import time
from functools import partial

import torch

from gptlib.model import GPT, preset
from gptlib.pretrained import gpt_to_hf
from gptlib.sample import decode_layout
from gptlib.sampling import generate

PROMPT = 64
CONTEXT = 1088  # PROMPT + 1024 new tokens fit


def best_of(runs: dict, repeats: int) -> dict:
    """Seconds of the fastest of `repeats` runs of each function, the functions taking turns (so
    that a burst of load from other work on the machine hits them alike); and their outputs."""
    best, outputs = dict.fromkeys(runs, float("inf")), {}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outputs


def hf_generate(hf, idx: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        return hf.generate(
            input_ids=idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False,
            use_cache=True, pad_token_id=0,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--new", type=int, nargs="+", default=[256, 1024], help="new tokens per run"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1: fastest for both on a small, shared CPU",
    )
    parser.add_argument(
        "--quick", action="store_true", help="64 and 128 new tokens, one repeat"
    )
    args = parser.parse_args()
    if args.quick:
        args.new, args.repeats = [64, 128], 1
    torch.set_num_threads(args.threads)
    import transformers

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")  # fmt: skip
    models = {
        "story model's shape": (
            preset("nano", vocab_size=1024, n_embd=128, block_size=CONTEXT),
            True,
        ),
        "GPT-2 124M's shape": (preset("gpt2", block_size=CONTEXT), False),
    }
    rows = []
    for name, (config, with_no_cache) in models.items():
        torch.manual_seed(0)
        model = GPT(config).eval()
        name = f"{name} ({model.num_params() / 1e6:.1f}M)"
        hf = gpt_to_hf(model).eval()
        columns = decode_layout(copy.deepcopy(model))
        hf.generation_config.eos_token_id = None  # random weights: never stop early
        idx = torch.randint(
            0,
            config.vocab_size,
            (1, PROMPT),
            generator=torch.Generator().manual_seed(1),
        )
        generate(model, idx, 8, temperature=0), hf_generate(hf, idx, 8)  # warm up both
        for n in args.new:
            runs = {
                "ours": partial(generate, model, idx, n, temperature=0),
                "columns": partial(generate, columns, idx, n, temperature=0),
                "theirs": partial(hf_generate, hf, idx, n),
            }
            best, out = best_of(runs, args.repeats)
            no_cache = None
            if (
                with_no_cache
            ):  # one run: minutes at 1024 tokens, and far from the others anyway
                plain, plain_out = best_of(
                    {
                        "plain": partial(
                            generate, model, idx, n, temperature=0, use_cache=False
                        )
                    },
                    1,
                )
                assert torch.equal(plain_out["plain"], out["ours"]), (
                    "the cache changed the greedy tokens"
                )
                no_cache = n / plain["plain"]
            same = torch.equal(out["theirs"], out["ours"]) and torch.equal(
                out["columns"], out["ours"]
            )
            rows.append(
                (
                    name,
                    n,
                    no_cache,
                    n / best["ours"],
                    n / best["columns"],
                    n / best["theirs"],
                    same,
                )
            )
            print(f"  {name}, {n} tokens: done", flush=True)

    print()
    print("| model | new tokens | gptlib, no cache | gptlib, KV cache | gptlib, KV cache, decode layout | transformers generate | cache speed-up | gptlib / transformers | same tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, no_cache, ours, columns, theirs, same in rows:
        plain = f"{no_cache:,.0f} tok/s" if no_cache else "(minutes: not run)"
        speedup = f"{ours / no_cache:.1f}x" if no_cache else "-"
        ratio = f"{ours / theirs:.2f}x, {columns / theirs:.2f}x"
        print(f"| {name} | {n} | {plain} | {ours:,.0f} tok/s | {columns:,.0f} tok/s | {theirs:,.0f} tok/s | {speedup} | {ratio} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
