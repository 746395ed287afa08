"""Disk failures inside a guest with device-mapper, on a dedicated virtio disk, under a write loop.

The disk is mapped `linear` (a pass-through); for a window its table is swapped (suspend, load,
resume) for `error` (every I/O fails) or `flakey … error_writes` (writes fail, reads pass), then
back to `linear`. Meanwhile a loop writes one 4 KiB block per step (O_DIRECT, fsync) naming its
own number, and logs when each write started and ended (the guest's /proc/uptime, the clock the
window is measured by too) and how it ended. Judged afterwards: writes entirely before or after
the window succeed, writes entirely inside it fail, every acknowledged block reads back with its
content, and no failed block does. Writes that overlap a swap may go either way.

There is no udev in the guest: `DM_DISABLE_UDEV=1` makes dmsetup create `/dev/mapper/NAME`
itself (otherwise a write to that path silently creates a regular file on devtmpfs).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from ucnb.errors import LaneFailure
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import Node

BLOCK = 4096
FaultTable = Literal["error", "flakey"]
PHASES = ("before", "inside", "after", "boundary")
# What each fault table does to a read inside the window.
READS_INSIDE = {"error": "fail", "flakey": "pass"}

WRITE_LOOP = r"""
DEV=$1 LOG=$2 STOP=$3 MAX=$4 PAUSE=$5
i=0
: > "$LOG"
echo $$ > "$LOG.pid"
while [ ! -e "$STOP" ] && [ "$i" -lt "$MAX" ]; do
  i=$((i + 1))
  read s _ < /proc/uptime
  printf 'ucnb-blk %08d\n' "$i" |
    dd of="$DEV" bs=4096 count=1 seek="$i" conv=sync,fsync,notrunc oflag=direct 2>/dev/null
  r=$?
  read e _ < /proc/uptime
  echo "$i $s $e $r" >> "$LOG"
  sleep "$PAUSE"
done
rm -f "$LOG.pid"
"""


@dataclass(frozen=True)
class Write:
    index: int      # the block written, and the number its content names
    start: float    # guest uptime (s)
    end: float
    status: int     # dd's exit status: 0 acknowledged

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class Window:
    """Guest uptimes: the fault table swapped in between `in_start` and `in_end` (from then on
    every new I/O meets it), swapped back out between `out_start` and `out_end`."""

    in_start: float
    in_end: float
    out_start: float
    out_end: float

    def phase(self, write: Write) -> str:
        if write.end < self.in_start:
            return "before"
        if write.start > self.in_end and write.end < self.out_start:
            return "inside"
        if write.start > self.out_end:
            return "after"
        return "boundary"


def parse_writes(text: str) -> list[Write]:
    """The loop's log: `index start end status` per line (a line cut short by the stop is skipped)."""
    writes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit() and parts[3].isdigit():
            writes.append(Write(int(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])))
    return writes


def parse_blocks(text: str) -> set[int]:
    """Block numbers whose content survived (the read-back with the zero padding removed)."""
    return {int(m) for m in re.findall(r"ucnb-blk (\d{8})", text)}


@dataclass(frozen=True)
class Judgement:
    table: pd.DataFrame          # one row per phase
    phases: dict[str, dict[str, int]]   # the same, by phase
    writes: pd.DataFrame         # one row per write, with its phase and whether it reads back
    problems: list[str]          # what broke the expectations, each naming the writes

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(writes: list[Write], window: Window, present: set[int]) -> Judgement:
    """Each write's phase against the window, and the expectations of each phase."""
    frame = pd.DataFrame([{"index": w.index, "start": w.start, "end": w.end, "status": w.status,
                           "ok": w.ok, "phase": window.phase(w), "reads_back": w.index in present}
                          for w in writes], columns=["index", "start", "end", "status", "ok", "phase",
                                                     "reads_back"])
    problems: list[str] = []

    def named(rows: pd.DataFrame) -> str:
        blocks = [str(i) for i in rows["index"].head(10)]
        return ", ".join(blocks) + (" …" if len(rows) > 10 else "")

    frame = frame.astype({"ok": bool, "reads_back": bool})
    phases: dict[str, dict[str, int]] = {}
    for phase in PHASES:
        part = frame[frame["phase"] == phase]
        phases[phase] = {"writes": len(part), "acknowledged": int(part["ok"].sum()),
                         "failed": int((~part["ok"]).sum()),
                         "acknowledged, read back": int((part["ok"] & part["reads_back"]).sum()),
                         "failed, read back": int((~part["ok"] & part["reads_back"]).sum())}
        if phase == "boundary":
            continue
        if part.empty:
            problems.append(f"no write fell entirely {phase} the window")
        expected_ok = phase != "inside"
        wrong = part[part["ok"] != expected_ok]
        if not wrong.empty:
            problems.append(f"{len(wrong)} writes {phase} the window "
                            f"{'failed' if expected_ok else 'succeeded'} (blocks {named(wrong)})")
    lost = frame[frame["ok"] & ~frame["reads_back"]]
    if not lost.empty:
        problems.append(f"{len(lost)} acknowledged writes do not read back (blocks {named(lost)})")
    ghosts = frame[~frame["ok"] & frame["reads_back"]]
    if not ghosts.empty:
        problems.append(f"{len(ghosts)} failed writes read back anyway (blocks {named(ghosts)})")
    table = pd.DataFrame([{"phase": phase, **counts} for phase, counts in phases.items()])
    return Judgement(table, phases, frame, problems)


class DiskFault:
    """A device-mapper mapping over one of a guest's disks (by its virtio serial)."""

    def __init__(self, node: Node, serial: str, name: str = "ucnb-data") -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}", serial + name):
            raise ValueError(f"disk serial {serial!r} / mapping {name!r}: letters, digits, - and _ only")
        self.node, self.serial, self.name = node, serial, name
        self.mapped = f"/dev/mapper/{name}"
        self.log, self.stop_file = f"/run/{name}-writes.log", f"/run/{name}-writes.stop"
        self.device = ""
        self.sectors = 0

    def _run(self, command: str, timeout: float = 30.0) -> str:
        return self.node.run(f"export DM_DISABLE_UDEV=1; {command}", timeout=timeout, check=True).stdout

    def table(self, kind: Literal["linear", "error", "flakey"]) -> str:
        """The device-mapper table of one kind over the whole disk. flakey with up=0 is down for
        as long as it is loaded; `error_writes` fails writes and passes reads."""
        if kind == "linear":
            return f"0 {self.sectors} linear {self.device} 0"
        if kind == "error":
            return f"0 {self.sectors} error"
        return f"0 {self.sectors} flakey {self.device} 0 0 3600 1 error_writes"

    def prepare(self) -> pd.DataFrame:
        """Load the modules, find the disk, map it linear; what was found as a table."""
        self._run("modprobe dm_mod && modprobe dm_flakey")
        self.device = self._run(f"readlink -f /dev/disk/by-id/virtio-{self.serial}").strip()
        if not re.fullmatch(r"/dev/vd[a-z]+", self.device):
            raise LaneFailure(f"{self.node.name}: disk {self.serial} is {self.device!r}, not a virtio disk")
        self.sectors = int(self._run(f"blockdev --getsz {self.device}").strip())
        self._run(f"dmsetup create {self.name} --table {shlex.quote(self.table('linear'))}")
        self._run(f"test -b {self.mapped}")
        targets = self._run("dmsetup targets").split()
        return pd.DataFrame([{"node": self.node.name, "disk": f"virtio-{self.serial}", "device": self.device,
                              "sectors": self.sectors, "mapping": self.mapped,
                              "targets available": ", ".join(t for t in targets if t.isalpha())}])

    def start_writes(self, pause_s: float, max_blocks: int) -> None:
        """Start the write loop in the background, detached from this SSH session."""
        script = f"/run/{self.name}-writes.sh"
        self.node.run(f"cat > {script}", stdin=WRITE_LOOP, timeout=15, check=True)
        args = " ".join(shlex.quote(str(a)) for a in (self.mapped, self.log, self.stop_file,
                                                        int(max_blocks), f"{float(pause_s):.3f}"))
        self.node.run(f"rm -f {self.stop_file}; (setsid sh {script} {args} </dev/null >/dev/null 2>&1 &)",
                      timeout=15, check=True)
        wait_until(lambda: self.node.run(f"test -s {self.log}", timeout=10).ok, timeout=30,
                   what="the write loop's first write", node=self.node.name, recorder=self.node.lab.recorder)

    def swap(self, kind: Literal["linear", "error", "flakey"]) -> tuple[float, float]:
        """Swap the live table; the guest's uptime just before the suspend and just after the resume."""
        table = shlex.quote(self.table(kind))
        out = self._run(f"read a _ < /proc/uptime; dmsetup suspend {self.name} && "
                        f"dmsetup load {self.name} --table {table} && dmsetup resume {self.name} && "
                        f"read b _ < /proc/uptime && echo $a $b")
        before, after = (float(x) for x in out.split())
        return before, after

    def read_probe(self) -> bool:
        """Does a direct read of block 1 succeed right now?"""
        return self.node.run(f"dd if={self.mapped} of=/dev/null bs={BLOCK} count=1 skip=1 iflag=direct",
                             timeout=15).ok

    def uptime_offset(self) -> float:
        """Host time minus guest uptime (to place guest times on the run's clock)."""
        before = time.time()
        uptime = float(self.node.run("read u _ < /proc/uptime; echo $u", timeout=10, check=True).stdout)
        return (before + time.time()) / 2 - uptime

    def wait_writes(self, count: int, started_after: float, timeout: float = 60.0) -> None:
        """Wait until `count` writes that started after that guest uptime have completed (so each
        phase holds some writes however slowly a loaded host runs the loop)."""
        def done() -> bool:
            writes = parse_writes(self._run(f"cat {self.log}"))
            return sum(1 for w in writes if w.start > started_after) >= count
        wait_until(done, timeout=timeout, what=f"{count} writes after uptime {started_after:.2f}",
                   node=self.node.name, interval=0.3, recorder=self.node.lab.recorder)

    def stop_writes(self, timeout: float = 30.0) -> list[Write]:
        """Stop the loop after its current write and return its log."""
        self.node.run(f"touch {self.stop_file}", timeout=10, check=True)
        wait_until(lambda: not self.node.run(f"test -e {self.log}.pid", timeout=10).ok, timeout=timeout,
                   what="the write loop to stop", node=self.node.name, recorder=self.node.lab.recorder)
        return parse_writes(self._run(f"cat {self.log}"))

    def present(self, blocks: int) -> set[int]:
        """Block numbers (1..blocks) that read back, directly from the disk, with their own content."""
        read = f"dd if={self.mapped} bs={BLOCK} skip=1 count={int(blocks)} iflag=direct 2>/dev/null"
        return parse_blocks(self._run(f"{read} | tr -d '\\000'", timeout=60))

    def remove(self) -> None:
        self._run(f"dmsetup remove {self.name}")
