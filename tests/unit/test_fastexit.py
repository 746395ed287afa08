"""A process that ends without the interpreter's teardown still joins its threads (an executor's
too), runs each exit handler once, flushes its output and ends with its status."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ucnb import fastexit

from ..conftest import ROOT

PROGRAM = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from ucnb import fastexit

class Teardown:
    def __del__(self):
        print("teardown ran", flush=True)

kept = Teardown()                      # freed by the interpreter's teardown, if it runs
atexit.register(print, "handler ran")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished"))).start()
pool = ThreadPoolExecutor(1)           # an idle worker: the interpreter's exit wakes it to end
pool.submit(print, "pooled").result()
sys.stdout.write("buffered, ")
if sys.argv[1] != "plain":
    fastexit.end(int(sys.argv[1]))
"""


def run(how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_threads_handlers_and_output_come_first_then_the_status_without_the_teardown() -> None:
    done = run("3")
    assert done.returncode == 3
    assert sorted(done.stdout.splitlines()) == ["buffered, thread finished", "handler ran", "pooled"]


def test_a_plain_exit_runs_the_teardown() -> None:   # the control: the program above can tell
    done = run("plain")
    assert done.returncode == 0 and "teardown ran" in done.stdout


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), ("a message", 1)])
def test_the_status_is_system_exits(code: object, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert fastexit.status_of(SystemExit(code)) == status
    assert capsys.readouterr().err == ("a message\n" if isinstance(code, str) else "")
