"""Training throughput and MFU of gptlib's GPT beside transformers' GPT2LMHeadModel, on
the current device (chapter 8.4).

    python bench/throughput.py                          # a CPU: the tiny `nano` preset
    python bench/throughput.py --presets gpt2 --batch 16 --dtype bfloat16 --compile   # a GPU

For each preset both models get the same weights (`gpt_to_hf`), the same random ids, the
same batch, context and precision, and a fused AdamW step; `measure_training_speed` times
whole steps after warm-up, waiting for the GPU at the end. The two are measured in turn,
`--rounds` times, and the table gives the best round of each: tokens per second, MFU (a
GPU with a datasheet peak in gptlib.device.GPU_PEAK_FLOPS; n/a elsewhere), and the ratio
gptlib / transformers (above 1: gptlib trains faster).
"""

import argparse
import platform

import torch

from gptlib.device import resolve_device, resolve_dtype
from gptlib.model import GPT, preset
from gptlib.pretrained import gpt_to_hf
from gptlib.scaling import describe_device, measure_training_speed

CPU_SHAPES = {"nano": (8, 128), "micro": (4, 256)}  # preset: (batch, context) on a CPU


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None)
    p.add_argument("--batch", type=int, default=None, help="sequences per step")
    p.add_argument("--context", type=int, default=None, help="default: the preset's")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype", default="auto", help="auto: bfloat16 on GPUs, float32 on CPU"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    dtype = resolve_dtype(a.dtype, device)
    on_gpu = device.type == "cuda"
    presets = a.presets or (["gpt2"] if on_gpu else ["nano"])
    print(describe_device(device).split(".")[0])
    print(
        f"torch {torch.__version__}, {platform.machine()}, {dtype}, compile={a.compile}"
    )
    header = f"{'preset':16} {'batch x context':>16} {'gptlib tok/s':>14} {'MFU':>6}"
    print(header + f" {'transformers tok/s':>19} {'MFU':>6} {'ratio':>6}")
    for name in presets:
        batch, context = CPU_SHAPES.get(name, (16, None)) if not on_gpu else (16, None)
        batch = a.batch or batch
        config = preset(name, vocab_size=(preset(name).vocab_size + 63) // 64 * 64)
        if a.context or context:
            config = preset(
                name, vocab_size=config.vocab_size, block_size=a.context or context
            )
        torch.manual_seed(0)
        ours = GPT(config)
        theirs = gpt_to_hf(ours)
        if a.compile:
            ours, theirs = torch.compile(ours), torch.compile(theirs)
        best = {"gptlib": None, "transformers": None}
        options = dict(
            batch_size=batch, device=device, dtype=dtype, steps=a.steps, warmup=a.warmup
        )
        for _ in range(a.rounds):
            for key, model in (("gptlib", ours), ("transformers", theirs)):
                speed = measure_training_speed(model, config, **options)
                if (
                    best[key] is None
                    or speed["tokens_per_s"] > best[key]["tokens_per_s"]
                ):
                    best[key] = speed
        mfu = {
            k: "n/a" if v["mfu"] is None else f"{v['mfu']:.1%}" for k, v in best.items()
        }
        ratio = best["gptlib"]["tokens_per_s"] / best["transformers"]["tokens_per_s"]
        shape = f"{batch} x {config.block_size}"
        print(
            f"{name:16} {shape:>16} {best['gptlib']['tokens_per_s']:14,.0f} "
            f"{mfu['gptlib']:>6} {best['transformers']['tokens_per_s']:19,.0f} "
            f"{mfu['transformers']:>6} {ratio:6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
