"""The kernel `ucnb run` starts, in place of ipykernel's own launcher (`python -m ipykernel_launcher`):

- ucnb's kernel side (pandas, libvirt, the lab layer, paramiko: about 0.6 s of imports) is
  imported in a thread once the kernel is up, while the runner connects and sends the first
  cells, rather than before the kernel answers; a cell that imports one of them first waits
  for that import (Python's per-module import locks);
- no debugger: a headless run has no client for it, and debugpy's import costs about 0.13 s
  (JupyterLab's kernels, started by the standard launcher, keep theirs);
- with `--handover`, a spare started before the run is known (`ucnb.runner.prestart`): it does
  those imports first, then waits for its launch on stdin (one JSON line: the kernel's arguments,
  environment, working directory) and goes on as if launched with them; EOF instead (the CLI
  refused the run or died) ends it;
- it ends without the interpreter's teardown (`ucnb.fastexit`) once the runner has shut it down.
"""

import contextlib
import importlib
import json
import os
import sys
import threading
from pathlib import Path

PRELOAD = ("ucnb.kernel.run", "paramiko")   # every lane's first cells use them
HANDOVER = "--handover"


def preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(Exception):   # a failing import fails again, and is shown, in its cell
            importlib.import_module(name)


def handed_over() -> None:
    """Become the kernel the launch on stdin describes; EOF or a malformed launch: exit."""
    line = sys.stdin.buffer.readline()
    try:
        launch = json.loads(line)
        argv, env, cwd = list(map(str, launch["argv"])), dict(launch["env"]), str(launch["cwd"])
    except (ValueError, KeyError, TypeError):
        os._exit(0 if not line else 2)   # EOF: nobody wants this kernel
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv[1:] = argv


if __name__ == "__main__":
    # As ipykernel_launcher: the working directory off sys.path while ipykernel loads (its shell
    # puts it back).
    if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
        del sys.path[0]
    sys.modules.setdefault("debugpy", None)  # type: ignore[arg-type]  # ipykernel then runs without

    from ipykernel import kernelapp

    from ucnb import fastexit

    spare = sys.argv[1:2] == [HANDOVER]
    importing = threading.Thread(target=preload, name="import-ucnb", daemon=True)
    if spare:
        importing.start()
        handed_over()
    app = kernelapp.IPKernelApp.instance()
    app.initialize()
    if not spare:
        importing.start()
    app.start()
    fastexit.end(0)
