# The commands the README gives. Everything installs into ./.venv on first use.
#   make test   export check, lint, unit tests, every notebook under nbval, strict site build
#   make book   export gptlib and build the site into _build/html
#   make lab    JupyterLab on the notebooks
#   make export regenerate gptlib/ from the notebooks (after editing a notebook)
#   make execute NB=notebooks/NN_name.ipynb   re-run a notebook and store its outputs
#   make test-portable   every notebook under nbval on the plainest CPU code paths, one thread
#   make diagrams        redraw the SVG diagrams in book/figures from book/figures/make_diagrams.py
#   make playground      chapter 7's playground as a web page (Voila), at http://127.0.0.1:8866

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# test workers: notebooks and tests run in parallel on this many processes
JOBS   ?= 2

# one target at a time, in the order given: `test` relies on it even under `make -j`
.NOTPARALLEL:

.PHONY: playground browser install export execute diagrams check-export lint format test test-unit test-notebooks test-portable web-assets book book-strict lab clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

install: $(STAMP)

export: $(STAMP)
	$(PY) .ci/export.py

execute: $(STAMP)
	$(PY) .ci/execute.py $(NB)

# the committed SVGs must equal what the script draws (tests/test_diagrams.py)
diagrams: $(STAMP)
	$(PY) book/figures/make_diagrams.py

check-export: $(STAMP)
	$(PY) .ci/export.py --check

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# the tests, and every docstring example of gptlib run as a doctest
test-unit: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --doctest-modules tests/ gptlib/

# Every chapter re-run under nbval. Chapter 5 trains the story model on all cores, so it
# runs alone; chapters 6+ sample from that model, so they run after it. The other groups
# run in parallel, one notebook per worker.
NBVAL    := $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg
NB_FIRST := $(wildcard notebooks/0[0-4]_*.ipynb)
NB_STORY := $(wildcard notebooks/05_*.ipynb)
NB_LATER := $(wildcard notebooks/0[6-9]_*.ipynb notebooks/[1-9][0-9]_*.ipynb)
# appendix notebooks of the book, run with the first group
NB_BOOK  := book/pytorch_primer.ipynb
# worked solutions to the chapters' exercises (each seconds): those of chapters 0-4 run with
# the first group, those of chapters 5+ (which use the story model) with the last
NB_SOLUTIONS := $(wildcard notebooks/solutions/0[0-4]_*.ipynb)
NB_SOLUTIONS_LATER := $(wildcard notebooks/solutions/0[5-9]_*.ipynb notebooks/solutions/[1-9][0-9]_*.ipynb)

test-notebooks: $(STAMP)
	$(NBVAL) -n $(JOBS) --dist loadfile $(NB_FIRST) $(NB_BOOK) $(NB_SOLUTIONS)
	$(if $(NB_STORY),$(NBVAL) $(NB_STORY))
	$(if $(NB_LATER),$(NBVAL) -n $(JOBS) --dist loadfile $(NB_LATER) $(NB_SOLUTIONS_LATER))

# The stored outputs must not depend on the CPU's kernels. PyTorch picks its vectorised
# kernels by instruction set (ATEN_CPU_CAPABILITY: default, avx2, avx512), and the thread
# count changes how sums are split. This re-runs every notebook on PyTorch's plainest path,
# on one thread: the outputs must still match. MKL picks its own kernels by CPU vendor and
# instruction set; `make test-portable PORTABLE="... MKL_CBWR=AVX"` adds its SSE4.2 path
# (several times slower: chapter 5 then trains for many minutes).
PORTABLE ?= ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test-portable: $(STAMP)
	$(PORTABLE) $(NBVAL) -n $(JOBS) --dist loadfile $(NB_FIRST) $(NB_BOOK) $(NB_SOLUTIONS)
	$(if $(NB_STORY),$(PORTABLE) $(NBVAL) $(NB_STORY))
	$(if $(NB_LATER),$(PORTABLE) $(NBVAL) -n $(JOBS) --dist loadfile $(NB_LATER) $(NB_SOLUTIONS_LATER))

book-strict: $(STAMP) web-assets
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet

# MathJax for the site's math and ipywidgets' HTML manager for chapter 7's stored widgets, so
# pages need no network: the pinned npm tarballs, checked against their sha512, unpacked into
# book/_static/mathjax/ and book/_static/widgets/ (ignored by git); a no-op once there
web-assets:
	$(PYTHON) .ci/web_assets.py

# Chromium for the playground's browser test (Debian's package, driven by Playwright)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# notebooks before unit tests: chapter 5 trains the story model once, and the tests that
# drive the playground (browser test included) find it instead of training it again
test: browser check-export lint test-notebooks test-unit book-strict
	@echo "make test: all checks passed"

book: export web-assets
	$(VENV)/bin/jupyter-book build . --quiet
	@echo "The site is built: open file://$(CURDIR)/_build/html/index.html"

# the playground alone, no code shown: book/playground_app.ipynb served by Voila
playground: $(STAMP)
	$(VENV)/bin/voila book/playground_app.ipynb --Voila.ip=127.0.0.1 --port=8866

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf _build .pytest_cache .ruff_cache
