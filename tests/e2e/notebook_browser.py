"""A lane notebook in a real JupyterLab, driven by headless Chromium (Debian's `chromium` through
Playwright: no browser download), cell by cell as a person would: select a cell, Ctrl+Enter, wait
for its prompt to show a new execution count; the toolbar's stop button; Kernel > Restart.

Cells are found by their source, never by position, so the notebook may grow.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ucnb.runner import jupyterlab

CHROMIUM = "/usr/bin/chromium"
DONE_PROMPT = "({el, prev}) => /^\\[\\d+\\]:$/.test(el.textContent.trim()) && el.textContent.trim() !== prev"
BUSY_PROMPT = "el => el.textContent.includes('*')"


class Notebook:
    """One open notebook page; screenshots go to `shots`."""

    def __init__(self, page: Any, shots: Path, base_url: str, token: str) -> None:
        self.page, self.shots = page, shots
        self._base, self._token = base_url, token
        shots.mkdir(parents=True, exist_ok=True)

    def open(self, name: str) -> None:
        """Open notebook `name` of the served folder (a new kernel) and wait until it is idle."""
        self.page.goto(f"{self._base}/lab/tree/{name}?token={self._token}")
        self.page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
        self.page.wait_for_timeout(2000)
        self.answer_dialog(f"open-{name}")

    def answer_dialog(self, shot: str) -> str:
        """A dialog JupyterLab opened by itself (seen once in a while right after a notebook
        opened on a loaded host): saved as a screenshot, printed, and answered with its default
        button, so that it is on record and not in the way. Returns its text ("" when none)."""
        dialog = self.page.locator(".jp-Dialog")
        if not dialog.count():
            return ""
        text = str(dialog.first.inner_text())
        self.shot(f"dialog-{shot}")
        print(f"JupyterLab opened a dialog by itself ({shot}): {text!r}")
        accept = dialog.first.locator(".jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            self.page.keyboard.press("Escape")
        return text

    def open_other(self, name: str) -> Notebook:
        """Notebook `name` in a new browser tab (with its own kernel); this one stays open."""
        other = Notebook(self.page.context.new_page(), self.shots, self._base, self._token)
        other.page.set_default_timeout(60_000)
        other.open(name)
        return other

    def cells(self) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell")

    def find(self, source: str, timeout_s: float = 60) -> int:
        """The index of the first cell whose source contains `source` (cells render lazily)."""
        deadline = time.monotonic() + timeout_s
        while True:
            texts = self.cells().evaluate_all(
                "cells => cells.map(c => c.querySelector('.jp-InputArea-editor')?.textContent ?? '')")
            for i, text in enumerate(texts):
                if source in text:
                    return i
            if time.monotonic() > deadline:
                raise AssertionError(f"no cell holds {source!r}: {texts}")
            time.sleep(0.3)

    def cell(self, index: int) -> Any:
        return self.cells().nth(index)

    def prompt(self, index: int) -> str:
        return str(self.cell(index).locator(".jp-InputPrompt").inner_text()).strip()

    def output(self, index: int) -> str:
        return str(self.cell(index).locator(".jp-OutputArea").inner_text())

    def select(self, index: int) -> None:
        """Select a cell in command mode (clicking its prompt, not its editor); a dialog
        JupyterLab opened meanwhile is answered first (it would take the click)."""
        self.answer_dialog(f"select-{index}")
        self.cell(index).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")

    def start(self, index: int) -> str:
        """Run a cell (Ctrl+Enter) and return its prompt from before, without waiting for it.

        JupyterLab shows `[*]:` as soon as it sends the cell; a prompt unchanged seconds later is
        a key press the page lost (seen right after a notebook opened): it is pressed again."""
        before = self.prompt(index)
        for _ in range(3):
            self.select(index)
            self.page.keyboard.press("Control+Enter")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.prompt(index) != before:
                    return before
                time.sleep(0.1)
        raise AssertionError(f"cell {index} never started: its prompt stayed {before!r}")

    def wait_done(self, index: int, before: str, timeout_s: float) -> str:
        """Wait until the cell shows a new execution count and the kernel is idle; its output."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        handle = self.cell(index).locator(".jp-InputPrompt").element_handle()
        try:
            self.page.wait_for_function(DONE_PROMPT, arg={"el": handle, "prev": before},
                                        timeout=timeout_s * 1000)
            self.page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                                        timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            shot = self.shot(f"timeout-cell-{index}", index)
            raise AssertionError(f"cell {index} did not finish within {timeout_s:g}s (prompt "
                                 f"{self.prompt(index)!r}, see {shot}); it shows: {self.output(index)[-800:]}"
                                 ) from None
        return self.output(index)

    def run(self, source: str, timeout_s: float = 300) -> str:
        """Run the cell holding `source` and return its output text once it finished."""
        index = self.find(source)
        return self.wait_done(index, self.start(index), timeout_s)

    def wait_busy(self, index: int, timeout_s: float = 30) -> None:
        handle = self.cell(index).locator(".jp-InputPrompt").element_handle()
        self.page.wait_for_function(BUSY_PROMPT, arg=handle, timeout=timeout_s * 1000)

    def insert_below(self, source: str, code: str) -> int:
        """A new code cell below the one holding `source`, typed as a person would; its index."""
        index = self.find(source)
        self.select(index)
        self.page.keyboard.press("b")
        self.page.keyboard.press("Enter")
        self.page.keyboard.insert_text(code)   # no auto-closed brackets
        self.page.keyboard.press("Escape")
        return index + 1

    def interrupt(self) -> None:
        """The toolbar's stop button."""
        self.page.locator('[data-jp-item-name="interrupt"] [data-command]').click()

    def restart_kernel(self) -> None:
        """Kernel > Restart Kernel…, confirmed in its dialog."""
        self.page.locator('[data-jp-item-name="restart"] [data-command]').click()
        self.page.locator(".jp-Dialog .jp-mod-accept").click()

    def wait_text(self, index: int, pattern: str, timeout_s: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output(index))
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"cell {index} never showed {pattern!r}; it shows: {self.output(index)[-500:]}")

    def shot(self, name: str, index: int | None = None) -> Path:
        """A screenshot of the page, with the bottom of cell `index` (its outputs) in view."""
        if index is not None:
            self.cell(index).evaluate("c => c.scrollIntoView({block: 'end'})")
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path


@contextmanager
def open_notebook(folder: Path, name: str, shots: Path) -> Iterator[Notebook]:
    """JupyterLab serving `folder` (autosave off: the notebook on disk never changes) and the
    notebook `name` open in headless Chromium with its kernel idle."""
    from playwright.sync_api import sync_playwright

    server = jupyterlab.start(folder, autosave=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.set_default_timeout(60_000)
                notebook = Notebook(page, shots, server.base_url, server.token)
                notebook.open(name)
                yield notebook
            finally:
                browser.close()
    finally:
        server.stop()
