"""The built site, read as a reader gets it: offline, from file:// URLs, in headless Chromium.

The site is built once per test session (`jupyter-book build` into a temporary folder, from
the stored outputs, a few seconds; MathJax and the widget manager fetched first by .ci/web_assets.py if missing),
then its pages are opened in Debian's Chromium driven by Playwright with every http(s) request
aborted, so what passes here renders with no network:

* the math of the attention chapter is typeset by the MathJax bundled in _static;
* no code cell's lines run past the right edge of the page at a laptop's 1280x800;
* long printed outputs wrap instead of running past it (book/_static/custom.css);
* no page loads a script or stylesheet from the web, or links to a placeholder repository.
* chapter 7's page draws the playground's widgets from their stored state, and shows a
  screenshot of it live.

The browser tests skip, saying why, without Playwright or /usr/bin/chromium (`make browser`).
"""

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 800}
MATH_PAGE = "notebooks/02_attention.html"
# what a page must not point at: jupyter-book's default repository, a stand-in for a real one
PLACEHOLDERS = (
    "github.com/executablebooks",
    "example.com",
    "github.com/your",
    "github.com/username",
)


def toc_pages() -> list[str]:
    """The built page of every document in _toc.yml (the root page first), e.g. notebooks/00_data.html."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return [str(Path(name).with_suffix("")) + ".html" for name in files]


def build_site(out: Path) -> Path:
    """MathJax into book/_static (if missing), then the site into `out`; its html folder."""
    fetch = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "web_assets.py")],
        capture_output=True,
        text=True,
    )
    if fetch.returncode:
        pytest.fail(
            f"could not put MathJax and the widget manager into book/_static:\n{fetch.stdout}{fetch.stderr}"
        )
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "--quiet"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    html = out / "_build" / "html"
    if build.returncode or not (html / "index.html").is_file():
        pytest.fail(
            f"jupyter-book build failed ({build.returncode}):\n{build.stdout[-4000:]}{build.stderr[-4000:]}"
        )
    return html


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The built site's html folder, built once per session; under pytest-xdist the workers share
    one build (in the session's common temporary folder, under a file lock)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_site(tmp_path_factory.mktemp("site"))
    from filelock import FileLock

    common = (
        tmp_path_factory.getbasetemp().parent
    )  # the same folder for every worker of this session
    out, done = common / "site", common / "site.built"
    with FileLock(str(common / "site.lock")):
        if not done.is_file():
            build_site(out)
            done.touch()
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install playwright)",
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: `make browser` (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Offline:
    """A page of the built site opened from its file:// URL with every http(s) request aborted;
    `requested` lists the ones the page tried to make."""

    def __init__(self, browser, site: Path, page_name: str):
        self.requested: list[str] = []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.page.route("**/*", self._route)
        path = site / page_name
        assert path.is_file(), f"{page_name} was not built"
        self.page.goto(path.as_uri(), wait_until="load")
        self.page.evaluate("() => document.fonts.ready.then(() => true)")

    def _route(self, route):
        url = route.request.url
        if url.startswith(("http://", "https://")):
            self.requested.append(url)
            route.abort()
        else:
            route.continue_()

    def close(self):
        self.context.close()


def test_math_is_typeset_offline(site, browser):
    view = Offline(browser, site, MATH_PAGE)
    page = view.page
    try:
        script = page.evaluate(
            "() => document.querySelector('script[src*=\"tex-mml-chtml\"]')?.src"
        )
        assert script and script.startswith("file://"), (
            f"MathJax is not loaded from the site: {script}"
        )
        started = "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
        try:
            page.wait_for_function(started, timeout=30_000)
        except Exception:
            pytest.fail(
                f"MathJax did not start from {script} (is book/_static/mathjax/ there?)"
            )
        page.evaluate(
            "() => MathJax.startup.promise.then(() => document.fonts.ready).then(() => true)"
        )
        state = page.evaluate(
            r"""() => {
                const main = document.querySelector('main article') || document.querySelector('main');
                const math = [...main.querySelectorAll('.math')];
                const untypeset = math.filter(e => !e.querySelector('mjx-container'))
                    .map(e => e.textContent.trim().slice(0, 80));
                const raw = [];
                const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
                while (walker.nextNode()) {
                    const node = walker.currentNode;
                    if (node.parentElement.closest('pre, code, mjx-container, script, style')) continue;
                    if (/\\\(|\\\)|\\\[|\\\]|\$\$/.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 80));
                }
                const fonts = [...document.fonts].filter(f => f.family.startsWith('MJX'));
                return {
                    containers: main.querySelectorAll('mjx-container').length, math: math.length, untypeset, raw,
                    fonts_loaded: fonts.filter(f => f.status === 'loaded').map(f => f.family),
                    fonts_failed: fonts.filter(f => f.status === 'error').map(f => f.family),
                };
            }"""
        )
    finally:
        view.close()
    assert state["math"] > 0, f"{MATH_PAGE} has no math to typeset"
    assert state["containers"] >= state["math"], state
    assert not state["untypeset"], f"math left as TeX: {state['untypeset']}"
    assert not state["raw"], f"raw TeX delimiters in the visible text: {state['raw']}"
    assert state["fonts_loaded"] and not state["fonts_failed"], (
        f"MathJax fonts: {state}"
    )
    assert not view.requested, f"the page tried the network: {view.requested}"


# lines of a <pre> wider than its box (padding excluded), measured in the <pre>'s own font;
# `selector` picks the <pre> elements of the page's main content to measure
OVERFLOW_JS = r"""selector => {
    const main = document.querySelector('main article') || document.querySelector('main');
    const ctx = document.createElement('canvas').getContext('2d');
    return [...main.querySelectorAll(selector)]
        .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
        .map(pre => {
            const style = getComputedStyle(pre);
            ctx.font = style.font;
            const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            const lines = pre.innerText.split('\n');
            return {
                first: lines[0],
                columns: Math.floor(room / ctx.measureText('0').width),
                excess: pre.scrollWidth - pre.clientWidth,
                wide: lines.filter(line => ctx.measureText(line).width > room),
            };
        });
}"""


def overflowing(browser, site: Path, selector: str) -> list[str]:
    """'page: ...' for each <pre> matching `selector` that is wider than its box, on every page."""
    found = []
    for name in toc_pages():
        view = Offline(browser, site, name)
        try:
            for pre in view.page.evaluate(OVERFLOW_JS, selector):
                lines = "".join(
                    f"\n      {len(line):3d} cols: {line}" for line in pre["wide"]
                )
                found.append(
                    f"{name}: cell {pre['first'][:70]!r} is {pre['excess']}px too wide "
                    f"(room for {pre['columns']} columns){lines}"
                )
        finally:
            view.close()
    return found


def test_code_cells_fit_the_page(site, browser):
    # code: notebook cell inputs and the code blocks of the text, not the outputs (next test)
    found = overflowing(browser, site, "pre:not(.cell_output pre)")
    assert not found, (
        f"{len(found)} code blocks run past the right edge at 1280x800:\n"
        + "\n".join(found)
    )


def test_long_outputs_wrap(site, browser):
    found = overflowing(browser, site, ".cell_output pre")
    assert not found, (
        "outputs run past the right edge at 1280x800 (book/_static/custom.css):\n"
        + "\n".join(found)
    )


class Tags(HTMLParser):
    """The (tag, attributes) of every element of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def test_pages_load_nothing_from_the_web(site):
    problems = []
    for page in sorted(site.rglob("*.html")):
        name = str(page.relative_to(site))
        parser = Tags()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, attrs in parser.tags:
            url = (
                attrs.get("src", "")
                if tag == "script"
                else attrs.get("href", "")
                if tag == "link"
                else ""
            )
            if url.startswith(("http://", "https://", "//")):
                problems.append(f"{name}: <{tag}> loads {url}")
            for value in attrs.values():
                if any(placeholder in value for placeholder in PLACEHOLDERS):
                    problems.append(f"{name}: <{tag}> points at a placeholder: {value}")
    assert not problems, "\n".join(problems)
    # the math page loads the bundled MathJax, and the file is there
    parser = Tags()
    parser.feed((site / MATH_PAGE).read_text(encoding="utf-8"))
    scripts = [
        attrs["src"]
        for tag, attrs in parser.tags
        if tag == "script" and "mathjax" in attrs.get("src", "")
    ]
    assert len(scripts) == 1, scripts
    assert (
        (site / MATH_PAGE).parent.joinpath(scripts[0].split("?")[0]).resolve().is_file()
    ), scripts


def test_pages_show_no_tool_directives(site):
    """nbdev's `#| export` lines and nbval comments stay in the notebooks, off the site
    (book/_ext/reader_view.py), while the code of exported cells is still shown."""
    shown = []
    for page in toc_pages():
        text = (site / page).read_text(encoding="utf-8")
        shown += [
            f"{page}: {d}"
            for d in ("#| export", "#| default_exp", "NBVAL_")
            if d in text
        ]
    assert not shown, shown
    assert 'class="nf">causal_mask<' in (site / MATH_PAGE).read_text(
        encoding="utf-8"
    )  # def causal_mask


def test_reader_view_strips_only_directives():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    from reader_view import strip_directives

    cell = (
        "#| export tokenizer\n# a comment stays\nx = 1  #| not at line start\n#| hide\n"
    )
    assert strip_directives(cell) == "# a comment stays\nx = 1  #| not at line start\n"


def test_the_playground_page_shows_its_widgets_and_a_screenshot(site, browser):
    """The page draws chapter 7's widgets from the notebook's stored state with the widget
    manager in _static (they cannot run without a kernel), and shows the live playground as
    a picture."""
    view = Offline(browser, site, "notebooks/07_playground.html")
    try:
        sizes = view.page.evaluate(
            """() => [...document.images]
                .filter(img => img.src.includes("playground.png"))
                .map(img => [img.naturalWidth, img.naturalHeight])"""
        )
        assert sizes and all(w > 600 and h > 400 for w, h in sizes), sizes
        view.page.wait_for_selector("main textarea", state="attached")
        drawn = view.page.evaluate(
            """() => {
                const main = document.querySelector('main article');
                const right = main.getBoundingClientRect().right;
                const all = [...main.querySelectorAll('.jupyter-widgets')];
                return {
                    prompt: [...main.querySelectorAll('textarea')].map(t => t.value),
                    sliders: main.querySelectorAll('.widget-slider').length,
                    buttons: [...main.querySelectorAll('button')].map(b => b.innerText.trim()),
                    text: main.innerText,
                    past_the_edge: all.filter(w => w.getBoundingClientRect().right > right + 1)
                        .map(w => w.className).slice(0, 5),
                };
            }"""
        )
        assert drawn["prompt"] == ["Once upon a time, there was a little"], drawn[
            "prompt"
        ]
        assert drawn["sliders"] >= 5, drawn["sliders"]  # temperature, top-k, top-p, ...
        assert {"Generate", "Stop"} <= set(drawn["buttons"]), drawn["buttons"]
        assert "Next-token probabilities" in drawn["text"]
        assert not drawn["past_the_edge"], drawn["past_the_edge"]
        assert not view.requested, view.requested
    finally:
        view.close()
