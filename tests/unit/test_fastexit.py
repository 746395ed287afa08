"""A process that skips the interpreter's teardown still joins its threads, runs its exit handlers,
flushes its output and ends with its status."""

from __future__ import annotations

import subprocess
import sys

from ucnb import fastexit

from ..conftest import ROOT

PROGRAM = """
import atexit, sys, threading, time
from ucnb import fastexit

class Teardown:
    def __del__(self):
        print("teardown ran", flush=True)

kept = Teardown()                      # freed by the interpreter's teardown, if it runs
atexit.register(print, "earlier handler ran")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished"))).start()
fastexit.skip_teardown(int(sys.argv[1]))
sys.stdout.write("buffered, unflushed")
"""


def run(status: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, str(status)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_the_threads_handlers_and_output_come_first_then_the_status_without_teardown() -> None:
    done = run(3)
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["buffered, unflushedthread finished", "earlier handler ran"]


def test_without_it_the_teardown_runs() -> None:   # the control: the program above can tell
    done = subprocess.run([sys.executable, "-c", PROGRAM.replace("fastexit.skip_teardown", "int"), "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "teardown ran" in done.stdout


def test_exit_statuses_are_those_of_system_exit() -> None:
    assert [fastexit.exit_status(c) for c in (None, 0, 2, "a message")] == [0, 0, 2, 1]
