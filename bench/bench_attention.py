"""Explicit attention (gptlib.attention.attention) against the fused kernel (SDPA), on CPU.

    python bench/bench_attention.py [--lengths 256 1024 2048] [--threads N]

One sequence of GPT-2 small's attention shape (12 heads of 64 dimensions), causal, fp32,
at each length T. Prints a markdown table with both paths side by side:

* time: median wall time of a forward pass (no autograd) and of a forward + backward pass;
* peak memory: each (path, T, pass) runs in a fresh process, which records its resident
  memory after creating the inputs and its peak resident memory (`ru_maxrss`) after one
  pass; the difference is the extra memory that pass needed at its peak. Large buffers
  come from mmap and go back to the system when freed, so a fresh process's peak is the
  pass's own. One (12, T, T) fp32 matrix, the size of the explicit path's weights, is
  shown for scale.

Times on a shared machine are noisy; run it twice and compare. The book's figures were
measured with --threads 1, as the notebooks run: with two threads on a busy 2-core machine
the threads wait for each other and the times become erratic.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from gptlib.attention import attention, causal_mask

HEADS, HEAD_DIM = 12, 64


def rss_mib() -> float:
    """Current resident memory of this process, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )  # Linux reports KiB


def one_pass(path: str, T: int, q, k, v, backward: bool) -> None:
    if path == "explicit":
        out = attention(q, k, v, causal_mask(T))
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if backward:
        out.sum().backward()
        for t in (q, k, v):
            t.grad = None


def child(path: str, T: int, backward: bool, threads: int) -> dict:
    """Measure one (path, T, pass) in this fresh process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with torch.set_grad_enabled(
        backward
    ):  # first calls initialise the kernels' libraries: not the pass's memory
        small = [
            torch.randn(1, HEADS, 16, HEAD_DIM, requires_grad=backward)
            for _ in range(3)
        ]
        one_pass(path, 16, *small, backward)
    q, k, v = (
        torch.randn(1, HEADS, T, HEAD_DIM, requires_grad=backward) for _ in range(3)
    )
    before, peak_before = rss_mib(), peak_rss_mib()
    with torch.set_grad_enabled(backward):
        one_pass(path, T, q, k, v, backward)
        peak = peak_rss_mib()
        for _ in range(2):  # warm up
            one_pass(path, T, q, k, v, backward)
        repeats = 10 if T <= 1024 else 5
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_pass(path, T, q, k, v, backward)
            times.append(time.perf_counter() - t0)
    return {
        "ms": 1000 * statistics.median(times),
        "peak_mib": peak - before,
        # if the pass never exceeded an earlier high-water mark, the delta is only an upper bound
        "exact": peak > peak_before,
    }


def run_child(path: str, T: int, backward: bool, threads: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        path,
        str(T),
        str(int(backward)),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--child", nargs=3, metavar=("PATH", "T", "BACKWARD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        path, T, backward = args.child
        print(json.dumps(child(path, int(T), bool(int(backward)), args.threads)))
        return

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    print(
        f"machine: {cpu} ({os.cpu_count()} cores), torch threads: {args.threads}, torch {torch.__version__}"
    )
    print(f"shape: batch 1, {HEADS} heads x {HEAD_DIM}, causal, fp32\n")
    print(
        "| T | forward ms: explicit | SDPA | speed-up | fwd+bwd ms: explicit | SDPA | speed-up "
        "| peak MiB fwd+bwd: explicit | SDPA | peak MiB fwd: explicit | SDPA | one (12,T,T) matrix MiB |"
    )
    print("|---:" * 12 + "|")
    for T in args.lengths:
        r = {
            (p, b): run_child(p, T, b, args.threads)
            for p in ("explicit", "sdpa")
            for b in (False, True)
        }

        def mem(p, b, r=r):
            m = r[(p, b)]
            return f"{m['peak_mib']:.0f}" if m["exact"] else f"<= {m['peak_mib']:.0f}"

        fe, fs = r[("explicit", False)]["ms"], r[("sdpa", False)]["ms"]
        te, ts = r[("explicit", True)]["ms"], r[("sdpa", True)]["ms"]
        matrix = HEADS * T * T * 4 / 2**20
        print(
            f"| {T} | {fe:.1f} | {fs:.1f} | {fe / fs:.1f}x | {te:.1f} | {ts:.1f} | {te / ts:.1f}x "
            f"| {mem('explicit', True)} | {mem('sdpa', True)} | {mem('explicit', False)} | {mem('sdpa', False)} "
            f"| {matrix:.0f} |"
        )


if __name__ == "__main__":
    main()
