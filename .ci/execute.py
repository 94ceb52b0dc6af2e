"""Run chapter notebooks top to bottom and store their outputs as nbval will compare them.

    python .ci/execute.py notebooks/02_attention.ipynb [...]   # or `make execute NB=...`

The kernel runs in the notebook's folder, as under nbval. Consecutive stream outputs are
merged and carriage returns resolved (nbval compares them that way, so a progress bar is
stored as its final line), and volatile cell metadata is dropped, so a re-run changes only
what really changed.
"""

import argparse
import json
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


def keep_shown_widgets(nb) -> None:
    """Keep in nb.metadata only the state of the widgets an output shows, and of the
    widgets those refer to ("IPY_MODEL_<id>"); none shown, no state at all."""
    view = "application/vnd.jupyter.widget-view+json"
    todo = [
        out["data"][view]["model_id"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if view in out.get("data", {})
    ]
    state_key = "application/vnd.jupyter.widget-state+json"
    saved = nb.metadata.get("widgets", {}).get(state_key, {})
    state, kept = saved.get("state", {}), {}
    while todo:
        model_id = todo.pop()
        if model_id in kept or model_id not in state:
            continue
        kept[model_id] = state[model_id]
        text = json.dumps(state[model_id])
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", text)
    if kept:
        saved["state"] = kept
    else:
        nb.metadata.pop("widgets", None)


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    keep_shown_widgets(
        nb
    )  # the site draws the widgets an output shows from their state
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
