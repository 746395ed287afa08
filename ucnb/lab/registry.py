"""The labs on this host: their state files, and finding, stopping and cleaning them.

Apart from the Lab object (which drives one lab) because `ucnb lab clean`, the runner and a new
Lab all need to know every lab on the host without owning any.

Cleaning never trusts more than it can check: a lab's folder is `<labs>/<id>` for a plain id that
matches its state file (a state file that does not parse, or names another id, is reported and
skipped); its owner is a process known by pid *and* start time (a later process reusing the pid
is never signalled); its domains are those libvirt tags with ucnb's metadata for this labs folder
and this lab, and its networks those its state file (or such a domain) names — never anything
picked by a name prefix alone. With no lab named, only labs nobody runs any more are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from ucnb import files, paths
from ucnb.errors import InfrastructureError, ParameterError
from ucnb.host import netns
from ucnb.host.procs import ProcessId
from ucnb.lab import domain as domain_mod
from ucnb.lab import leases

LIBVIRT_URI = os.environ.get("UCNB_LIBVIRT_URI", "qemu:///system")
LAB_ID_PATTERN = re.compile(r"^[a-z0-9]{1,32}$")
QEMU_PID_DIR = Path("/run/libvirt/qemu")   # qemu:///system's pid file of each running guest
# One lock for every lab on the host, whatever its work root: subnets, bridges and domain names
# are host-wide.
HOST_LOCK = Path(os.environ.get("UCNB_LOCK_DIR", "/run/lock")) / "ucnb-labs.lock"
T = TypeVar("T")
R = TypeVar("R")


def connect() -> libvirt.virConnect:
    """Open libvirt, or explain how to start it."""
    try:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
        return libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        raise InfrastructureError(f"cannot reach libvirtd at {LIBVIRT_URI} ({exc}): run `ucnb host up`"
                                  ) from exc


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Held while a lab reserves its id, subnet and networks, and while clean removes folders."""
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(HOST_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def valid_lab_id(lab_id: str) -> bool:
    return bool(LAB_ID_PATTERN.match(lab_id))


def network_names(lab_id: str, count: int) -> list[str]:
    """The names of a lab's networks: `ucnb-<lab>`, then `ucnb-<lab>-1`…"""
    return [f"ucnb-{lab_id}" + (f"-{i}" if i else "") for i in range(count)]


@dataclass
class LabState:
    lab_id: str
    run_id: str
    owner: ProcessId | None            # None: a state file from before owners had start times
    subnet: int
    networks: list[str]
    domains: list[str]
    keep: bool = False
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> address, serial_log
    created: float = field(default_factory=time.time)
    supervisor: ProcessId | None = None
    owner_pid: int = 0                 # the owner's pid, also for state files without `owner`

    @property
    def network(self) -> str:
        return self.networks[0] if self.networks else f"ucnb-{self.lab_id}"

    def save(self, directory: Path) -> None:
        data = {"lab_id": self.lab_id, "run_id": self.run_id,
                "owner": self.owner.to_json() if self.owner else None,
                "supervisor": self.supervisor.to_json() if self.supervisor else None,
                "owner_pid": self.owner.pid if self.owner else self.owner_pid, "subnet": self.subnet,
                "networks": self.networks, "domains": self.domains, "keep": self.keep,
                "nodes": self.nodes, "created": self.created}
        files.atomic_write_text(directory / "state.json", json.dumps(data, indent=2) + "\n", mode=0o600)

    @classmethod
    def load(cls, directory: Path) -> LabState:
        """A lab's state, strictly: ValueError (with why) for a file that is not one of ours."""
        data: Any = json.loads((directory / "state.json").read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        lab_id = data.get("lab_id")
        if not isinstance(lab_id, str) or not valid_lab_id(lab_id) or lab_id != directory.name:
            raise ValueError(f"lab_id {lab_id!r} is not the plain id of its folder {directory.name!r}")
        networks = data.get("networks", [data.get("network")])
        domains = data.get("domains", [])
        if not isinstance(networks, list) or not all(
                isinstance(n, str) and (n == f"ucnb-{lab_id}" or re.fullmatch(rf"ucnb-{lab_id}-\d", n))
                for n in networks):
            raise ValueError("networks are not this lab's")
        if not isinstance(domains, list) or not all(
                isinstance(d, str) and d.startswith(domain_mod.domain_name(lab_id, "")) for d in domains):
            raise ValueError("domains are not this lab's")
        subnet, owner_pid = data.get("subnet"), data.get("owner_pid", 0)
        if not isinstance(subnet, int) or not 1 <= subnet <= 254 or not isinstance(owner_pid, int):
            raise ValueError("subnet or owner_pid out of range")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, dict):
            raise ValueError("nodes is not a mapping")
        owner, supervisor = data.get("owner"), data.get("supervisor")
        return cls(lab_id, str(data.get("run_id", "")),
                   None if owner is None else ProcessId.from_json(owner), subnet, networks, domains,
                   bool(data.get("keep", False)), nodes, float(data.get("created", 0)),
                   None if supervisor is None else ProcessId.from_json(supervisor), owner_pid)

    def owner_alive(self) -> bool:
        """Someone still runs this lab: its owner and the owner's supervisor are both alive. A
        state file without start times counts as alive while any process has its pid."""
        if self.owner is None:
            return self.owner_pid > 0 and Path(f"/proc/{self.owner_pid}").exists()
        return self.owner.alive() and (self.supervisor is None or self.supervisor.alive())


@dataclass
class Scan:
    """What the labs folder holds: valid labs, files that are not, and folders with no state."""

    labs: list[LabState]
    problems: list[str]
    stateless: list[Path]
    unreadable: set[str] = field(default_factory=set)   # ids of folders whose state is not valid


def scan() -> Scan:
    labs, problems, stateless, unreadable = [], [], [], set()
    for directory in sorted(paths.labs_dir().iterdir()):
        if directory.name.startswith("."):
            continue
        if directory.is_symlink():
            problems.append(f"skipped {directory}: a symlink, never followed")
            unreadable.add(directory.name)
            continue
        if not directory.is_dir():
            continue
        if not (directory / "state.json").exists():
            stateless.append(directory)
            continue
        try:
            labs.append(LabState.load(directory))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"skipped {directory}: its state.json is not a valid lab state ({exc})")
            unreadable.add(directory.name)
    return Scan(labs, problems, stateless, unreadable)


def list_labs() -> list[LabState]:
    """Every lab with a valid state file (the others are reported by `scan`)."""
    return scan().labs


# -- libvirt objects ucnb recognises as its own --------------------------------------------------
@dataclass(frozen=True)
class TaggedDomain:
    """A domain carrying ucnb's metadata for this labs folder, as its definition read at listing
    time said (one read: another run's teardown may remove it at any moment after)."""

    domain: libvirt.virDomain
    lab_id: str
    run_id: str
    owner: ProcessId | None
    networks: tuple[str, ...]   # its NICs' networks that are named for its own lab

    @property
    def running(self) -> bool:
        """Whether it runs now; False once it is gone."""
        try:
            return bool(self.domain.isActive())
        except libvirt.libvirtError:
            return False


_NS = {"ucnb": domain_mod.METADATA_NS}


def _lab_networks(xml: ET.Element, lab_id: str) -> tuple[str, ...]:
    names = {(s.get("network") or "") for s in xml.iterfind("devices/interface/source")}
    return tuple(sorted(n for n in names if n == f"ucnb-{lab_id}" or re.fullmatch(rf"ucnb-{lab_id}-\d", n)))


def tagged_domains(conn: libvirt.virConnect) -> list[TaggedDomain]:
    """Every domain whose ucnb metadata names this labs folder (other work roots' are not ours);
    one that vanishes while being listed is not listed."""
    ours = str(paths.labs_dir())
    found = []
    for dom in conn.listAllDomains():
        try:
            xml = ET.fromstring(dom.XMLDesc(0))
        except (libvirt.libvirtError, ET.ParseError):
            continue   # gone since the listing
        meta = xml.find("metadata/ucnb:lab", _NS)
        if meta is None:
            continue   # not a ucnb domain
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in meta}
        lab_id = fields.get("lab", "")
        if fields.get("labs") != ours or not valid_lab_id(lab_id):
            continue
        owner = ProcessId.parse(fields.get("owner", ""))
        found.append(TaggedDomain(dom, lab_id, fields.get("run", ""), owner, _lab_networks(xml, lab_id)))
    return found


def _parallel(action: Callable[[T], R], items: list[T]) -> list[R]:
    """Run `action` on every item in parallel, returning its results in order; sequentially at
    interpreter exit, when no new thread may start (a lab torn down by an atexit handler)."""
    if not items:
        return []
    try:
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            return list(pool.map(action, items))
    except RuntimeError:   # "cannot schedule new futures after interpreter shutdown"
        return [action(item) for item in items]


def _kill_guest(name: str, reaped_within_s: float = 1.0) -> bool:
    """SIGKILL the QEMU of domain `name` and wait until it is reaped, so that libvirt's destroy
    finds it gone: after its own SIGTERM libvirt polls the process every 200 ms, which made
    every teardown 0.2 s longer than QEMU takes to exit. Only a process whose command line is
    that domain's guest; without its pid file (another libvirt URI) destroy does it all.
    True when this killed it and it is gone."""
    try:
        pid = int((QEMU_PID_DIR / f"{name}.pid").read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if f"guest={name}".encode() not in {arg.split(b",")[0] for arg in argv}:
        return False
    deadline = time.monotonic() + reaped_within_s
    try:
        os.kill(pid, signal.SIGKILL)
        while time.monotonic() < deadline:   # a zombie still answers until its parent reaps it
            os.kill(pid, 0)
            time.sleep(0.005)
    except ProcessLookupError:
        return True
    return False


def destroy(lab_id: str, conn: libvirt.virConnect | None = None, state: LabState | None = None,
            domains: Iterable[str] = (), networks: Iterable[str] = ()) -> list[str]:
    """Remove one lab's domains (in parallel), networks and folder; returns what was removed.

    Domains: those named by its state (or the caller) and those tagged for it; networks: those
    named by its state (or the caller) and by its tagged domains. Never by name prefix alone.
    """
    if not valid_lab_id(lab_id):
        raise ParameterError(f"{lab_id!r} is not a lab id (letters and digits)")
    conn = conn or connect()
    wanted_domains = {*domains, *(state.domains if state else [])}
    wanted_networks = {*networks, *(state.networks if state else [])}
    for tagged in tagged_domains(conn):
        if tagged.lab_id == lab_id:
            wanted_domains.add(tagged.domain.name())
            wanted_networks.update(tagged.networks)
    removed: list[str] = []

    def remove_domain(name: str) -> None:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        removed.append(f"domain {name}")

    def remove_network(name: str) -> None:
        try:
            net = conn.networkLookupByName(name)
            bridge = net.bridgeName()
        except libvirt.libvirtError:
            return
        with contextlib.suppress(libvirt.libvirtError):
            net.destroy()
        netns.remove_bridge(bridge)   # ours (a lab bridge name) once no network is on it
        removed.append(f"network {name}")

    domains, nets = sorted(wanted_domains), sorted(wanted_networks)
    if all(_parallel(_kill_guest, domains)):
        # No guest is left on the networks: remove them while libvirt finishes with the domains
        # (after a kill it mostly sleeps 200 ms first: it finds the QEMU a zombie, then polls).
        _parallel(lambda remove: remove(), [*(partial(remove_domain, d) for d in domains),
                                            *(partial(remove_network, n) for n in nets)])
    else:
        _parallel(remove_domain, domains)
        _parallel(remove_network, nets)   # once no domain is plugged into them
    directory = paths.labs_dir() / lab_id
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"files {directory}")
    return removed


# -- clean -----------------------------------------------------------------------------------------
def clean(lab_id: str | None = None, run_id: str | None = None, include_kept: bool = False,
          include_live: bool = False, log: Callable[[str], None] = lambda _: None) -> list[str]:
    """Remove labs and what dead runs left behind; returns (and logs) a line per removed thing.

    - `lab_id`: that lab, kept or not; a process still owning it (e.g. a kernel orphaned by a
      killed runner) is stopped first, so nothing recreates what is being removed; its run's
      abandoned leases go with it.
    - `run_id`: that run's labs that are not kept, its owners stopped, and its leases.
    - neither: only labs whose owner (or its supervisor) is gone, kept labs only with
      `include_kept`, live ones only with `include_live`; also abandoned leases (temp and
      staging folders, sushy-emulator processes and their pools, secrets files), tagged domains
      of labs that no longer exist, leftover secrets files and empty lab folders.
    Files that are not valid records are reported and left alone.
    """
    if lab_id is not None and not valid_lab_id(lab_id):
        raise ParameterError(f"{lab_id!r} is not a lab id (letters and digits; `ucnb lab status` lists them)")
    conn = connect()
    removed: list[str] = []
    notes: list[str] = []
    runs: set[str] = set()   # runs whose labs are removed: what else they held goes too
    found = scan()
    notes += found.problems
    for state in found.labs:
        if lab_id is not None:
            chosen = state.lab_id == lab_id
        elif run_id is not None:
            chosen = state.run_id == run_id and not state.keep
        else:
            live = state.owner_alive()
            chosen = (include_kept or not state.keep) and (include_live or not live)
            if live and not include_live:
                notes.append(f"left lab {state.lab_id} alone: its run is in progress "
                             f"(owner pid {state.owner_pid})")
        if not chosen:
            continue
        if state.owner is not None and state.owner.pid != os.getpid() and state.owner.signal():
            removed.append(f"process {state.owner.pid} (owner of lab {state.lab_id})")
            _wait_gone(state.owner)
        removed += destroy(state.lab_id, conn, state)
        runs.add(state.run_id)
    if lab_id is not None and lab_id not in {s.lab_id for s in found.labs} | found.unreadable:
        removed += destroy(lab_id, conn)   # its folder is gone: whatever is still tagged for it
    if lab_id is None:
        removed += _reclaim_leases(run_id, notes)
    else:
        for run in sorted(r for r in runs if r):
            removed += _reclaim_leases(run, notes)
    if lab_id is None and run_id is None:
        removed += _orphan_domains(conn, {s.lab_id for s in found.labs} | found.unreadable)
        removed += _orphan_bridges(conn)
        removed += _leftover_secrets()
        removed += _empty_lab_folders(found.stateless, notes)
    for line in notes:
        log(line)
    for line in removed:
        log(f"removed {line}")
    return removed


def _wait_gone(process: ProcessId, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def _reclaim_leases(run_id: str | None, notes: list[str]) -> list[str]:
    held, problems = leases.all_leases()
    notes += problems
    removed = []
    for lease in held:
        if run_id is not None and lease.run_id != run_id:
            continue
        if lease.abandoned():
            removed += leases.reclaim(lease)
    return removed


def _orphan_domains(conn: libvirt.virConnect, known: set[str]) -> list[str]:
    """Tagged domains of labs with no state (a lab whose folder went, a KVM probe) whose owner is gone."""
    tagged = tagged_domains(conn)
    removed = []
    for lab in sorted({t.lab_id for t in tagged} - known):
        owners = [t.owner for t in tagged if t.lab_id == lab]
        if all(o is not None and not o.alive() for o in owners):
            removed += destroy(lab, conn)
    return removed


def _orphan_bridges(conn: libvirt.virConnect) -> list[str]:
    """Lab bridges no libvirt network is on: what a lab killed between making its bridge and its
    network (or removing them) left. Under the host lock, which a lab making its own holds."""
    removed = []
    with host_lock():
        on_networks = set()
        for net in conn.listAllNetworks():
            with contextlib.suppress(libvirt.libvirtError):
                on_networks.add(net.bridgeName())
        for bridge in sorted(set(netns.bridges()) - on_networks):
            netns.remove_bridge(bridge)
            removed.append(f"bridge {bridge}")
    return removed


def _leftover_secrets() -> list[str]:
    """Secrets files no lease holds and no live run uses (the lease is written before the file,
    so files are listed first: one created meanwhile has its lease in the later listing)."""
    directory = paths.work_root() / "secrets"
    if not directory.is_dir():
        return []
    candidates = [p for p in directory.iterdir() if p.is_file() and not p.is_symlink()]
    held = {path for lease in leases.all_leases()[0] for path in lease.paths}
    removed = []
    for path in candidates:
        if str(path) not in held and not _run_is_live(path.name):
            path.unlink(missing_ok=True)
            removed.append(f"secrets file {path}")
    return removed


def _run_is_live(run_id: str) -> bool:
    """Some process runs with UCNB_RUN_ID=<run_id> (a kernel of that run)."""
    marker = f"UCNB_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    return True
    return False


def _empty_lab_folders(stateless: list[Path], notes: list[str]) -> list[str]:
    """Lab folders without a state file: removed when empty (a Lab reserves its folder and writes
    its state under the host lock, which this holds too), reported otherwise."""
    removed = []
    with host_lock():
        for directory in stateless:
            if (directory / "state.json").exists():
                continue
            try:
                directory.rmdir()
                removed.append(f"empty lab folder {directory}")
            except FileNotFoundError:
                continue
            except OSError:
                notes.append(f"left {directory} alone: a lab folder with no state.json that is not empty")
    return removed


# -- other views ---------------------------------------------------------------------------------
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
    active = {t.domain.name() for t in tagged_domains(conn) if t.running}
    rows = []
    for state in list_labs():
        for name, info in state.nodes.items():
            dom = domain_mod.domain_name(state.lab_id, name)
            rows.append({"lab": state.lab_id, "run": state.run_id, "node": name,
                         "address": info["address"], "domain": dom,
                         "state": "running" if dom in active else "stopped",
                         "kept": state.keep, "owner_pid": state.owner_pid,
                         "owner": "alive" if state.owner_alive() else "gone"})
    return rows


def used_subnets(conn: libvirt.virConnect) -> set[int]:
    """Subnets taken on this host: by any lab state of this work root, by any lab bridge in the
    namespace (a network being made or removed has one), and by any libvirt network (another
    work root's labs, another user's) whose bridge or address is a lab's."""
    from ucnb.host.netns import LAB_PREFIXES

    used = {s.subnet for s in list_labs()}
    bridges = list(netns.bridges())
    for net in conn.listAllNetworks():
        with contextlib.suppress(libvirt.libvirtError, ET.ParseError):
            xml = ET.fromstring(net.XMLDesc(0))
            bridges += [b.get("name") or "" for b in xml.iterfind("bridge")][:1]
            for ip in xml.iterfind("ip"):
                address = ip.get("address") or ""
                for prefix in LAB_PREFIXES:
                    if address.startswith(prefix + "."):
                        used.add(int(address.split(".")[2]))
    return used | {n for n in map(netns.bridge_subnet, bridges) if n is not None}


def names_taken(conn: libvirt.virConnect, lab_id: str) -> bool:
    """A domain or network of this lab id exists on the host (any work root)."""
    prefix = domain_mod.domain_name(lab_id, "")
    return (any(d.name().startswith(prefix) for d in conn.listAllDomains())
            or any(n.name() == f"ucnb-{lab_id}" or n.name().startswith(f"ucnb-{lab_id}-")
                   for n in conn.listAllNetworks()))
