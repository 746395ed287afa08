"""The kernel `ucnb run` starts, in place of ipykernel's own launcher (`python -m ipykernel_launcher`):

- ucnb's kernel side (pandas, libvirt, the lab layer, paramiko: about 0.6 s of imports) is
  imported in a thread once the kernel is up, while the runner connects and sends the first
  cells, rather than before the kernel answers; a cell that imports one of them first waits
  for that import (Python's per-module import locks);
- no debugger: a headless run has no client for it, and debugpy's import costs about 0.13 s
  (JupyterLab's kernels, started by the standard launcher, keep theirs);
- it ends without the interpreter's teardown (`ucnb.fastexit`) once the runner has shut it down.
"""

import contextlib
import importlib
import sys
import threading
from pathlib import Path

PRELOAD = ("ucnb.kernel.run", "paramiko")   # every lane's first cells use them


def preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(Exception):   # a failing import fails again, and is shown, in its cell
            importlib.import_module(name)


if __name__ == "__main__":
    # As ipykernel_launcher: the working directory off sys.path while ipykernel loads (its shell
    # puts it back).
    if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
        del sys.path[0]
    sys.modules.setdefault("debugpy", None)  # type: ignore[arg-type]  # ipykernel then runs without

    from ipykernel import kernelapp

    from ucnb import fastexit

    app = kernelapp.IPKernelApp.instance()
    app.initialize()
    threading.Thread(target=preload, name="import-ucnb", daemon=True).start()
    app.start()
    fastexit.end(0)
