"""The committed diagrams in book/figures are exactly what book/figures/make_diagrams.py draws.

The script is run into a temporary folder; every figure must come out, parse as SVG, and equal
the committed file byte for byte. After changing the script, `make diagrams` redraws them.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "book" / "figures"
SCRIPT = FIGURES / "make_diagrams.py"
NAMES = [
    "bpe_merge_loop.svg", "attention_dataflow.svg", "multihead_split_merge.svg", "transformer_block.svg",
    "encoder_decoder.svg", "gpt_end_to_end.svg", "kv_cache.svg", "training_step.svg",
]  # fmt: skip
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diagrams")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True
    )
    assert run.returncode == 0, f"make_diagrams.py failed:\n{run.stderr}"
    return out


def test_the_script_draws_every_diagram(drawn):
    assert sorted(p.name for p in drawn.iterdir()) == sorted(NAMES)


def test_no_stray_figures_are_committed():
    assert sorted(p.name for p in FIGURES.glob("*.svg")) == sorted(NAMES), (
        "an SVG in book/figures that the script does not draw"
    )


@pytest.mark.parametrize("name", NAMES)
def test_diagram_is_a_titled_svg_about_700_px_wide(drawn, name):
    root = ET.parse(drawn / name).getroot()
    assert root.tag == f"{SVG}svg"
    width_px = float(root.get("width").removesuffix("pt")) * 96 / 72
    assert 650 <= width_px <= 750, f"{name}: {width_px:.0f} px wide"
    assert root.find(f"{SVG}title").text, f"{name} has no title"
    assert root.find(f".//{SVG}text") is not None, (
        f"{name}: the labels are not stored as text"
    )


@pytest.mark.parametrize("name", NAMES)
def test_committed_diagram_is_what_the_script_draws(drawn, name):
    committed = FIGURES / name
    assert committed.is_file(), f"book/figures/{name} is missing: run `make diagrams`"
    assert committed.read_bytes() == (drawn / name).read_bytes(), (
        f"book/figures/{name} differs from what make_diagrams.py draws: run `make diagrams`"
    )
