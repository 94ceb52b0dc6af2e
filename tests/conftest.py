import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample files (../shared/data or $GPTLIB_SHARED_DATA); skip if absent."""
    from gptlib.data import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("sample data folder absent: set GPTLIB_SHARED_DATA or place the files in ../shared/data")
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
