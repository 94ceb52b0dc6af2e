"""gptlib's GPT against transformers' GPT2LMHeadModel with the same weights, on CPU.

    python bench/bench_model.py [--presets nano micro tinystories-33m] [--threads N] [--repeats 7]

For each preset (batch and context below), both models get the same weights (`gpt_to_hf`)
and the same tokens, fp32. Two passes are timed:

* train step: forward, the same cross-entropy on the logits, backward;
* forward: no autograd, logits only.

The two models are measured alternately, step by step, so that a busy machine slows both
alike; the table gives the median wall time of each and their ratio (transformers / gptlib,
above 1 means gptlib is faster). Times on a shared machine are noisy: run it twice.
"""

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
import transformers

from gptlib.model import GPT, preset
from gptlib.pretrained import gpt_to_hf

SHAPES = {  # preset: (batch, context)
    "nano": (16, 128),
    "micro": (8, 256),
    "mini": (4, 512),
    "tinystories-33m": (2, 256),
    "gpt2": (1, 512),
}


def train_step(forward, params, idx, targets) -> None:
    logits = forward(idx)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    for p in params:
        p.grad = None


def measure(name: str, repeats: int) -> dict:
    torch.manual_seed(0)
    ours = GPT(preset(name))
    theirs = gpt_to_hf(ours)
    batch, context = SHAPES[name]
    idx = torch.randint(0, ours.config.vocab_size, (batch, context))
    targets = torch.randint(0, ours.config.vocab_size, (batch, context))
    models = {
        "gptlib": (lambda x: ours(x)[0], list(ours.parameters())),
        "transformers": (lambda x: theirs(x).logits, list(theirs.parameters())),
    }
    with torch.no_grad():
        assert torch.allclose(
            models["gptlib"][0](idx), models["transformers"][0](idx), atol=1e-4
        )
    times = {(who, what): [] for who in models for what in ("train", "forward")}
    for i in range(repeats + 1):  # the first round warms up
        for who, (forward, params) in models.items():
            t0 = time.perf_counter()
            train_step(forward, params, idx, targets)
            t1 = time.perf_counter()
            with torch.no_grad():
                forward(idx)
            t2 = time.perf_counter()
            if i:
                times[who, "train"].append(t1 - t0)
                times[who, "forward"].append(t2 - t1)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["nano", "micro", "tinystories-33m"],
        choices=list(SHAPES),
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; median of {args.repeats}, fp32\n"
    )
    print(
        "| preset (batch x context) | pass | gptlib ms | transformers ms | transformers / gptlib |"
    )
    print("|---|---|---:|---:|---:|")
    for name in args.presets:
        t = measure(name, args.repeats)
        batch, context = SHAPES[name]
        for what in ("train", "forward"):
            ours, theirs = t["gptlib", what] * 1e3, t["transformers", what] * 1e3
            label = "train step" if what == "train" else "forward"
            print(
                f"| {name} ({batch} x {context}) | {label} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f} |"
            )


if __name__ == "__main__":
    main()
