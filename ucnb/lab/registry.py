"""The labs on this host: their state files, and finding, stopping and cleaning them.

Apart from the Lab object (which drives one lab) because `ucnb lab clean`, the runner and a new
Lab all need to know every lab on the host without owning any.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from ucnb import paths
from ucnb.errors import InfrastructureError, ParameterError
from ucnb.lab import domain as domain_mod

LIBVIRT_URI = os.environ.get("UCNB_LIBVIRT_URI", "qemu:///system")
def connect() -> libvirt.virConnect:
    """Open libvirt, or explain how to start it."""
    try:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
        return libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        raise InfrastructureError(f"cannot reach libvirtd at {LIBVIRT_URI} ({exc}): run `ucnb host up`"
                                  ) from exc


@dataclass
class LabState:
    lab_id: str
    run_id: str
    owner_pid: int
    subnet: int
    network: str
    domains: list[str]
    keep: bool = False
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> address, serial_log
    created: float = field(default_factory=time.time)

    def save(self, directory: Path) -> None:
        (directory / "state.json").write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> LabState:
        return cls(**json.loads((directory / "state.json").read_text()))


def list_labs() -> list[LabState]:
    return [LabState.load(d) for d in sorted(paths.labs_dir().iterdir()) if (d / "state.json").exists()]


def destroy(lab_id: str, conn: libvirt.virConnect | None = None) -> list[str]:
    """Remove one lab's domains (in parallel), networks and files; returns what was removed."""
    conn = conn or connect()
    domains = [d for d in conn.listAllDomains() if d.name().startswith(domain_mod.domain_name(lab_id, ""))]
    networks = [n for n in conn.listAllNetworks()
                if n.name() == f"ucnb-{lab_id}" or n.name().startswith(f"ucnb-{lab_id}-")]

    def remove(obj: libvirt.virDomain | libvirt.virNetwork) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            obj.destroy()
        if isinstance(obj, libvirt.virDomain):
            with contextlib.suppress(libvirt.libvirtError):
                obj.undefine()

    for batch in (domains, networks):  # networks only once no domain is plugged into them
        if batch:
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                list(pool.map(remove, batch))
    removed = [f"domain {d.name()}" for d in domains] + [f"network {n.name()}" for n in networks]
    directory = paths.labs_dir() / lab_id
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"files {directory}")
    return removed


def clean(lab_id: str | None = None, run_id: str | None = None, include_kept: bool = True,
          kill_owner: bool = True, log: Callable[[str], None] = lambda _: None) -> list[str]:
    """Remove labs (all, one lab, or one run's) and any ucnb domain/network without a lab.

    An owning process that is still alive (a kernel orphaned by a killed runner) is stopped
    first, so nothing recreates what is being removed.
    """
    conn = connect()
    removed: list[str] = []
    for state in list_labs():
        if (lab_id and state.lab_id != lab_id) or (run_id and state.run_id != run_id):
            continue
        if state.keep and not include_kept:
            continue
        if kill_owner and state.owner_pid != os.getpid():
            removed += _stop_process(state.owner_pid)
        removed += destroy(state.lab_id, conn)
    if lab_id is None and run_id is None:  # orphans: ucnb objects with no lab folder
        for item in _orphans(conn):
            removed += destroy(item, conn)
    for line in removed:
        log(line)
    return removed


def _orphans(conn: libvirt.virConnect) -> Iterator[str]:
    known = {s.lab_id for s in list_labs()}
    for dom in conn.listAllDomains():
        if dom.name().startswith(domain_mod.DOMAIN_PREFIX):
            lab = dom.name()[len(domain_mod.DOMAIN_PREFIX):].split("-")[0]
            if lab not in known:
                yield lab
    for net in conn.listAllNetworks():
        lab = net.name()[5:].split("-")[0]
        if net.name().startswith("ucnb-") and lab not in known:
            yield lab


def _stop_process(pid: int) -> list[str]:
    """Stop a leftover owner (a python process: a kernel or runner); never anything else."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    if not any(b"python" in part for part in cmdline[:2]):
        return []
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return [f"process {pid} ({b' '.join(cmdline).decode(errors='replace')[:80]})"]


def find_node(node: str, lab_id: str | None = None) -> tuple[LabState, dict[str, str]]:
    """The newest lab (or the named one) that has this node."""
    for state in sorted(list_labs(), key=lambda s: s.created, reverse=True):
        if (lab_id is None or state.lab_id == lab_id) and node in state.nodes:
            return state, state.nodes[node]
    raise ParameterError(f"no lab{' ' + lab_id if lab_id else ''} has a node {node!r}; "
                         f"`ucnb lab status` lists them")


def stop(log: Callable[[str], None] = lambda _: None) -> list[str]:
    """Power off every lab's domains, keeping their files (clean removes them)."""
    conn = connect()
    stopped = []
    for state in list_labs():
        for name in state.domains:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
                stopped.append(f"domain {name}")
                log(f"stopped {name}")
    return stopped


def status_rows() -> list[dict[str, Any]]:
    """One row per node of every lab, for `ucnb lab status`."""
    conn = connect()
    active = {d.name(): d.isActive() for d in conn.listAllDomains()}
    rows = []
    for state in list_labs():
        for name, info in state.nodes.items():
            dom = domain_mod.domain_name(state.lab_id, name)
            rows.append({"lab": state.lab_id, "run": state.run_id, "node": name,
                         "address": info["address"], "domain": dom,
                         "state": "running" if active.get(dom) else "stopped",
                         "kept": state.keep, "owner_pid": state.owner_pid})
    return rows
