"""A process that exits with a lab up and no teardown (a kernel shut down before `run.finish()`,
as JupyterLab's "Shut Down Kernel" does) still removes its lab at interpreter exit: the parallel
destroy falls back to one domain after another when no new thread may start."""

from __future__ import annotations

import subprocess
import sys

from ..lab_fixtures import leftovers

SCRIPT = r"""
import sys
from ucnb import profiles
from ucnb.host.accel import choose
from ucnb.image import build_image
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

image = build_image(profiles.load("lab"))
lab = Lab([NodeConfig("node01"), NodeConfig("node02")], image, choose(image, connect()))
for node in lab.nodes.values():
    node.start()
print(lab.lab_id, flush=True)
sys.exit(0)   # no teardown: only the interpreter's exit handlers are left
"""


def test_a_lab_is_removed_at_interpreter_exit(lab_image, accelerator) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lab_id = done.stdout.split()[-1]
    assert leftovers(set(), {lab_id}) == []


def test_a_lab_whose_process_dies_without_exit_handlers_is_removed_by_its_watcher(
        lab_image, accelerator) -> None:  # type: ignore[no-untyped-def]
    """ipykernel calls `os._exit` when its parent dies, and a killed kernel runs nothing: the lab's
    watcher process, which outlives its owner, removes the lab then."""
    import time

    script = SCRIPT.replace("sys.exit(0)   # no teardown: only the interpreter's exit handlers are left",
                            "import os; os._exit(1)   # no exit handlers at all")
    assert "os._exit(1)" in script
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lab_id = done.stdout.split()[-1]
    deadline = time.monotonic() + 30
    while (left := leftovers(set(), {lab_id})) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []
