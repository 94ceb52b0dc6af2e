"""The playground in a real browser: JupyterLab on 127.0.0.1, the chapter 7 notebook opened in
headless Chromium (Debian's package, driven by Playwright; nothing downloads a browser), all
cells run, a prompt typed, Generate clicked, and the generated text read back from the page.

A screenshot is saved as _build/screenshots/playground.png (or in $GPTLIB_SCREENSHOT_DIR).
`make test` installs Chromium first (`make browser`); run alone, the test skips without it.
"""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NOTEBOOK = "07_playground.ipynb"
PROMPT = "One day, Tom found a"
SETTINGS = {  # JupyterLab user settings: no autosave, no kernel dialog, no news or update checks
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"{CHROMIUM} is missing: `make browser` (apt-get install chromium)",
        allow_module_level=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with token auth, a temporary HOME and settings, serving a
    copy of the playground notebook without its outputs (nothing in the repository is written)."""
    from gptlib.story import story_model

    story_model()  # the notebook samples from chapter 5's model: train it first if it is missing
    tmp = tmp_path_factory.mktemp("lab")
    work, settings = tmp / "work", tmp / "settings"
    work.mkdir()
    notebook = json.loads((ROOT / "notebooks" / NOTEBOOK).read_text(encoding="utf-8"))
    for cell in notebook[
        "cells"
    ]:  # a clean copy, as a reader opens it: no outputs, no [n] prompts
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (work / NOTEBOOK).write_text(json.dumps(notebook), encoding="utf-8")
    for name, value in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    import matplotlib

    env = {
        **os.environ,
        "HOME": str(tmp),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "MPLCONFIGDIR": matplotlib.get_configdir(),  # reuse the font cache instead of rebuilding it
    }
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
         "--LabApp.extension_manager=readonly", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"{url}/api/status", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not start; see {tmp / 'jupyterlab.log'}"
                    )
                time.sleep(0.5)
        yield url, token
    finally:
        server.send_signal(
            signal.SIGTERM
        )  # the server shuts its kernels down, then exits
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def set_readout(page, widget: str, value) -> None:
    """Type `value` into the editable readout of the slider with CSS class `widget`."""
    readout = page.locator(f".{widget} .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def screenshot_path() -> Path:
    folder = Path(
        os.environ.get("GPTLIB_SCREENSHOT_DIR", ROOT / "_build" / "screenshots")
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "playground.png"


def test_playground_generates_text_in_a_browser(lab):
    url, token = lab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator")
            page.wait_for_timeout(1000)
            if page.locator(
                ".jp-Dialog .jp-mod-accept"
            ).count():  # should JupyterLab ask for a kernel
                page.locator(".jp-Dialog .jp-mod-accept").click()
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator("li[data-command='runmenu:run-all']").click()
            # the playground cell has run (or JupyterLab asks which kernel to start: the default one)
            page.wait_for_selector(".gptlib-generate, .jp-Dialog .jp-mod-accept")
            if page.locator(".jp-Dialog .jp-mod-accept").count():
                page.locator(".jp-Dialog .jp-mod-accept").click()
                page.wait_for_selector(".gptlib-generate")
            page.wait_for_function(  # every cell has run: all prompts numbered, no [*] or [ ] left
                "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].every(e => /\\[\\d+\\]/.test(e.textContent))"
            )
            assert (
                not page.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                )
                .filter(has_text="Traceback")
                .count()
            ), "a cell failed"

            # the browser shows what the kernel set last (the notebook's last cell): temperature, top-k,
            # top-p, repetition penalty, length
            readouts = page.locator(".gptlib-temperature, .gptlib-top-k, .gptlib-top-p, "
                                    ".gptlib-repetition-penalty, .gptlib-length").locator(".widget-readout")  # fmt: skip
            page.locator(".gptlib-generate").scroll_into_view_if_needed()
            assert readouts.all_text_contents() == ["1.00", "0", "1.00", "1.00", "100"]

            # a reader's turn: type a prompt, set the length slider and the seed, press Generate
            page.locator(".gptlib-prompt textarea").fill(PROMPT)
            set_readout(page, "gptlib-length", 80)
            page.locator(".gptlib-seed input").fill("7")
            page.locator(".gptlib-seed input").press("Enter")
            page.locator(".gptlib-generate").scroll_into_view_if_needed()
            page.locator(".gptlib-generate").click()
            # the new prompt in the output means this run has started; the button enabled again after
            # that, and the final status line, mean it has ended
            page.wait_for_function(
                """prompt => {
                    const out = document.querySelector('.gptlib-output');
                    const button = document.querySelector('.gptlib-generate');
                    const status = document.querySelector('.gptlib-status');
                    return out && out.textContent.startsWith(prompt) && !button.disabled
                        && / tokens in /.test(status.textContent);
                }""",
                arg=PROMPT,
            )
            text = page.locator(".gptlib-output").text_content()
            status = page.locator(".gptlib-status").text_content()
            bars = page.locator(".gptlib-bars .widget-label").all_text_contents()
            page.locator(".gptlib-output").scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot_path()))

            # Stop, clicked while the model writes 500 tokens (not stopping at the end of a story):
            # it is handled at once because generation runs in a thread, not in the kernel's loop
            set_readout(page, "gptlib-length", 500)
            page.locator(".gptlib-stop-at-eot input").uncheck()
            page.locator(".gptlib-generate").click()
            page.wait_for_function(
                "() => / tokens\\/s \\.\\.\\.$/.test(document.querySelector('.gptlib-status').textContent)"
            )
            page.locator(".gptlib-stop").click()
            page.wait_for_function(
                "() => /stopped\\)$/.test(document.querySelector('.gptlib-status').textContent)"
            )
            stopped = page.locator(".gptlib-status").text_content()
        finally:
            browser.close()
    n = int(re.match(r"(\d+) tokens in [\d.]+ s", status).group(1))
    assert n == 80 or status.endswith("end of story)"), (
        status
    )  # the length we set in the browser
    # the text grew by the prompt's continuation: a token of the story model is several characters
    assert text.startswith(PROMPT) and len(text) > len(PROMPT) + n // 2, text
    assert any(label.startswith("▶") for label in bars), (
        bars
    )  # the chart marks the chosen token
    assert int(stopped.split()[0]) < 500, stopped
    print(f"screenshot: {screenshot_path()}\n{text}\n{status}\n{stopped}")
