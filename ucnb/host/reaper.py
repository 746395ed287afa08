"""A child subreaper for libvirtd and the QEMU processes it daemonises.

libvirtd double-forks QEMU, so an exited QEMU is reparented to the nearest subreaper, else to
PID 1. Without systemd, PID 1 may reap late: on these machines about 1.8 s, and libvirt waits
for the reap before `destroy()` returns. Running libvirtd under this reaper makes every power
loss and teardown return as soon as QEMU exits.

Usage: python -m ucnb.host.reaper COMMAND... (returns once every descendant has exited).
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 3
    pid = os.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    status = 0
    while True:
        try:
            child, code = os.wait()
        except ChildProcessError:
            return status  # nothing left to reap: libvirtd and every QEMU have exited
        if child == pid:
            status = os.waitstatus_to_exitcode(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
