"""`make playground`: chapter 7's playground served by Voila as a page of its own, opened in
headless Chromium (Debian's package, driven by Playwright): the widgets render, no code is
shown, and a prompt typed and Generate clicked give text on the page.

`make test` installs Chromium first (`make browser`); run alone, the test skips without it.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "book" / "playground_app.ipynb"
PROMPT = "Once upon a time, Mia saw a"

pytest.importorskip("voila", reason="voila is not installed (pip install voila)")
# the browser, its options and the skips when either is missing: those of the notebook's test
from test_playground_browser import CHROMIUM, CHROMIUM_ARGS, free_port, playwright  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Voila on 127.0.0.1, serving book/playground_app.ipynb as `make playground` does."""
    from gptlib.story import story_model

    story_model()  # the page samples from chapter 5's model: train it first if missing
    tmp = tmp_path_factory.mktemp("voila")
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(tmp),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
    }
    log = open(tmp / "voila.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(APP), "--no-browser", "--Voila.ip=127.0.0.1",
         f"--port={port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # listening: a GET would already start the page's kernel
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Voila did not start; see {tmp / 'voila.log'}")
                time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_the_playground_app_generates_text_and_shows_no_code(app):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(app)
            page.wait_for_selector(".gptlib-generate")  # the kernel ran the notebook
            body = page.locator("body").inner_text()
            assert "The sampling playground" in body  # its text is shown
            assert "from gptlib.playground import" not in body  # its code is not
            page.locator(".gptlib-prompt textarea").fill(PROMPT)
            page.locator(".gptlib-generate").click()
            page.wait_for_function(
                """prompt => {
                    const out = document.querySelector('.gptlib-output');
                    const status = document.querySelector('.gptlib-status');
                    return out && out.textContent.startsWith(prompt)
                        && / tokens in /.test(status.textContent);
                }""",
                arg=PROMPT,
            )
            text = page.locator(".gptlib-output").inner_text()
            assert text.startswith(PROMPT) and len(text) > len(PROMPT) + 20
        finally:
            browser.close()
