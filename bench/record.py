"""Run a benchmark and record what it prints, with the machine it ran on, for the book.

    python bench/record.py bench_model.py [its options ...]

Writes bench/results/bench_model.md: a line naming the command, the date, the CPU, the
Python and torch versions, then the benchmark's output as it printed it (markdown tables).
The chapters show these files as they are, so a figure in the text comes from a recorded
run, and re-recording a benchmark updates every page that shows it.
"""

import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def as_markdown(output: str) -> str:
    """A benchmark's output as markdown: its tables as they are, each other line kept on
    a line of its own (a hard break); an output with no table in a code block."""
    lines = output.strip().splitlines()
    if not any(line.startswith("|") for line in lines):
        return "```text\n" + "\n".join(lines) + "\n```"
    table = lambda line: line.startswith("|")
    return "\n".join(
        line
        if not line or table(line) or not (k + 1 < len(lines) and lines[k + 1])
        else line + "  "  # a hard line break inside a paragraph
        for k, line in enumerate(lines)
    )


def main(argv: list[str]) -> int:
    if not argv or not (HERE / argv[0]).is_file() or argv[0] == Path(__file__).name:
        names = sorted(p.name for p in HERE.glob("bench_*.py"))
        print(f"usage: record.py SCRIPT [options]; SCRIPT is one of {names}")
        return 2
    script, options = argv[0], argv[1:]
    command = ["python", f"bench/{script}", *options]
    run = subprocess.run(
        [sys.executable, str(HERE / script), *options],
        capture_output=True,
        text=True,
    )
    if run.returncode:
        print(run.stdout + run.stderr, file=sys.stderr)
        print(
            f"{script} failed (exit {run.returncode}): nothing recorded",
            file=sys.stderr,
        )
        return run.returncode
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    machine = f"{cpu_name()}, {cores or os.cpu_count()} cores"
    header = (
        f"Recorded {date.today().isoformat()} with `{' '.join(command)}` on {machine}, "
        f"Python {platform.python_version()}, torch {torch.__version__}:"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{Path(script).stem}.md"
    out.write_text(header + "\n\n" + as_markdown(run.stdout) + "\n", encoding="utf-8")
    print(f"{out.relative_to(HERE.parent)}:\n")
    print(out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
