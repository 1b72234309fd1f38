"""Drive JupyterLab in headless Chromium: start a server, open a notebook, run it, screenshot.

Used by tests/test_e2e_jupyterlab.py. Chromium comes from the system (Debian's `chromium`
package); Playwright only drives it, so `playwright install` (a browser download) is never run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = os.environ.get("POET_CHROMIUM", "/usr/bin/chromium")
# The background-networking flags keep Chromium from phoning home: on a closed network those
# connections are refused, and the refusals slow down or break the launch. --no-sandbox because
# CI runs as root; --disable-dev-shm-usage because containers often have a 64 MB /dev/shm.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

# User settings for the temporary JupyterLab: no news or update checks (they would pop a toast
# over the notebook and try the network), the notebook's kernel started without a "Select
# Kernel" dialog, every cell attached to the page (so that widgets far down the notebook render
# without scrolling), and no autosave.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                     "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none",
                                               "autoStartDefaultKernel": True},
    # Never write outputs back into the course's notebooks (they are committed without them).
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}

def missing_requirement() -> str | None:
    """Why the browser test cannot run here (None when Playwright and Chromium are present)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set POET_CHROMIUM)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "JupyterLab is not installed"
    return None


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    """Write LAB_SETTINGS as JupyterLab user-settings files under settings_dir."""
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@dataclass
class LabServer:
    """A running JupyterLab: its process, base URL and token."""

    proc: subprocess.Popen
    url: str
    token: str
    log: Path

    def api(self, path: str, method: str = "GET") -> object:
        """Call the server's REST API and return the decoded JSON (None for an empty body)."""
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def lab_url(self, relpath: str, workspace: str) -> str:
        """The browser URL that opens relpath (relative to the notebook dir) in a new workspace.

        A workspace of its own per notebook keeps JupyterLab from restoring (and starting a
        kernel for) the notebook a previous test opened.
        """
        return f"{self.url}/lab/workspaces/{workspace}/tree/{relpath}?token={self.token}"

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of the server (frees the CPU between notebooks)."""
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def saved_files(self) -> list[str]:
        """The files JupyterLab wrote back to disk (none expected: autosave is off)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"Saving file at (\S+)", text)


def start_lab(root_dir: Path, work_dir: Path, env: dict[str, str],
              timeout: float = 90) -> LabServer:
    """Start JupyterLab on a free localhost port with a token; wait until its API answers."""
    port, token = free_port(), secrets.token_hex(16)
    for sub in ("runtime", "config", "data", "settings", "workspaces", "checkpoints"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    _write_settings(work_dir / "settings")
    full_env = {**os.environ, **env,
                "JUPYTER_RUNTIME_DIR": str(work_dir / "runtime"),
                "JUPYTER_CONFIG_DIR": str(work_dir / "config"),
                "JUPYTER_DATA_DIR": str(work_dir / "data"),
                "JUPYTERLAB_SETTINGS_DIR": str(work_dir / "settings"),
                "JUPYTERLAB_WORKSPACES_DIR": str(work_dir / "workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
           # An absolute checkpoint dir keeps .ipynb_checkpoints/ folders out of the repository.
           f"--FileCheckpoints.checkpoint_dir={work_dir / 'checkpoints'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")  # CI containers run as root
    log = work_dir / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(proc, f"http://127.0.0.1:{port}", token, log)
    _wait_until_up(server, timeout)
    return server


def _wait_until_up(server: LabServer, timeout: float) -> None:
    """Poll /api/status until the server answers; raise with its log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.proc.returncode}:\n"
                               f"{server.log_tail()}")
        try:
            server.api("/api/status")
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer in {timeout:.0f} s:\n{server.log_tail()}")


def stop_lab(server: LabServer) -> None:
    """Shut down the server and its kernels; kill whatever of them is still alive."""
    import psutil  # installed with ipython, peft and accelerate

    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        server.api("/api/shutdown", method="POST")  # also shuts its kernels down
        server.proc.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    # Kernels run in sessions of their own, so the process-group kill above misses them.
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass


def launch_browser(playwright):
    """Launch the system Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)


def open_notebook(page, server: LabServer, relpath: str, timeout_ms: int = 90_000) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is connected and idle."""
    workspace = re.sub(r"\W", "-", Path(relpath).stem)
    page.goto(server.lab_url(relpath, workspace), timeout=timeout_ms)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=timeout_ms)
    wait_kernel_idle(page, timeout_ms)


# True once the status bar names a kernel that is idle ("Python 3 (ipykernel) | Idle"). The
# toolbar's execution indicator is no use before the kernel starts: it says "idle" while the
# status bar still says "No Kernel | Initializing", and cells run then lose their widgets
# ("Error displaying widget: model not found").
_KERNEL_IDLE_JS = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => /\\|\\s*Idle\\s*$/.test(e.textContent) && !/^\\s*No Kernel/.test(e.textContent))"""


def wait_kernel_idle(page, timeout_ms: int) -> None:
    """Wait until the status bar shows the notebook's kernel connected and idle."""
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=timeout_ms, polling=250)


def click_menu(page, menu: str, *path: str) -> None:
    """Click a main-menu entry, e.g. click_menu(page, 'View', 'Appearance', 'Show Left Sidebar')."""
    page.locator(".lm-MenuBar-itemLabel").filter(has_text=_exactly(menu)).first.click()
    for n, item in enumerate(path):
        entry = page.locator(".lm-Menu .lm-Menu-itemLabel").filter(has_text=_exactly(item)).last
        entry.wait_for(state="visible")
        if n < len(path) - 1:
            entry.hover()  # opens the submenu
        else:
            entry.click()


def hide_left_sidebar(page) -> None:
    """Collapse the file browser, so that screenshots show more of the notebook."""
    if page.locator("#jp-left-stack:not(.lm-mod-hidden)").count():
        click_menu(page, "View", "Appearance", "Show Left Sidebar")
        page.locator("#jp-left-stack.lm-mod-hidden").wait_for(state="attached")


def _exactly(text: str) -> re.Pattern:
    """A pattern that matches text exactly, up to surrounding white space."""
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


# True once no code cell of the visible notebook is queued or running (its prompt "[*]:").
# Run All queues every cell at once, so this happens only when it is done, or when a cell
# failed and the cells below it fell back to "[ ]:".
_ALL_RUN_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
    return prompts.length > 0 && !prompts.some(p => p.textContent.includes('[*]'));
}"""
# True once any code cell has left the never-run state "[ ]:".
_STARTED_JS = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
    .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def run_all_cells(page, timeout_ms: int = 300_000) -> float:
    """Run > Run All Cells; wait until no cell is queued (all ran or one failed); return seconds."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    start = time.monotonic()
    for attempt in range(3):
        # The first click can land before JupyterLab has wired the menu to the notebook; then
        # nothing starts, and the menu is tried again.
        click_menu(page, "Run", "Run All Cells")
        try:
            page.wait_for_function(_STARTED_JS, timeout=10_000, polling=250)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    page.wait_for_function(_ALL_RUN_JS, timeout=timeout_ms, polling=500)
    wait_kernel_idle(page, timeout_ms)
    return time.monotonic() - start


# [prompt, output text] of every code cell of the visible notebook.
_CELLS_JS = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')].map(c => [
        (c.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
        (c.querySelector('.jp-Cell-outputArea') || {innerText: ''}).innerText])"""


def cell_errors(page) -> list[str]:
    """Tracebacks in the open notebook, and the output of a cell that stopped Run All.

    JupyterLab 4 renders an error like stderr, so an error is found by its traceback text, or
    by the cells that Run All left unrun ("[ ]:") below the one that failed.
    """
    cells = page.evaluate(_CELLS_JS)
    errors = [text for _, text in cells if "Traceback (most recent call last)" in text]
    # A cell ran if its prompt shows a count, or if it printed (the notebooks are committed
    # without outputs): a collapsed reference-answer cell shows no prompt, only its output.
    unrun = [n for n, (prompt, text) in enumerate(cells)
             if not re.search(r"\[\d+\]", prompt) and not text.strip()]
    if unrun and not errors:
        failed = cells[unrun[0] - 1][1] if unrun[0] else ""
        errors.append(f"Run All stopped before code cell {unrun[0] + 1}; the cell above "
                      f"printed:\n{failed}")
    return errors


def widget_output_area(page, button_text: str):
    """(output area, button): the cell output that holds a widget button labelled button_text.

    button_text is a string (matched exactly) or a compiled pattern.
    """
    label = button_text if isinstance(button_text, re.Pattern) else _exactly(button_text)
    button = page.locator(".jupyter-widgets.widget-button").filter(has_text=label)
    area = page.locator(".jp-Cell-outputArea").filter(has=button).last
    return area, area.locator(".jupyter-widgets.widget-button").filter(has_text=label).first


def widget_problems(page) -> list[str]:
    """Widgets that did not render: 'Error displaying widget...' or a stuck 'Loading widget...'."""
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
    bad = panel.filter(has_text=re.compile(r"Error displaying widget|Loading widget"))
    return [bad.nth(i).inner_text()[:200] for i in range(bad.count())]


def slider(area, label: str):
    """The ipywidgets slider in `area` whose description is exactly `label`."""
    return area.locator(".widget-slider").filter(
        has=area.page.locator(".widget-label").filter(has_text=_exactly(label))).first


def slider_readout(slider_locator) -> str:
    """The value a slider shows next to it."""
    return slider_locator.locator(".widget-readout").first.inner_text().strip()


def nudge_slider(slider_locator, steps: int) -> str:
    """Move an ipywidgets 8 slider by `steps` steps with the arrow keys; return its new readout."""
    before = slider_readout(slider_locator)
    handle = slider_locator.locator(".noUi-handle").first
    handle.focus()
    for _ in range(abs(steps)):
        handle.press("ArrowRight" if steps > 0 else "ArrowLeft")
    return wait_text_change(slider_locator.locator(".widget-readout").first, before, 10).strip()


def wait_text_change(locator, before: str, timeout_s: float = 60, until=None) -> str:
    """Poll a locator's text until it differs from `before`; return the new text.

    A widget that clears its output before printing passes through an empty text on the way,
    so a caller that knows what the new text holds gives `until` (a test on the text) and the
    poll waits for it, not for the first change.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = locator.inner_text()
        if text != before and (until is None or until(text)):
            return text
        time.sleep(0.25)
    raise AssertionError(f"text did not change in {timeout_s:.0f} s; still:\n{before[:1000]}")


def save_screenshot(target, name: str, folders: list[Path]) -> list[Path]:
    """Screenshot a page or locator as name.png into each folder; return the paths written."""
    folders = [Path(f) for f in folders]
    folders[0].mkdir(parents=True, exist_ok=True)
    first = folders[0] / f"{name}.png"
    target.screenshot(path=str(first))
    paths = [first]
    for folder in folders[1:]:
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(Path(shutil.copy2(first, folder / first.name)))
    return paths
