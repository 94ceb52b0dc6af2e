"""gptlib's modules form layers that import only downwards, in chapter order.

A module may import only modules that come before it in LAYERS (imports inside functions
count too), so that reading the library bottom-up never needs a later chapter, and so
that loading a model for sampling never imports the trainer.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gptlib"

# bottom to top; each module exported by the chapter named beside it
LAYERS = [
    ("common", "00"),
    ("stories", "00"),
    ("data", "00"),
    ("bpe", "01"),
    ("tokenizer", "01"),
    ("gpt2_tokenizer", "01"),
    ("attention", "02"),
    ("transformer", "03"),
    ("seq2seq", "03"),
    ("model", "04"),
    ("pretrained", "04"),
    ("device", "05"),
    ("parallel", "05"),
    ("shards", "05"),
    ("prepare", "05"),
    ("batches", "05"),
    ("config", "05"),
    ("checkpoint", "05"),
    ("records", "05"),
    ("optim", "05"),
    ("train", "05"),
    ("evaluate", "05"),
    ("story", "05"),
    ("commands", "05"),
    ("logits", "06"),
    ("sampling", "06"),
    ("beam", "06"),
    ("sample", "06"),
    ("playground", "07"),
    ("__main__", "07"),
    ("scaling", "08"),
]
ORDER = {name: i for i, (name, _) in enumerate(LAYERS)}
# what samples or plays never imports what trains
NEVER = {
    name: {"train", "commands"}
    for name in ("logits", "sampling", "beam", "sample", "playground")
}
MAX_LINES = 450
DATA_TABLES = {"stories"}  # story templates and word lists: long by nature


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def gptlib_imports(path: Path) -> set[str]:
    """The gptlib modules that `path` imports anywhere in its code (top level or in functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif node.module == "gptlib":
                found |= {a.name for a in node.names}
            elif node.module and node.module.startswith("gptlib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("gptlib.")
            }
    return found - {path.stem}


def test_every_module_has_a_layer():
    unknown = [p.stem for p in modules() if p.stem not in ORDER]
    assert not unknown, (
        f"add {unknown} to LAYERS in {Path(__file__).name}, in its place"
    )


def test_layers_follow_the_chapters():
    chapters = [chapter for _, chapter in LAYERS]
    assert chapters == sorted(chapters), "LAYERS must list the chapters in order"
    for path in modules():
        header = path.read_text(encoding="utf-8").split("\n", 4)[:4]
        origin = re.search(r"File to edit: \.\./notebooks/(\d\d)_", "\n".join(header))
        assert origin, f"{path.name} does not say which notebook to edit"
        assert origin.group(1) == dict(LAYERS)[path.stem], (
            f"{path.name} comes from chapter {origin.group(1)}"
        )


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_imports_point_down(path):
    if path.stem not in ORDER:
        pytest.skip("not in LAYERS (test_every_module_has_a_layer fails)")
    upward = sorted(
        m for m in gptlib_imports(path) if ORDER.get(m, -1) >= ORDER[path.stem]
    )
    assert not upward, f"gptlib/{path.name} imports {upward}, which sit above it"
    banned = sorted(gptlib_imports(path) & NEVER.get(path.stem, set()))
    assert not banned, f"gptlib/{path.name} samples or plays, yet imports {banned}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_modules_are_short_and_formatted_without_skips(path):
    text = path.read_text(encoding="utf-8")
    assert "fmt: skip" not in text and "fmt: off" not in text, (
        f"{path.name} opts out of formatting"
    )
    lines = text.count("\n")
    if path.stem not in DATA_TABLES:
        assert lines <= MAX_LINES, (
            f"{path.name} has {lines} lines: split it (one concern per module)"
        )


def test_the_checker_sees_upward_imports(tmp_path):
    """The parser finds imports at module level, in functions, relative and absolute."""
    bad = tmp_path / "model.py"
    bad.write_text(
        "from .sampling import generate\n"
        "def f():\n    from gptlib.train import Trainer\n    import gptlib.playground\n"
    )
    assert gptlib_imports(bad) == {"sampling", "train", "playground"}
