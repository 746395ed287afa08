"""Interactive step-through, for real: the quickstart notebook in JupyterLab, driven by headless
Chromium cell by cell against the lab (see notebook_browser.py). Screenshots go to the run's proof
root (`screenshots/`; those taken before the finish cell are sealed into its SHA256SUMS)."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from ..conftest import ROOT, assert_reviewable_evidence
from ..lab_fixtures import OwnRuns
from .notebook_browser import Notebook, open_notebook

LANE = "single-node-quickstart"
NOTEBOOK = f"{LANE}.ipynb"
LONG_WAIT = 'node.wait_marker("never.seen", timeout=900)   # a deliberately long wait'
BOOT_S = 400   # a shared TCG host: the guest image may be built first
pytestmark = pytest.mark.long(2)   # a JupyterLab server, a browser and a guest per test


def _notebooks(tmp_path: Path) -> Path:
    """A copy of the lane notebook to serve (the tracked one is never opened for writing)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, folder / NOTEBOOK)
    return folder


def _proof_root(outputs: Path) -> Path:
    (root,) = [p for p in (outputs / LANE).iterdir() if p.is_dir() and not p.is_symlink()]
    return root


def _start_run(nb: Notebook, outputs: Path, override: str = "") -> Path:
    """Run the parameters cell (then a cell typed below it: `override`) and the start cell; the
    run's proof root, where the screenshots go from now on."""
    nb.run("keep_vm = False")
    if override:
        index = nb.insert_below("keep_vm = False", override)
        nb.wait_done(index, nb.start(index), timeout_s=60)
    nb.run("ucnb.start_run(globals())")
    root = _proof_root(outputs)
    nb.shots = root / "screenshots"
    nb.shots.mkdir()
    return root


def _labs_of(run_id: str) -> list[str]:
    from ucnb.lab.registry import list_labs

    return sorted(s.lab_id for s in list_labs() if s.run_id == run_id)


def test_quickstart_cell_by_cell_with_an_interrupt(tmp_path: Path, outputs: Path, own_runs: OwnRuns) -> None:
    with open_notebook(_notebooks(tmp_path), NOTEBOOK, tmp_path / "shots") as nb:
        root = _start_run(nb, outputs)
        nb.run("run.stand_ins()")
        booted = nb.run("node = lane.boot(run)", timeout_s=BOOT_S)
        assert "Traceback" not in booted, booted
        assert re.search(r"marker lab\.init\.done on node01: done after", booted), booted
        nb.shot("01-booted", nb.find("node = lane.boot(run)"))
        health = nb.run("lane.service_health(run, node)")
        assert "Traceback" not in health, health
        nb.shot("02-service-health", nb.find("lane.service_health(run, node)"))

        # A deliberately long wait: its progress shows in the cell as it goes, the stop button
        # ends it at once with a clear message, and the lab is still there for the next cell.
        index = nb.insert_below("lane.service_health(run, node)", LONG_WAIT)
        before = nb.start(index)
        waiting = r"waiting for marker never\.seen on node01: "
        first = int(nb.wait_text(index, waiting + r"(\d+) s of 900 s").group(1))
        later = int(nb.wait_text(index, waiting + r"([3-9]|\d\d+) s").group(1))
        assert later > first, "the wait's progress line did not move while it waited"
        nb.shot("03-long-wait-in-progress", index)
        pressed = time.monotonic()
        nb.interrupt()
        interrupted = nb.wait_done(index, before, timeout_s=30)
        stopped_s = time.monotonic() - pressed
        print(f"FIGURE stop button -> interrupted cell done (as the browser sees it): {stopped_s:.2f}s")
        assert stopped_s < 10, f"the stop button took {stopped_s:.1f}s to end the wait"
        assert "KeyboardInterrupt" in interrupted, interrupted
        assert re.search(r"interrupted after [\d.]+ s", interrupted), interrupted
        assert "the cell stopped its wait or guest command" in interrupted and "running" in interrupted
        nb.shot("04-interrupted", index)

        manifest = nb.run("lane.check_manifest(run, node)")
        assert "Traceback" not in manifest, manifest
        nb.shot("05-next-cell-after-the-interrupt", nb.find("lane.check_manifest(run, node)"))
        finished = nb.run("result = run.finish()", timeout_s=180)
        assert "sealed proof root" in finished, finished
        nb.shot("06-finished", nb.find("result = run.finish()"))

    # The interactive run is evidence as a CLI run is: sealed, checksummed, marked interactive.
    assert (outputs / LANE / "latest").resolve() == root
    assert_reviewable_evidence(root)
    from ucnb.evidence.proof import read_environment, verify_checksums

    assert verify_checksums(root) == []
    sealed = (root / "SHA256SUMS").read_text()
    assert f"{LANE}.html" in sealed and "screenshots/04-interrupted.png" in sealed
    env = read_environment(root)
    assert env["interactive"] == "true" and env["interactive_notebook"].endswith(NOTEBOOK), env
    result = json.loads((root / "result.json").read_text())
    assert result["steps"]["interrupted"] == 0   # a wait, not a step, was interrupted
    assert result["verdict"] == "passed" and result["verdict_label"] == "passed with gaps", result
    assert any(g["name"] == "marker: never.seen" and "interrupted by the user" in g["reason"]
               for g in result["gaps"]), result["gaps"]
    page = html.unescape((root / f"{LANE}.html").read_text())
    assert "marker: never.seen (interrupted by the user after" in page   # in the verdict banner
    transcript = nbformat.read(root / NOTEBOOK, as_version=4)
    sources = [c.source for c in transcript.cells if c.cell_type == "code"]
    assert LONG_WAIT in sources and sources[-1] == "result = run.finish()", sources
    waited = next(c for c in transcript.cells if c.cell_type == "code" and c.source == LONG_WAIT)
    assert any(o.output_type == "error" and o.ename == "KeyboardInterrupt" for o in waited.outputs)
    assert (root / "parameters.yaml").exists() and (root / "screenshots" / "06-finished.png").exists()
    assert _labs_of(result["run_id"]) == []


def test_boot_twice_then_restart_leaves_no_lab(tmp_path: Path, outputs: Path, own_runs: OwnRuns) -> None:
    from ucnb.lab.registry import list_labs

    with open_notebook(_notebooks(tmp_path), NOTEBOOK, tmp_path / "shots") as nb:
        root = _start_run(nb, outputs)
        run_id = (root / "environment.txt").read_text().split("run_id=")[1].split()[0]
        nb.run("node = lane.boot(run)", timeout_s=BOOT_S)
        (first,) = _labs_of(run_id)
        again = nb.run("node = lane.boot(run)", timeout_s=BOOT_S)
        assert f"replacing lab {first}" in again, again
        (second,) = _labs_of(run_id)
        assert second != first
        nb.shot("01-booted-twice", nb.find("node = lane.boot(run)"))
        nb.restart_kernel()
        deadline = time.monotonic() + 60
        while _labs_of(run_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        nb.shot("02-kernel-restarted")
        assert _labs_of(run_id) == [], [s for s in list_labs() if s.run_id == run_id]


def test_a_kept_lab_survives_its_kernel_and_is_attached_from_a_new_notebook(
        tmp_path: Path, outputs: Path, own_runs: OwnRuns) -> None:
    folder = _notebooks(tmp_path)
    attach = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import ucnb")])
    attach.metadata["kernelspec"] = {"name": "ucnb", "display_name": "Python (ucnb)", "language": "python"}
    nbformat.write(attach, folder / "attach.ipynb")
    with open_notebook(folder, NOTEBOOK, tmp_path / "shots") as nb:
        root = _start_run(nb, outputs, override="keep_vm = True")
        run_id = (root / "environment.txt").read_text().split("run_id=")[1].split()[0]
        nb.run("node = lane.boot(run)", timeout_s=BOOT_S)
        finished = nb.run("result = run.finish()", timeout_s=180)
        assert "reach the kept lab with" in finished and "sealed proof root" in finished, finished
        (lab_id,) = _labs_of(run_id)
        nb.restart_kernel()   # a kept lab outlives its kernel
        time.sleep(5)
        assert _labs_of(run_id) == [lab_id]

        new = nb.open_other("attach.ipynb")
        new.run("import ucnb")
        attach_cell = f'lab = ucnb.attach("{lab_id}")\nlab["node01"].run("uptime").stdout'
        cell = new.insert_below("import ucnb", attach_cell)
        uptime = new.wait_done(cell, new.start(cell), timeout_s=120)
        assert "load average" in uptime, uptime
        new.shot("07-attached-from-a-new-notebook", cell)
        clean_cell = f'from ucnb.lab import registry\nregistry.clean(lab_id="{lab_id}")'
        clean = new.insert_below("ucnb.attach", clean_cell)
        removed = new.wait_done(clean, new.start(clean), timeout_s=120)
        assert f"domain ucnb-{lab_id}-node01" in removed, removed
    assert _labs_of(run_id) == []
