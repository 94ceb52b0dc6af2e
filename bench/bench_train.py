"""Training throughput on CPU: gptlib's GPT against transformers' GPT2LMHeadModel.

    python bench/bench_train.py [--steps 5] [--repeats 5] [--threads N] [--layers 4 --dim 256 ...]

The same GPT-2-shaped model (our GPT, and the same weights converted with `gpt_to_hf`), the
same batch, the same loss (cross-entropy on the logits), and the same AdamW (`configure_optimizer`:
decay on matrices, fused where available), timed in alternation in one run so that both see
the same machine load. A third row times gptlib's full `Trainer.train_step` (sampler, scaler,
clipping, records) on random token shards of the same shape. Prints tokens per second.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptlib import prepare, shards
from gptlib.config import load_config
from gptlib.device import fused_adamw_available
from gptlib.model import GPT, GPTConfig
from gptlib.pretrained import gpt_to_hf
from gptlib.train import Trainer, configure_optimizer


def loop_step(model, opt, x, y, hf: bool) -> float:
    opt.zero_grad(set_to_none=True)
    logits = model(x).logits if hf else model(x)[0]
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def trainer_for(config: GPTConfig, batch: int, folder: Path) -> Trainer:
    """A Trainer of the same shape on random ids (the data preparation is skipped: it is not timed)."""
    data = folder / "data"
    overrides = [
        f"data.dir={data}",
        f"training.out_dir={folder / 'run'}",
        f"data.vocab_size={config.vocab_size}",
        f"model.n_layer={config.n_layer}",
        f"model.n_head={config.n_head}",
        f"model.n_embd={config.n_embd}",
        f"model.block_size={config.block_size}",
        f"model.vocab_size={config.vocab_size}",
        f"training.batch_size={batch}",
        *"training.progress=false training.warmup_steps=0 training.lr=1e-4".split(),
        *"training.min_lr=1e-5 training.max_steps=1000000 training.resume=false".split(),
    ]
    cfg = load_config(None, overrides)
    data.mkdir(parents=True)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, 200_000)
    for split in ("train", "val"):
        shards.write_shard(
            data / f"{split}_000000.bin",
            ids,
            tokenizer="random",
            vocab_size=config.vocab_size,
            n_bytes=800_000,
        )
    # marked prepared, as prepare_data would (the preparation is not what is timed)
    marker = {"settings": prepare._prepared_key(cfg.data), "splits": {}}
    (data / "prepared.json").write_text(json.dumps(marker))
    return Trainer(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument(
        "--repeats", type=int, default=5, help="rounds, alternating the models"
    )
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers

    config = GPTConfig(
        vocab_size=a.vocab,
        block_size=a.context,
        n_layer=a.layers,
        n_head=a.heads,
        n_embd=a.dim,
    )
    torch.manual_seed(0)
    ours = GPT(config).train()
    hf = gpt_to_hf(ours).train()
    with torch.no_grad():  # the same function: same logits before any step
        x = torch.randint(0, a.vocab, (2, 16))
        torch.testing.assert_close(ours(x)[0], hf(x).logits, rtol=1e-4, atol=1e-4)
    attn = getattr(hf.config, "_attn_implementation", "?")
    runs = {
        "gptlib GPT": (ours, configure_optimizer(ours, 1e-4), False),
        f"transformers GPT2LMHeadModel ({attn})": (
            hf,
            configure_optimizer(hf, 1e-4),
            True,
        ),
    }
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, a.vocab, (a.batch, a.context), generator=gen)
    y = torch.randint(0, a.vocab, (a.batch, a.context), generator=gen)
    tokens = a.batch * a.context * a.steps
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(config, a.batch, Path(tmp))
        timings: dict[str, list[float]] = {name: [] for name in runs}
        timings["gptlib Trainer.train_step"] = []
        for model, opt, is_hf in runs.values():  # warm-up
            loop_step(model, opt, x, y, is_hf)
        trainer.train_step()
        for _ in range(a.repeats):
            for name, (model, opt, is_hf) in runs.items():
                start = time.perf_counter()
                for _ in range(a.steps):
                    loop_step(model, opt, x, y, is_hf)
                timings[name].append(tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(a.steps):
                trainer.train_step()
            timings["gptlib Trainer.train_step"].append(
                tokens / (time.perf_counter() - start)
            )
        trainer.close()

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"model: {a.layers} layers, {a.heads} heads, {a.dim} dims, context {a.context}, "
        f"vocab {a.vocab} ({ours.num_params() / 1e6:.1f}M parameters); batch {a.batch}; "
        f"AdamW fused={fused_adamw_available('cpu')}"
    )
    base = statistics.median(timings[next(iter(runs))])
    print(
        f"{'':44s} {'tokens/s (median)':>18s} {'min':>8s} {'max':>8s} {'vs gptlib GPT':>14s}"
    )
    for name, values in timings.items():
        med = statistics.median(values)
        print(
            f"{name:44s} {med:18,.0f} {min(values):8,.0f} {max(values):8,.0f} {med / base:13.2f}x"
        )


if __name__ == "__main__":
    main()
