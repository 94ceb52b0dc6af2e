"""Export gptlib from the chapter notebooks with nbdev, or check that gptlib is in sync.

    python .ci/export.py          # regenerate gptlib/ from notebooks/NN_*.ipynb
    python .ci/export.py --check  # exit 1, naming the notebook, if gptlib/ differs

Every notebook is exported into a fresh copy of the layout (notebooks/ beside gptlib/),
so the generated headers ("File to edit: ../notebooks/...") are the same as in the repo
and a module exported twice is caught instead of silently appended to.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from nbdev.export import nb_export
from nbdev.maker import ModuleMaker

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gptlib"
HAND_WRITTEN = {"__init__.py"}  # the only module not generated from a notebook


def chapter_notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def module_maker(dest, name, nb_path, is_new=True, **kwargs) -> ModuleMaker:
    """nbdev appends `#| export NAME` cells to an existing NAME.py; each notebook is exported into
    an empty package here, so a second module of one notebook (e.g. __main__) is created instead."""
    exists = (Path(dest) / (name.replace(".", "/") + ".py")).exists()
    return ModuleMaker(dest, name, nb_path, is_new=is_new or not exists, **kwargs)


def formatted(text: str, name: str) -> str:
    """`text` as ruff formats gptlib/`name` (the project's settings), so the generated modules
    read as well as hand-written ones and `ruff format --check` passes on them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--stdin-filename",
            f"{PACKAGE}/{name}",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode:
        sys.exit(
            f"ruff cannot format the exported {PACKAGE}/{name}: {result.stderr.strip()}"
        )
    return result.stdout


def export_to(root: Path, work: Path) -> dict[str, str]:
    """Export every chapter of `root` into `work/gptlib`; return {module file: notebook}."""
    origin: dict[str, str] = {}
    for nb in chapter_notebooks(root):
        # each notebook in a copy of the layout, so headers read "../notebooks/NN_name.ipynb"
        lib = work / f"lib_{nb.stem}" / PACKAGE
        lib.mkdir(parents=True)
        (lib.parent / "notebooks").mkdir()
        copy = lib.parent / "notebooks" / nb.name
        shutil.copy(nb, copy)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. `#| export` without `#| default_exp`
            nb_export(str(copy), lib_path=str(lib), mod_maker=module_maker)
        for module in sorted(lib.glob("*.py")):
            if module.name in origin or module.name in HAND_WRITTEN:
                first = origin.get(module.name, "the hand-written package")
                sys.exit(
                    f"{PACKAGE}/{module.name} is exported by both {first} and notebooks/{nb.name}"
                )
            origin[module.name] = f"notebooks/{nb.name}"
            shutil.move(str(module), work / module.name)
    return origin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare, change nothing"
    )
    args = parser.parse_args()
    package = ROOT / PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        origin = export_to(ROOT, work)
        problems = []
        for name, nb in origin.items():
            target = package / name
            fresh = formatted((work / name).read_text(encoding="utf-8"), name)
            if not target.exists() or target.read_text(encoding="utf-8") != fresh:
                if args.check:
                    state = "is missing" if not target.exists() else "differs from"
                    problems.append(f"{PACKAGE}/{name} {state} what {nb} exports")
                else:
                    target.write_text(fresh, encoding="utf-8")
                    print(f"exported {nb} -> {PACKAGE}/{name}")
        for stale in sorted(package.glob("*.py")):
            if stale.name not in origin and stale.name not in HAND_WRITTEN:
                if args.check:
                    problems.append(
                        f"{PACKAGE}/{stale.name} is not exported by any notebook"
                    )
                else:
                    stale.unlink()
                    print(f"removed {PACKAGE}/{stale.name} (no notebook exports it)")
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(
            "gptlib is generated: edit the notebook, then run `make export`.",
            file=sys.stderr,
        )
        return 1
    if args.check:
        print(f"{PACKAGE}/ is in sync with {len(origin)} exported modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
