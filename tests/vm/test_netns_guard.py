"""The lab-namespace guard: no socket to a lab address from the host namespace; entering moves
only the calling thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from ucnb.host import netns

GUARD_PROBE = """
import socket
from ucnb.errors import LabNamespaceError
from ucnb.host import netns
from ucnb.image.keys import lab_keys
from ucnb.lab.ssh import GuestShell

def no_sockets(*args, **kwargs):
    raise SystemExit("a socket was opened to a lab address from the host namespace")

socket.create_connection = no_sockets
socket.socket.connect = no_sockets
assert not netns.inside()
keys = lab_keys()
shell = GuestShell("node01", "10.77.1.11", keys.client_private, keys.host_public)
for attempt in (shell.connect, lambda: shell.run("true")):
    try:
        attempt()
    except LabNamespaceError as exc:
        print("refused:", exc)
    else:
        raise SystemExit("connected")
"""


def test_guard_refuses_lab_addresses_outside_the_namespace(lab_host: None) -> None:
    """Outside the namespace a lab address is routed off the machine: no socket may be opened.

    Runs in a fresh process put in the host's namespace (that of pytest's parent, the shell or
    make that started it) whatever namespace an earlier test left this pytest thread in.
    """
    out = subprocess.run(["nsenter", f"--net=/proc/{os.getppid()}/ns/net", sys.executable, "-c", GUARD_PROBE],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("refused:") == 2
    assert "not in the lab network namespace" in out.stdout


def test_enter_moves_only_the_calling_thread(lab_host: None) -> None:
    seen: dict[str, bool] = {}
    before = netns.inside()

    def worker() -> None:
        netns.enter()
        seen["worker"] = netns.inside()
        child = threading.Thread(target=lambda: seen.__setitem__("child", netns.inside()))
        child.start()
        child.join()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": True, "child": True}
    assert netns.inside() == before  # the calling thread is where it was
