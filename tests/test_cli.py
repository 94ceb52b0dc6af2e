"""The `gptlib` command (chapter 7, gptlib/__main__.py): it reads the command's name and
hands the rest to the command of chapter 5 or 6; `python -m gptlib` and the installed
`gptlib` script run the same `main`."""

import subprocess
import sys
from pathlib import Path

import pytest

from gptlib.__main__ import COMMANDS, USAGE, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0 and main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gptlib COMMAND")
    for name in ("prepare", "train", "eval", "sample"):
        assert f"  gptlib {name} " in out
    assert main([]) == 2 and capsys.readouterr().out == USAGE + "\n"  # no command


def test_an_unknown_command_is_one_line_and_status_2(capsys):
    assert main(["fly", "--high"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "gptlib: unknown command 'fly': use one of prepare, train, eval, sample, "
        "configs (gptlib --help)\n"
    )
    assert main(["x" * 500]) == 2 and len(capsys.readouterr().err) < 200  # bounded


@pytest.mark.parametrize("name", ["prepare", "train", "eval", "sample"])
def test_each_command_gets_the_rest_of_the_line(monkeypatch, name):
    import importlib

    module, function, _ = COMMANDS[name]
    calls = []
    fake = lambda argv: calls.append(argv) or 7  # noqa: E731
    monkeypatch.setattr(importlib.import_module(module), function, fake)
    assert main([name, "--flag", "a=b"]) == 7 and calls == [["--flag", "a=b"]]


def test_an_error_that_escapes_a_command_is_one_line(monkeypatch, capsys):
    import gptlib.sample

    def broken(argv):
        raise OSError("disk full\nmore detail")

    monkeypatch.setattr(gptlib.sample, "sample_command", broken)
    assert main(["sample"]) == 1
    assert capsys.readouterr().err == "gptlib sample: error: disk full\n"


def test_gptlib_sample_does_not_load_the_trainer():
    probe = (
        "import sys; from gptlib.__main__ import main; main(['sample', '--help']); "
        "print(sorted(m for m in ('gptlib.train', 'gptlib.commands') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: gptlib sample") and out.stdout.endswith("[]\n")


def script() -> Path:
    return Path(sys.executable).parent / "gptlib"


@pytest.mark.parametrize(
    "command", [[sys.executable, "-m", "gptlib"], [str(script())]], ids=["-m", "script"]
)
def test_python_m_gptlib_and_the_installed_script(command):
    if not Path(command[0]).is_file():
        pytest.skip("the gptlib script is not installed (pip install -e .)")
    ok = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and ok.stdout.startswith("usage: gptlib COMMAND")
    bad = subprocess.run([*command, "fly"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith(
        "gptlib: unknown command 'fly'"
    )
