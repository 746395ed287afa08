"""Ctrl-C (SIGINT to the runner's process group, as a terminal sends it) at ten moments of a
quickstart, from just after start to the verdict cell, and SIGTERM once: every time exit 130,
an executed notebook and result.json saying `interrupted`, and nothing of the run left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from ..conftest import ROOT, Cli
from ..lab_fixtures import kernel_processes, leftovers, settled

UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)
LANE = "single-node-quickstart"

# (moment, the cell that must have started, then a delay in s, "domain" (a VM of the run is up)
# or "step:<name>" (that step has started)). A cell is found by its source. A cell of
# milliseconds may be over when the signal comes: where it landed is reported, it must end 130.
MOMENTS = [
    ("just after start (proof root made)", None, 0.0),
    ("while the kernel starts", None, 1.0),
    ("parameters cell", "lane_name = ", 0.0),
    ("setup cell (start_run)", "start_run(globals())", 0.0),
    ("boot: image and accelerator", "lane.boot(run)", 0.0),
    ("boot: VM up, waiting for its console marker", "lane.boot(run)", "domain"),
    ("boot: waiting for SSH", "lane.boot(run)", "step:wait: SSH"),
    ("service health (SSH commands in flight)", "lane.service_health(run, node)", 0.5),
    ("manifest", "lane.check_manifest(run, node)", 0.0),
    ("verdict cell (run.finish)", "result = run.finish()", 0.0),
]


def _root(outputs: Path) -> Path | None:
    roots = list((outputs / LANE).glob("2*")) if (outputs / LANE).exists() else []
    return roots[0] if roots else None


def _cell_reached(root: Path, source: str) -> bool:
    """The cell whose source holds `source` is running or has run (papermill saves the notebook
    at each cell's start and end; a cell of milliseconds may be over before a poll sees it)."""
    try:
        nb = json.loads((root / f"{LANE}.ipynb").read_text())
    except (OSError, ValueError):
        return False
    return any(source in "".join(cell["source"])
               and cell.get("metadata", {}).get("papermill", {}).get("status") in ("running", "completed")
               for cell in nb["cells"])


def _step_running(root: Path, name: str) -> bool:
    rows: dict[int, dict[str, object]] = {}
    try:
        lines = (root / "events.jsonl").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        event = json.loads(line)
        if event["table"] == "steps":
            rows[event["row"]["index"]] = event["row"]
    return any(r["name"] == name for r in rows.values())   # started (running, or just over)


def _condition(root: Path, when: float | str) -> bool:
    if when == "domain":
        return _domain_running(root.name.rsplit("-", 1)[1])
    if isinstance(when, str) and when.startswith("step:"):
        return _step_running(root, when.removeprefix("step:"))
    return True


def _domain_running(run_id: str) -> bool:
    from ucnb.lab.registry import connect, tagged_domains

    return any(t.run_id == run_id and t.running for t in tagged_domains(connect()))


def _interrupt_at(outputs: Path, cell: str | None, when: float | str, signum: int) -> dict[str, object]:
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([*UCNB, "run", LANE, "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    root = None
    while True:
        assert proc.poll() is None, f"the lane ended before the moment came: {proc.stderr.read()}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the moment never came"
        root = root or _root(outputs)
        if root is not None and (cell is None or _cell_reached(root, cell)) and _condition(root, when):
            break
        time.sleep(0.05)
    if isinstance(when, float) and when:
        time.sleep(when)
    sent = time.monotonic()
    os.killpg(proc.pid, signum)   # the runner's process group, as a terminal sends Ctrl-C
    code = proc.wait(timeout=180)
    return {"code": code, "root": root, "stop_s": round(time.monotonic() - sent, 2),
            "stderr": proc.stderr.read() if proc.stderr else ""}


def _check(outcome: dict[str, object], moment: str, signame: str) -> None:
    root = outcome["root"]
    assert isinstance(root, Path)
    notebook = root / f"{LANE}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    landed = next(("".join(c.source).splitlines()[-1] for c in nb.cells
                   if c.get("metadata", {}).get("papermill", {}).get("status") in ("failed", "running")),
                  "no cell: the next one was never started")
    print(f"FIGURE ctrl-c {signame} at {moment}: exit {outcome['code']} in {outcome['stop_s']}s, "
          f"landed in: {landed}")
    assert outcome["code"] == 130, outcome["stderr"]
    result = json.loads((root / "result.json").read_text())
    assert result["error"]["kind"] == "interrupted" and result["verdict"] == "failed"
    assert signame in result["error"]["message"]
    assert (root / "SHA256SUMS").exists() and (root / f"{LANE}.html").exists()
    run_id = result["run_id"]
    assert settled(lambda: [*leftovers({run_id}), *map(str, kernel_processes({run_id}))], grace_s=1) == []


@pytest.mark.parametrize("moment, cell, when", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_ctrl_c_at_this_moment_ends_with_130_and_a_written_notebook(
        outputs: Path, lab_host: None, moment: str, cell: str | None, when: float | str) -> None:
    _check(_interrupt_at(outputs, cell, when, signal.SIGINT), moment, "SIGINT")


def test_sigterm_takes_the_same_path(outputs: Path, lab_host: None) -> None:
    _check(_interrupt_at(outputs, "lane.service_health(run, node)", 0.5, signal.SIGTERM),
           "service health", "SIGTERM")
