"""Run chapter notebooks top to bottom and store their outputs as nbval will compare them.

    python .ci/execute.py notebooks/02_attention.ipynb [...]   # or `make execute NB=...`

The kernel runs in the notebook's folder, as under nbval. Consecutive stream outputs are
merged and carriage returns resolved (nbval compares them that way, so a progress bar is
stored as its final line), and volatile cell metadata is dropped, so a re-run changes only
what really changed.
"""

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def merge_streams(outputs: list) -> list:
    """Consecutive-or-not stream outputs of one name merged into the first, as nbval does."""
    merged, streams = [], {}
    for out in outputs:
        if out.output_type != "stream":
            merged.append(out)
        elif out.name in streams:
            streams[out.name].text += out.text
        else:
            streams[out.name] = out
            merged.append(out)
    for out in streams.values():  # a line rewritten by "\r" keeps only its last version
        out.text = CARRIAGE_RETURN.sub("", out.text)
    return merged


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    # the widgets' state stays in nb.metadata: the site draws chapter 7's controls from it
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    for path in args.notebooks:
        print(f"{path}: executed in {execute(path, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
