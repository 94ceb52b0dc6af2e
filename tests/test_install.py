"""gptlib as a user installs it: a wheel in a fresh virtual environment, used from an
empty folder, writing only into that folder and into $GPTLIB_HOME."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def files_under(folder: Path) -> set[str]:
    return (
        {str(p.relative_to(folder)) for p in folder.rglob("*")}
        if folder.exists()
        else set()
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the gptlib wheel built from this checkout; the
    packages it needs (the pinned torch among them) come from the test's environment."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # build from a copy: a build writes into its source folder
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(
        ROOT / "gptlib", source / "gptlib", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp / "wheels"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
    ]
    subprocess.run([*build, "-w", wheels, source], check=True, capture_output=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the dependencies, without downloading them again: this environment's packages
    (Path(site) / "_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    wheel = next(wheels.glob("gptlib-*.whl"))
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel]
    subprocess.run(install, check=True, capture_output=True)
    return venv


def test_installed_gptlib_works_from_any_folder_and_writes_only_where_told(
    installed, tmp_path
):
    work, home, user = tmp_path / "work", tmp_path / "home", tmp_path / "user"
    for folder in (work, home, user):
        folder.mkdir()
    (work / "stories.txt").write_text(
        "Lily had a red ball. She loved it very much.\n"
        "Tom found a kite in the park. He flew it with his dad.\n"
    )
    env = {
        "PATH": f"{installed / 'bin'}:/usr/bin:/bin",
        "HOME": str(user),  # the per-user folders (platformdirs, caches) live in here
        "GPTLIB_HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",  # so the installed package's folder stays as installed
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    before_venv, before_repo = files_under(installed), git_status()

    def gptlib(*args, ok=True):
        run = subprocess.run(
            ["gptlib", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert (run.returncode == 0) == ok, (
            f"gptlib {' '.join(args)}: {run.stderr[-2000:]}"
        )
        return run

    missing = gptlib("sample", "--max-new-tokens", "5", ok=False).stderr
    assert "gptlib train story" in missing and str(home) in missing, missing
    assert "story" in gptlib("configs").stdout
    assert "n_layer" in gptlib("configs", "show", "story").stdout
    assert gptlib("--version").stdout.startswith("gptlib ")
    module = subprocess.run(
        [installed / "bin" / "python", "-m", "gptlib", "--help"], cwd=work, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert module.stdout == gptlib("--help").stdout

    trained = gptlib(
        "train", "story", "training.max_steps=20", "training.eval_interval=0"
    )
    assert str(home / "checkpoints" / "story-gpt") in trained.stdout
    assert gptlib("sample", "--max-new-tokens", "20", "--seed", "1").stdout.strip()
    scored = gptlib(
        "eval", str(home / "checkpoints" / "story-gpt"), "--text", "stories.txt"
    )
    assert "perplexity" in scored.stdout
    assert "Generating" not in scored.stderr  # no bars from the libraries underneath

    assert files_under(installed) == before_venv, (
        "gptlib wrote into its virtual environment"
    )
    assert git_status() == before_repo, "gptlib wrote into the repository"
    written_to_user = sorted(files_under(user))
    assert not written_to_user, (
        f"gptlib wrote into the user's home: {written_to_user[:5]}"
    )
    assert (home / "checkpoints" / "story-gpt" / "model.safetensors").is_file()


def git_status() -> str:
    if not (ROOT / ".git").exists():
        return ""
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    ).stdout  # fmt: skip
