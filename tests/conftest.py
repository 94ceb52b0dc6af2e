import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tiny_run(data_dir, out_dir, *extra: str) -> list[str]:
    """Training overrides for a GPT of ~30k parameters that trains a step in milliseconds;
    `extra` items come last, so they win (tests/test_train*.py)."""
    fixed = (
        "data.documents=400 data.val_documents=40 data.vocab_size=300 "
        "data.bpe_documents=200 data.num_workers=1 model.preset=nano model.n_embd=32 "
        "model.n_head=2 model.block_size=32 training.batch_size=4 training.lr=3e-3 "
        "training.min_lr=3e-4 training.eval_batches=2 training.log_interval=1 "
        "training.progress=false"
    ).split()
    return [f"data.dir={data_dir}", f"training.out_dir={out_dir}", *fixed, *extra]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample files (../shared/data or $GPTLIB_SHARED_DATA); skip if absent."""
    from gptlib.data import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "sample data folder absent: set GPTLIB_SHARED_DATA or place the files in ../shared/data"
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One PyTorch thread per test process: the models here are tiny, and `make test` runs two
    processes on two cores, so a second thread per process would only contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """Tests never reach the network; a hub call they forget to stub fails at once."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
