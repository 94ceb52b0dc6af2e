"""A Sphinx extension for the site: readers see the code, not the build's directives.

Notebook cells carry lines meant for tools: nbdev's `#| export` / `#| default_exp`
(which module a cell goes to) and, in older notebooks, nbval comments. On the site they
are noise, so they are removed from code cells as each notebook is read; the notebooks
themselves keep them. A cell that was nothing but a directive disappears.
"""

import json
import re

DIRECTIVE = re.compile(r"^\s*(#\|[^\n]*|# NBVAL_[A-Z_]+)\n?", re.MULTILINE)


def strip_directives(source: str) -> str:
    """`source` of a code cell without its tool directives.

    >>> strip_directives("#| export\\nimport torch\\n#| hide\\nx = 1")
    'import torch\\nx = 1'
    """
    return DIRECTIVE.sub("", source)


def _reader_view(app, docname: str, content: list[str]) -> None:
    if not app.env.doc2path(docname).endswith(".ipynb"):
        return
    notebook = json.loads(content[0])
    cells = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = strip_directives("".join(cell["source"]))
            if not source.strip() and not cell.get("outputs"):
                continue  # only a directive: nothing for a reader
            cell["source"] = source
        cells.append(cell)
    notebook["cells"] = cells
    content[0] = json.dumps(notebook)


def setup(app):
    app.connect("source-read", _reader_view)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
