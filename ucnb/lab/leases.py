"""Leases: what a process holds that would outlive it if it were killed (a temporary or staging
folder, a helper process such as sushy-emulator, a libvirt storage pool, a secrets file).

A lease is written (atomically, under `<work>/leases/`) *before* the thing exists and removed
after it is gone, naming its owner and supervisor by pid and start time. `ucnb lab clean`
reclaims the leases whose owner or supervisor is gone: it stops the recorded processes (only if
each is still the very process recorded), destroys the recorded pools (only if the pool's target
is the recorded folder) and removes the recorded paths (only below the work root). A lease file
that does not parse is reported and left alone, never followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ucnb import files, paths
from ucnb.host.procs import ProcessId

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}-[0-9a-f]{12}$")
POOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TEMP_PREFIX = ".ucnb-tmp-"


def leases_dir() -> Path:
    path = paths.work_root() / "leases"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def inside_work_root(path: Path) -> bool:
    """A plain absolute path strictly below the work root (no `..`, not the root itself)."""
    root = paths.work_root()
    return path.is_absolute() and ".." not in path.parts and root in path.parents


@dataclass
class Pool:
    """A libvirt storage pool, known by its name and the folder it serves."""

    name: str
    target: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "target": self.target}


@dataclass
class Lease:
    kind: str
    owner: ProcessId
    supervisor: ProcessId | None
    run_id: str = ""
    paths: list[str] = field(default_factory=list)          # files or folders, removed whole
    processes: list[ProcessId] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    name: str = ""
    created: float = field(default_factory=time.time)

    @property
    def file(self) -> Path:
        return leases_dir() / f"{self.name}.json"

    def save(self) -> Lease:
        data = {"kind": self.kind, "owner": self.owner.to_json(),
                "supervisor": self.supervisor.to_json() if self.supervisor else None,
                "run_id": self.run_id, "paths": self.paths,
                "processes": [p.to_json() for p in self.processes],
                "pools": [p.to_json() for p in self.pools], "created": self.created}
        files.atomic_write_text(self.file, json.dumps(data, indent=2) + "\n", mode=0o600)
        return self

    def release(self) -> None:
        """The holder removed what it held: forget the lease."""
        self.file.unlink(missing_ok=True)

    def abandoned(self) -> bool:
        """Its owner, or the owner's supervisor, is gone: nobody will remove what it holds."""
        return not self.owner.alive() or (self.supervisor is not None and not self.supervisor.alive())

    def describe(self) -> str:
        held = [*self.paths, *(f"pid {p.pid}" for p in self.processes),
                *(f"pool {p.name}" for p in self.pools)]
        return f"{self.kind} lease {self.name} ({', '.join(held) or 'nothing'})"


def take(kind: str, *, paths: list[Path] | None = None, processes: list[ProcessId] | None = None,
         pools: list[Pool] | None = None, run_id: str | None = None) -> Lease:
    """Record what this process is about to hold (before it exists)."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"lease kind {kind!r} is not a plain name")
    for path in paths or []:
        if not inside_work_root(path):
            raise ValueError(f"a lease holds paths below the work root only, not {path}")
    lease = Lease(kind, ProcessId.current(), ProcessId.supervisor(),
                  os.environ.get("UCNB_RUN_ID", "") if run_id is None else run_id,
                  [str(p) for p in paths or []], list(processes or []), list(pools or []),
                  name=f"{kind}-{secrets.token_hex(6)}")
    return lease.save()


def load(path: Path) -> Lease:
    """A lease file, strictly: raises ValueError on anything that is not one of ours."""
    stem = path.name.removesuffix(".json")
    if not NAME_PATTERN.match(stem) or not path.name.endswith(".json"):
        raise ValueError("not a lease file name")
    data: Any = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a mapping")
    kind, run_id = data.get("kind"), data.get("run_id", "")
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind) or not isinstance(run_id, str):
        raise ValueError("bad kind or run id")
    held_paths = data.get("paths", [])
    if not isinstance(held_paths, list) or not all(
            isinstance(p, str) and inside_work_root(Path(p)) for p in held_paths):
        raise ValueError("a held path is not below the work root")
    pools = []
    for pool in data.get("pools", []):
        if (not isinstance(pool, dict) or not isinstance(pool.get("name"), str)
                or not POOL_PATTERN.match(pool["name"]) or not isinstance(pool.get("target"), str)):
            raise ValueError("bad pool record")
        pools.append(Pool(pool["name"], pool["target"]))
    supervisor = data.get("supervisor")
    return Lease(kind, ProcessId.from_json(data.get("owner")),
                 None if supervisor is None else ProcessId.from_json(supervisor), run_id, held_paths,
                 [ProcessId.from_json(p) for p in data.get("processes", [])], pools, name=stem,
                 created=float(data.get("created", 0)))


def all_leases() -> tuple[list[Lease], list[str]]:
    """Every lease on record, and a line for each file that is not a valid lease (left alone)."""
    found, problems = [], []
    for path in sorted(leases_dir().iterdir()):
        if path.name.startswith("."):   # an atomic write in progress
            continue
        try:
            found.append(load(path))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"skipped {path}: not a valid lease ({exc})")
    return found, problems


def reclaim(lease: Lease) -> list[str]:
    """Remove what an abandoned lease holds, then the lease; returns what was removed."""
    removed = []
    for process in lease.processes:
        if _stop(process):
            removed.append(f"process {process.pid} ({lease.kind})")
    for pool in lease.pools:
        if _destroy_pool(pool):
            removed.append(f"storage pool {pool.name}")
    for held in map(Path, lease.paths):
        if _remove_path(held):
            removed.append(f"{lease.kind} {held}")
    lease.release()
    return removed


def _stop(process: ProcessId) -> bool:
    if not process.signal(signal.SIGTERM):
        return False
    deadline = time.monotonic() + 5
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.signal(signal.SIGKILL)
    return True


def _destroy_pool(pool: Pool) -> bool:
    import libvirt

    from ucnb.lab.registry import connect

    try:
        found = connect().storagePoolLookupByName(pool.name)
    except libvirt.libvirtError:
        return False
    import xml.etree.ElementTree as ET

    target = ET.fromstring(found.XMLDesc(0)).findtext("target/path") or ""
    if os.path.normpath(target) != os.path.normpath(pool.target):   # not the pool we made
        return False
    with contextlib.suppress(libvirt.libvirtError):
        found.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        found.undefine()
    return True


def _remove_path(path: Path) -> bool:
    if not inside_work_root(path) or not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
    return True


@contextlib.contextmanager
def temp_dir(parent: Path, purpose: str, run_id: str | None = None) -> Iterator[Path]:
    """A fresh private folder (0700) under `parent` (below the work root), leased for the time
    of the block and removed after it, so a killed process's folder is reclaimed by clean."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{TEMP_PREFIX}{purpose}-{secrets.token_hex(6)}"
    lease = take(f"temp-{purpose}", paths=[path], run_id=run_id)
    try:
        path.mkdir(mode=0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        lease.release()
