"""Chapter 5 with real processes: a run killed by SIGKILL resumes exactly, a kill while a
checkpoint is written leaves a loadable one, 2 processes under torchrun (gloo) equal 1
process with gradient accumulation, and the commands of gptlib.commands in fresh processes
(and once through chapter 7's `gptlib` program)."""

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_run

from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.config import load_config
from gptlib.prepare import prepare_data
from gptlib.records import read_metrics
from gptlib.shards import load_split
from gptlib.train import Trainer

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="needs POSIX signals and fork"
)
# runs that compare bits: the same threads
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# `python -c COMMAND NAME ARGS...` runs gptlib.commands' NAME_command(ARGS)
COMMAND = (
    "import sys; from gptlib import commands; "
    "sys.exit(getattr(commands, sys.argv[1] + '_command')(sys.argv[2:]))"
)


def tiny(data_dir, out_dir, *extra: str) -> list[str]:
    return tiny_run(
        data_dir,
        out_dir,
        "model.n_layer=2",
        "model.dropout=0.1",
        "training.warmup_steps=3",
        "training.decay_steps=24",
        "training.eval_interval=4",
        *extra,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepare_data(load_config(None, tiny(d, d)).data, progress=False)
    return d


def gptlib(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """The command `gptlib ARGS` (prepare, train or eval) in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        **kw,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def losses(out_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out_dir) if "loss" in r}


def test_sigkill_then_resume_is_bitwise_identical(data_dir, tmp_path):
    N = 12
    config = tmp_path / "run.yaml"
    config.write_text("model: {preset: nano}\n")  # the rest comes as overrides
    whole, halves = tmp_path / "whole", tmp_path / "halves"

    # a run with checkpoints every N steps and no end in sight, killed once a checkpoint is saved
    # (the schedule's length is fixed by training.decay_steps, not by max_steps)
    args = tiny(
        data_dir, halves, "training.max_steps=100000", f"training.ckpt_interval={N}"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", COMMAND, "train", str(config), *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    metrics = halves / "metrics.jsonl"
    while child.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and '"event": "checkpoint"' in metrics.read_text():
            break
        time.sleep(0.002)
    assert child.poll() is None, child.stderr.read().decode()
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    child.stderr.close()
    # N, or a later multiple on a slow machine
    saved = load_checkpoint(halves / "ckpt.pt")["step"]
    assert saved >= N and saved % N == 0
    end = saved + N

    # resumed by the same command, to `end`; and the same run without interruption
    gptlib(
        "train",
        config,
        *tiny(
            data_dir, halves, f"training.max_steps={end}", f"training.ckpt_interval={N}"
        ),
    )
    gptlib(
        "train",
        config,
        *tiny(
            data_dir, whole, f"training.max_steps={end}", f"training.ckpt_interval={N}"
        ),
    )
    expected = losses(whole)
    assert sorted(expected) == list(range(1, end + 1))
    assert losses(halves) == expected  # the same float at every step
    a, b = load_checkpoint(whole / "ckpt.pt"), load_checkpoint(halves / "ckpt.pt")
    assert a["step"] == b["step"] == end
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name  # bitwise
    for name, tensor in a["optimizer"]["state"].items():
        assert all(
            torch.equal(v, b["optimizer"]["state"][name][k]) for k, v in tensor.items()
        )
    assert [r["val_loss"] for r in read_metrics(whole) if "val_loss" in r] == [
        r["val_loss"] for r in read_metrics(halves) if "val_loss" in r
    ]


WRITER = """
import sys, torch
from gptlib.checkpoint import save_checkpoint
path = sys.argv[1]
for step in range(1, 10**9):
    save_checkpoint(path, {"step": step, "w": torch.full((4_000_000,), float(step))})
    print(step, flush=True)
"""


def test_kill_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    rng = random.Random(0)
    left_behind = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            env=ENV,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip()  # one checkpoint is complete
        time.sleep(
            rng.uniform(0.0, 0.1)
        )  # then kill it at some moment of a later write
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        left_behind += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        state = load_checkpoint(path)  # always complete: the old one or the new one
        assert state["step"] >= 1 and bool((state["w"] == float(state["step"])).all())
    assert left_behind > 0, "no kill landed inside a write; the test proved nothing"
    save_checkpoint(path, {"step": 0})  # the next writer removes what a killed one left
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def two_processes_and_one(script, data_dir, tmp_path, extra, *two_only) -> None:
    """Run `script` with the tiny run's overrides `extra`: under torchrun with 2 gloo
    processes into tmp_path/two (with `two_only` too), then as 1 process into
    tmp_path/one."""
    torchrun = Path(sys.executable).parent / "torchrun"
    runs = {
        "two": [str(torchrun), "--standalone", "--nproc_per_node=2", str(script)],
        "one": [sys.executable, str(script)],
    }
    for name, command in runs.items():
        more = two_only if name == "two" else ()
        args = tiny(data_dir, tmp_path / name, *extra, *more)
        run = subprocess.run([*command, *args], env=ENV, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]


DDP_STEP = """
import sys, torch
from gptlib.config import load_config
from gptlib.train import Trainer
trainer = Trainer(load_config(None, sys.argv[1:]))
m = trainer.train_step()
if trainer.dist.is_main:
    grads = {n: p.grad for n, p in trainer.raw_model.named_parameters()}
    torch.save({"loss": m["loss"], "grads": grads, "world": trainer.dist.world_size,
                "weights": trainer.raw_model.state_dict()}, trainer.out_dir / "step.pt")
trainer.close()
"""


def test_ddp_two_processes_equal_one_with_accumulation(data_dir, tmp_path):
    script = tmp_path / "step.py"
    script.write_text(DDP_STEP)
    extra = ("model.dropout=0.0", "training.grad_accum=2", "training.max_steps=1")
    two_processes_and_one(script, data_dir, tmp_path, extra)
    a, b = (
        torch.load(tmp_path / "two" / "step.pt"),
        torch.load(tmp_path / "one" / "step.pt"),
    )
    assert (a["world"], b["world"]) == (2, 1)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-6)
    assert a["grads"].keys() == b["grads"].keys()
    for name in a["grads"]:
        torch.testing.assert_close(
            a["grads"][name], b["grads"][name], rtol=1e-5, atol=1e-6, msg=name
        )
    for name in a["weights"]:
        torch.testing.assert_close(
            a["weights"][name], b["weights"][name], rtol=1e-5, atol=1e-6, msg=name
        )


def test_command_line_prepare_train_eval(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(f"""
        model: {{preset: nano, n_layer: 1, n_embd: 32, n_head: 2, block_size: 32}}
        training: {{out_dir: {tmp_path / "run"}, max_steps: 4, batch_size: 4, warmup_steps: 1,
                    eval_interval: 2, eval_batches: 2, progress: false}}
        data: {{dir: {tmp_path / "data"}, documents: 200, val_documents: 20, vocab_size: 280,
                bpe_documents: 100, num_workers: 2}}
        """)
    )
    prepared = gptlib("prepare", config)
    assert (
        "prepared stories" in prepared.stdout
        and len(load_split(tmp_path / "data", "train")) == 1
    )
    # train in a fresh process, which also shows that the optional loggers stay unimported
    probe = (
        "import sys; from gptlib.commands import train_command; "
        "train_command(sys.argv[1:]); optional = {'wandb', 'tensorboard', "
        "'torch.utils.tensorboard'}; print(sorted(optional & set(sys.modules)))"
    )
    trained = subprocess.run(
        [sys.executable, "-c", probe, str(config), "training.max_steps=3"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    assert trained.stdout.startswith(
        "step 3: val_loss "
    ) and trained.stdout.strip().endswith("[]")
    first = next(r for r in read_metrics(tmp_path / "run") if "loss" in r)
    assert first["step"] == 3 and first["tokens"] == 3 * 4 * 32
    evaluated = gptlib("eval", tmp_path / "run", "--data", tmp_path / "data")
    assert evaluated.stdout.startswith("loss ") and "bits/byte" in evaluated.stdout
    # chapter 7's `gptlib` program (`python -m gptlib`) hands the same line to train_command
    bad = subprocess.run(
        [sys.executable, "-m", "gptlib", "train", str(config), "training.lrr=1"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.strip().startswith(
        f"gptlib train: error: {config}: unknown key 'training.lrr'"
    )
    assert len(bad.stderr.strip().splitlines()) == 1


FSDP_RUN = """
import sys, torch
from gptlib.config import load_config
from gptlib.parallel import whole_state
from gptlib.train import Trainer
trainer = Trainer(load_config(None, sys.argv[1:]))
losses = [trainer.train_step()["loss"] for _ in range(3)]
trainer.save()  # every rank: FSDP gathers the pieces
model, _ = whole_state(trainer.raw_model, trainer.optimizer)
if trainer.dist.is_main:
    torch.save({"losses": losses, "world": trainer.dist.world_size, "weights": model},
               trainer.out_dir / "run.pt")
trainer.close()
"""


def test_fsdp_two_processes_equal_one_with_accumulation(data_dir, tmp_path):
    """FSDP2 on 2 CPU processes (gloo) trains as 1 process with grad_accum 2: the same
    losses over three steps and the same weights; its checkpoint, gathered whole,
    resumes in a single process."""
    script = tmp_path / "run.py"
    script.write_text(FSDP_RUN)
    extra = ("model.dropout=0.0", "training.grad_accum=2", "training.max_steps=6")
    two_processes_and_one(script, data_dir, tmp_path, extra, "training.parallel=fsdp")
    a, b = (torch.load(tmp_path / d / "run.pt") for d in ("two", "one"))
    assert (a["world"], b["world"]) == (2, 1)
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert a["weights"].keys() == b["weights"].keys()
    for name in a["weights"]:
        torch.testing.assert_close(a["weights"][name], b["weights"][name], msg=name)
    # the sharded run's checkpoint: whole tensors, resumed by one process at step 3
    state = load_checkpoint(tmp_path / "two" / "ckpt.pt")
    assert state["world_size"] == 2 and state["step"] == 3
    trainer = Trainer(load_config(None, tiny(data_dir, tmp_path / "two", *extra)))
    try:
        assert trainer.step == 3
        whole = trainer.raw_model.state_dict()
        for name, value in a["weights"].items():
            torch.testing.assert_close(whole[name], value, msg=name)
        assert math.isfinite(
            trainer.train_step()["loss"]
        )  # and its optimiser state too
        assert trainer.optimizer.state  # AdamW's moments came back
    finally:
        trainer.close()
