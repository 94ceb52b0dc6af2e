"""Decoding speed on CPU, side by side in one run (chapter 6, section 6.11).

Greedy decoding in tokens per second:
  * gptlib's `generate` without the KV cache and with it, and
  * gptlib's `generate` with the cache against `transformers`' `generate` on the very same
    weights (converted with `GPT.to_hf`, chapter 4),
for two models with random weights (the speed does not depend on them): the story model's
shape (4 layers, 128 wide, vocabulary 1024) and GPT-2 124M's shape. Both get a context of
1088 positions so that a 64-token prompt plus 1024 new tokens never fills the window: this
measures the cache itself, not the refill of section 6.8. GPT-2's shape is too slow without
a cache on a CPU (minutes per run), so it is compared with `transformers` only.

    .venv/bin/python bench/bench_sampling.py               # about 5 minutes on 2 cores
    .venv/bin/python bench/bench_sampling.py --quick       # 64 and 128 tokens, a smoke run

Each figure is the best of `--repeats` runs, ours and theirs interleaved; on a shared
machine the figures are noisy.
"""

import argparse
import os
import platform
import time
from functools import partial

import torch

from gptlib.model import GPT, preset
from gptlib.sampling import generate

PROMPT = 64
CONTEXT = 1088  # PROMPT + 1024 new tokens fit


def tokens_per_second(run, n: int, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return n / best, out


def hf_generate(hf, idx: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        return hf.generate(
            input_ids=idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False,
            use_cache=True, pad_token_id=0,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new", type=int, nargs="+", default=[256, 1024], help="new tokens per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="64 and 128 new tokens, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.new, args.repeats = [64, 128], 1
    torch.set_num_threads(args.threads)
    import transformers

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")  # fmt: skip
    models = {
        "story model's shape": (preset("nano", vocab_size=1024, n_embd=128, block_size=CONTEXT), True),
        "GPT-2 124M's shape": (preset("gpt2", block_size=CONTEXT), False),
    }
    rows = []
    for name, (config, with_no_cache) in models.items():
        torch.manual_seed(0)
        model = GPT(config).eval()
        name = f"{name} ({model.num_params() / 1e6:.1f}M)"
        hf = model.to_hf().eval()
        hf.generation_config.eos_token_id = None  # random weights: never stop early
        idx = torch.randint(0, config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(1))
        generate(model, idx, 8, temperature=0), hf_generate(hf, idx, 8)  # warm up both
        for n in args.new:
            ours, ours_ids = tokens_per_second(
                partial(generate, model, idx, n, temperature=0), n, args.repeats
            )
            theirs, hf_ids = tokens_per_second(partial(hf_generate, hf, idx, n), n, args.repeats)
            no_cache = None
            if with_no_cache:
                no_cache, plain_ids = tokens_per_second(
                    partial(generate, model, idx, n, temperature=0, use_cache=False), n, 1
                )
                assert torch.equal(plain_ids, ours_ids), "the cache changed the greedy tokens"
            same = torch.equal(hf_ids, ours_ids)
            rows.append((name, n, no_cache, ours, theirs, same))
            print(f"  {name}, {n} tokens: done", flush=True)

    print()
    print("| model | new tokens | gptlib, no cache | gptlib, KV cache | transformers generate | cache speed-up | gptlib / transformers | same tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, n, no_cache, ours, theirs, same in rows:
        plain = f"{no_cache:,.0f} tok/s" if no_cache else "(minutes: not run)"
        speedup = f"{ours / no_cache:.1f}x" if no_cache else "-"
        print(f"| {name} | {n} | {plain} | {ours:,.0f} tok/s | {theirs:,.0f} tok/s | {speedup} | {ours / theirs:.2f}x | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
