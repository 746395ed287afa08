"""A lab's watcher: a small process that removes the lab once the process that owns it is gone.

A lab's own process removes it at teardown or at interpreter exit, but a Jupyter kernel does not
always get that far: ipykernel calls `os._exit` when its parent (the server) dies, and a kernel
killed outright runs nothing at all. So a lab that no runner supervises (a kernel under JupyterLab
or plain papermill; `ucnb run` cleans its own runs' labs) gets a watcher in its own session, which
outlives the kernel. It polls the lab's state file: a kept lab, or a lab whose folder is gone
(torn down), ends the watch; an owner (or its supervisor) no longer alive gets the lab destroyed.

    python -m ucnb.lab.watcher LAB_ID
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ucnb import paths
from ucnb.lab.registry import LabState, destroy

POLL_S = 0.5


def verdict(directory: Path) -> str:
    """What to do about the lab in `directory` now: "wait", "stop" (kept, gone, or not a lab
    state the watcher can trust) or "clean" (its owner is gone)."""
    if not (directory / "state.json").exists():
        return "stop"
    try:
        state = LabState.load(directory)
    except (OSError, ValueError, TypeError):
        return "stop"
    if state.keep:
        return "stop"
    return "wait" if state.owner_alive() else "clean"


def watch(lab_id: str, poll_s: float = POLL_S) -> str:
    """Watch one lab until its watch ends; returns the last verdict."""
    directory = paths.labs_dir() / lab_id
    while (now := verdict(directory)) == "wait":
        time.sleep(poll_s)
    if now == "clean":   # nobody is left who could keep it meanwhile
        destroy(lab_id, state=LabState.load(directory))
    return now


def spawn(lab_id: str) -> subprocess.Popen[bytes]:
    """Start the watcher of `lab_id` in its own session (a kernel's process group may be killed
    whole), with the work root this process uses, and nothing of this process's terminal."""
    env = {**os.environ, "ULTRACLOUD_WORK_ROOT": str(paths.work_root())}
    return subprocess.Popen([sys.executable, "-m", "ucnb.lab.watcher", lab_id], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """End a watcher this process started (its lab was torn down or kept)."""
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(timeout=5)


if __name__ == "__main__":
    watch(sys.argv[1])
