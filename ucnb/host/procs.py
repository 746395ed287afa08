"""Processes known by pid *and* start time, so a pid reused by a later process is never mistaken
for the one that was recorded (and never signalled).

A record says `{"pid": 1234, "start": 98765, "boot": "<boot id>"}`: `start` is the process's
start time in clock ticks since boot (`/proc/<pid>/stat`, field 22), `boot` the kernel's boot id
(pids and start times restart with every boot). Signals go through a pidfd opened before the
start time is compared, so the process checked is the process signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The runner names itself to the kernels it starts (pid:start), so a kernel knows who supervises it.
SUPERVISOR_ENV = "UCNB_SUPERVISOR"


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot); None when there is no such live process."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):   # a zombie has exited
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The process running as `pid` now, or None."""
        start = start_time(pid)
        return None if start is None else cls(pid, start, boot_id())

    @classmethod
    def current(cls) -> ProcessId:
        me = cls.of(os.getpid())
        assert me is not None
        return me

    @classmethod
    def supervisor(cls) -> ProcessId | None:
        """Who supervises this process: the runner that says so (SUPERVISOR_ENV), else the parent
        (papermill, a Jupyter server, a shell); None when orphaned (reparented to init)."""
        named = os.environ.get(SUPERVISOR_ENV, "")
        if named:
            parsed = cls.parse(named)
            if parsed is not None:
                return parsed
        parent = os.getppid()
        return None if parent <= 1 else cls.of(parent)

    def alive(self) -> bool:
        """True when this very process (same pid, start time and boot) still runs."""
        try:
            same_boot = self.boot == boot_id()
        except OSError:
            return False
        return same_boot and start_time(self.pid) == self.start

    def signal(self, signum: int = signal.SIGKILL) -> bool:
        """Send `signum` to this process if it is still the recorded one; True when sent."""
        if self.pid in (0, 1, os.getpid()):
            return False
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return False
        try:
            if not self.alive():   # checked after the pidfd is held: the pid cannot be reused now
                return False
            signal.pidfd_send_signal(fd, signum)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def __str__(self) -> str:
        return f"{self.pid}:{self.start}:{self.boot}"

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        """The inverse of str(): `pid:start:boot`; None when malformed."""
        pid, _, rest = text.partition(":")
        start, _, boot = rest.partition(":")
        if not (pid.isdigit() and start.isdigit() and boot):
            return None
        return cls(int(pid), int(start), boot)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ProcessId:
        """From a record's dict; raises ValueError when it is not one."""
        if not isinstance(data, dict) or set(data) != {"pid", "start", "boot"}:
            raise ValueError(f"not a process record: {data!r}")
        pid, start, boot = data["pid"], data["start"], data["boot"]
        if not (isinstance(pid, int) and isinstance(start, int) and isinstance(boot, str)) or pid < 1:
            raise ValueError(f"not a process record: {data!r}")
        return cls(pid, start, boot)


def command_line(pid: int) -> str:
    """A process's command line for messages (empty when gone)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""
