"""Figures quoted in a notebook's prose come from the notebook itself.

A number that a chapter or a solution states in its text with a decimal point, a
thousands separator or a percent sign (0.84, 233,873, 24%) must appear in an output of
the same notebook or in its code (a setting, or the bound of an assert), so that a
re-run cannot leave the text behind its results. Benchmark figures count as outputs: a
chapter shows the record of a benchmark run (bench/results/, written by bench/record.py)
in a cell. Figures that come from elsewhere (the literature, examples) are listed in
ELSEWHERE with where they come from. Section numbers, math, inline code, headings and
tables are not checked here.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted(
    (ROOT / "notebooks" / "solutions").glob("*.ipynb")
)

# figure -> where it comes from, per notebook
ELSEWHERE = {
    "00_data.ipynb": {"1,000,000": "an index in an example, not a result"},
    "01_tokenizer.ipynb": {
        "150,000": "the Unicode standard's count of assigned characters",
        "1,110": "10 + 100 + 1,000 numbers of one to three digits",
        "1,360": "the merges the embedded stories allow, printed by train_bpe's warning",
    },
    "03_transformer.ipynb": {"240,000": "about the 242,799 parameters printed"},
    "04_gpt.ipynb": {
        "1.5": "GPT-2 XL's 1.5 billion parameters (Radford et al., 2019)",
        "0.001": "a bound on the printed difference of the two GELUs",
        "50%": "an exercise's assumption",
    },
    "05_training.ipynb": {
        "160%": "the MFU the issue tracker reported before peaks were known only for GPUs",
    },
    "00_data_solutions.ipynb": {
        "1.5": "1.5 million, rounded from the printed 1,500,000"
    },
    "01_tokenizer_solutions.ipynb": {
        "100,000": "cl100k_base's vocabulary, by its name"
    },
    "03_transformer_solutions.ipynb": {
        "1,905": "an example of a number, not a result",
        "9,105": "an example of a number, not a result",
    },
    "04_gpt_solutions.ipynb": {"50%": "the exercise's assumption"},
}

FIGURE = re.compile(
    r"(?<![\w.$^{\\/-])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+(?:\.\d+)?%)(?![\w.]*\w)"
)
SECTIONS = re.compile(
    r"(?:sections?|chapters?)\s+(?:\d+\.\d+(?:\s*(?:,|and|or|to|-|–)\s*)?)+", re.I
)
NOT_PROSE = [
    re.compile(r"```.*?```", re.S),  # code blocks
    re.compile(r"\$\$.*?\$\$|\$[^$]*\$", re.S),  # math
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"^\s*\|.*$", re.M),  # tables
    re.compile(r"^#+ .*$", re.M),  # headings
    SECTIONS,
    re.compile(r"\(\d+\.\d+\)"),  # a section number in parentheses
]


def outputs_and_code(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for kind in ("text/plain", "text/html", "text/markdown"):
                parts.append("".join(out.get("data", {}).get(kind, "")))
    return "\n".join(parts)


def forms(figure: str):
    """How `figure` may be written in code or outputs: 2,000 as 2_000 or 2000; 95% as
    0.95."""
    yield figure
    if "," in figure:
        yield figure.replace(",", "_")
        yield figure.replace(",", "")
    if figure.endswith("%"):
        value = float(figure[:-1]) / 100
        yield f"{value:g}"


def prose_figures(nb: dict) -> list[str]:
    figures = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for pattern in NOT_PROSE:
            text = pattern.sub(" ", text)
        figures += [m.group(1) for m in FIGURE.finditer(text)]
    return figures


def unbacked(nb: dict, elsewhere: dict) -> list[str]:
    """The prose figures of `nb` found neither in its outputs and code nor in
    `elsewhere`."""
    found = outputs_and_code(nb)
    return [
        f
        for f in prose_figures(nb)
        if f not in elsewhere and not any(g in found for g in forms(f))
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_quoted_figures_come_from_the_notebook(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    missing = unbacked(nb, ELSEWHERE.get(path.name, {}))
    assert not missing, (
        f"{path.name}: the prose quotes {sorted(set(missing))}, which no output or code "
        "of the notebook shows: derive them in a cell (or assert them), or list them in "
        "ELSEWHERE with their source"
    )


@pytest.mark.parametrize("name", sorted(ELSEWHERE))
def test_every_listed_figure_is_still_quoted(name):
    """The list stays exact: a figure that left the prose leaves the list."""
    path = next(p for p in NOTEBOOKS if p.name == name)
    quoted = set(prose_figures(json.loads(path.read_text(encoding="utf-8"))))
    assert set(ELSEWHERE[name]) <= quoted, set(ELSEWHERE[name]) - quoted


def _notebook(prose: str, output: str) -> dict:
    return {
        "cells": [
            {"cell_type": "code", "source": ["x = 1"], "outputs": [{"text": output}]},
            {"cell_type": "markdown", "source": [prose]},
        ]
    }


def test_a_figure_that_disagrees_with_its_output_is_caught():
    nb = _notebook("The loss fell to 0.98 after 2,000 steps.", "loss 0.97\n")
    assert unbacked(nb, {}) == ["0.98", "2,000"]
    nb = _notebook("The loss fell to 0.97 (section 5.4) in $0.5$ `1.5`.", "loss 0.97\n")
    assert unbacked(nb, {}) == []
    assert unbacked(_notebook("above 95%", "assert acc > 0.95"), {}) == []
