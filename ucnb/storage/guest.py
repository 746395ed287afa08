"""fio inside a guest: the same jobs as on the host, over SSH, against the guest's benchmark disk.

fio comes from the guest's tools disk (Debian's build, see ucnb.image.tools); every argv is built
by `fio_argv` from validated values and quoted with shlex.join before it travels as a shell
string. fio writes its JSON into the guest's /tmp; the text is copied back into `results` on the
host (the proof root's fio/ folder), and the table is parsed from that copy.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from .fio import FioError, FioJob, FioMatrix, checked_output, fill_argv, fio_argv, job_timeout, parse

GUEST_DIR = "/tmp/ucnb-fio"


class CommandOutcome(Protocol):
    exit_status: int | None
    stdout: str
    stderr: str


class Shell(Protocol):
    """What a guest gives us: a lab Node (`ucnb.lab.lab.Node`) or anything that runs commands."""

    name: str

    def run(self, command: str, timeout: float = 30.0, check: bool = False,
            stdin: str | None = None) -> Any: ...


class GuestBench:
    """One guest's fio against `device` (a by-id path of its blank benchmark disk)."""

    def __init__(self, node: Shell, matrix: FioMatrix, fio: str, device: str, results: Path) -> None:
        self.node, self.matrix, self.fio, self.device = node, matrix, fio, device
        self.results = results
        results.mkdir(parents=True, exist_ok=True)

    def version(self) -> str:
        """`fio --version` in the guest (e.g. fio-3.33): proves the tools disk runs there."""
        done = self.node.run(shlex.join([self.fio, "--version"]), timeout=30)
        if done.exit_status != 0 or not done.stdout.strip().startswith("fio-"):
            raise FioError(f"{self.node.name}: {self.fio} --version failed: {done}")
        return str(done.stdout.strip())

    def _run(self, argv: list[str], out: str, local: Path, timeout: float, what: str) -> dict[str, Any]:
        ran: CommandOutcome = self.node.run(f"mkdir -p {GUEST_DIR} && rm -f {shlex.quote(out)} && "
                                            f"{shlex.join(argv)}", timeout=timeout)
        if ran.exit_status is None:
            raise FioError(f"{self.node.name}: fio {what}: no result within {timeout:.0f} s", job=what)
        quoted = shlex.quote(out)
        copied: CommandOutcome = self.node.run(f"cat {quoted} 2>/dev/null; rm -f {quoted}", timeout=30)
        local.write_text(copied.stdout)
        try:
            return checked_output(copied.stdout, ran.exit_status, ran.stderr, what)
        except FioError as exc:
            raise FioError(f"{self.node.name}: {exc}", job=exc.job, error=exc.error) from None

    def fill(self, timeout_s: float = 900) -> dict[str, Any]:
        """Write the benchmark region once before any job: unwritten (sparse, qcow2) regions read
        as zeros without touching the disk."""
        out = f"{GUEST_DIR}/fill.json"
        argv = fill_argv(self.matrix, self.device, out, self.fio)
        return self._run(argv, out, self.results / f"guest-{self.node.name}-fill.json", timeout_s, "fill")

    def job(self, job: FioJob, rep: int) -> pd.DataFrame:
        """One job as repetition `rep`: its tidy rows (side "guest")."""
        out = f"{GUEST_DIR}/{job.name}.json"
        local = self.results / f"guest-{self.node.name}-{job.name}-rep{rep}.json"
        data = self._run(fio_argv(job, self.matrix, self.device, out, self.fio), out, local,
                         job_timeout(self.matrix), job.name)
        return parse(data, rep=rep, side="guest")
