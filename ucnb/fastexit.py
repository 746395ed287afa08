"""Ending a process without the interpreter's teardown.

The runner and its kernel hold papermill, nbconvert, pandas, matplotlib…: Python's own
finalisation of them (clearing every module, a last garbage collection) took 0.3-0.6 s of CPU at
the end of every run here, on the lane's critical path, and nothing depends on it. `end` does
what the interpreter's exit does before that teardown (its threads joined, every exit handler
run: a lab's teardown, logging's flush; the standard streams flushed), then `os._exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
import threading
from typing import NoReturn


def end(status: int) -> NoReturn:
    """End this process with `status`, from its main thread, at the end of its main."""
    threading._shutdown()   # type: ignore[attr-defined]  # the interpreter's first exit step: threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if isinstance(stream, io.TextIOWrapper):   # a file, not a kernel's stream (its thread is gone)
            with contextlib.suppress(OSError, ValueError):   # a closed pipe: nothing left to say
                stream.flush()
    os._exit(status)


def status_of(exc: SystemExit) -> int:
    """The status `exc` ends a process with, as the interpreter has it (a message is printed, 1)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1
