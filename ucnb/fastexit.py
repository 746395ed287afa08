"""Ending a process without the interpreter's teardown.

The runner and its kernel hold papermill, nbconvert, pandas, matplotlib…: Python's own
finalisation of them (clearing every module, a last garbage collection) took 0.3-0.6 s of CPU at
the end of every run here, on the lane's critical path, and nothing depends on it. Once the
process exits as usual (its non-daemon threads joined), every exit handler still runs (a lab's
teardown, logging's flush) and the standard streams are flushed; only the teardown is skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys


def skip_teardown(status: int = 0) -> None:
    """When this process exits, end it with `status` right after its exit handlers."""

    def end() -> None:
        atexit.unregister(end)
        atexit._run_exitfuncs()   # the handlers registered before this one (it runs first: LIFO)
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if isinstance(stream, io.TextIOWrapper):   # a file, not a kernel's OutStream (its thread is gone)
                with contextlib.suppress(Exception):
                    stream.flush()
        os._exit(status)

    atexit.register(end)


def exit_status(code: object) -> int:
    """The status a `SystemExit(code)` ends a process with (None is 0; a message is 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1
