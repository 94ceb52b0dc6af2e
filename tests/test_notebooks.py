"""The committed notebooks are what the site shows and nbval verifies: executed, in order, clean.

The chapters (notebooks/NN_*.ipynb) and the worked solutions to their exercises
(notebooks/solutions/*.ipynb) are held to the same rules; only chapters export a module and
open with a title and summary."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
EVERY = NOTEBOOKS + SOLUTIONS


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks found in notebooks/"


FOLD_OVER = 60  # lines: a library cell this long is folded on the site (book/intro.md)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_long_library_cells_are_folded_on_the_site(path):
    _, cells = code_cells(path)
    unfolded = [
        "".join(c["source"]).split("\n")[1][:60]
        for c in cells
        if "".join(c["source"]).startswith("#| export")
        and len("".join(c["source"]).split("\n")) > FOLD_OVER
        and "hide-input" not in c["metadata"].get("tags", [])
    ]
    assert not unfolded, f"{path.name}: tag these cells hide-input: {unfolded}"


def code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return nb, [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code" and "".join(c["source"]).strip()
    ]


@pytest.mark.parametrize("path", EVERY, ids=lambda p: p.name)
def test_notebook_is_executed_in_order_without_errors(path):
    nb, cells = code_cells(path)
    counts = [c.get("execution_count") for c in cells]
    unrun = [i for i, n in enumerate(counts) if n is None]
    assert not unrun, f"{path.name}: code cells {unrun} have never been run"
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts out of order: {counts}"
    )
    errors = [
        c["execution_count"]
        for c in cells
        for o in c["outputs"]
        if o["output_type"] == "error"
    ]
    assert not errors, f"{path.name}: cells {errors} hold an error output"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: p.name)
def test_notebook_metadata_is_clean(path):
    nb, cells = code_cells(path)
    view = "application/vnd.jupyter.widget-view+json"
    shown = {
        out["data"][view]["model_id"]
        for cell in cells
        for out in cell.get("outputs", [])
        if view in out.get("data", {})
    }
    # widget state only where widgets are shown: the site draws them from it
    allowed = {"kernelspec", "language_info"} | ({"widgets"} if shown else set())
    assert set(nb["metadata"]) <= allowed, f"{path.name}: {sorted(nb['metadata'])}"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    if shown:  # every widget the outputs show has its state stored (.ci/execute.py)
        widgets = nb["metadata"].get("widgets", {})
        state = widgets.get("application/vnd.jupyter.widget-state+json", {})
        missing = shown - set(state.get("state", {}))
        assert not missing, (
            f"{path.name}: no stored state for widgets {sorted(missing)}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_exports_a_module(path):
    _, cells = code_cells(path)
    sources = ["".join(c["source"]) for c in cells]
    assert any(s.startswith("#| default_exp") for s in sources), (
        f"{path.name} has no `#| default_exp` cell"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_a_title_and_summary(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# "), (
        f"{path.name}: the first cell must be the chapter title"
    )
    assert "\n> " in first, (
        f"{path.name}: the title cell needs a '> summary' line (the module docstring)"
    )


@pytest.mark.parametrize("path", EVERY, ids=lambda p: p.name)
def test_nbval_markers_are_cell_tags(path):
    """nbval's markers are cell tags, not comments a reader of the site would see."""
    _, cells = code_cells(path)
    comments = [
        c["execution_count"] for c in cells if "# NBVAL_" in "".join(c["source"])
    ]
    assert not comments, (
        f"{path.name}: cells {comments} use a '# NBVAL_' comment; use the cell tag instead"
    )
    tags = {
        t for c in cells for t in c["metadata"].get("tags", []) if t.startswith("nbval")
    }
    assert tags <= {"nbval-ignore-output", "nbval-skip"}, (
        f"{path.name}: unknown nbval tags {tags}"
    )


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_are_hidden_until_asked_for(path):
    """On the site a solution's code is folded (`hide-input`: outputs stay visible), and the
    chapter it solves links to it after its exercises."""
    _, cells = code_cells(path)
    tags = [c["metadata"].get("tags", []) for c in cells]
    shown = [c["execution_count"] for c, t in zip(cells, tags) if "hide-input" not in t]
    assert not shown, f"{path.name}: code cells {shown} lack the `hide-input` tag"
    chapter = ROOT / "notebooks" / path.name.replace("_solutions", "")
    assert chapter.is_file(), f"{path.name} solves no chapter: no {chapter.name}"
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    text = "".join("".join(c["source"]) for c in nb["cells"])
    link = f"(solutions/{path.name})"
    assert link in text, f"{chapter.name} does not link to solutions/{path.name}"
