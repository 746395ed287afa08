"""A Lab: nodes (libvirt domains) on a private network inside the lab namespace.

Everything a lab creates is named and recorded so that it can always be found and removed:
domains `ucnb-<lab>-<node>`, network `ucnb-<lab>`, files under `<work>/labs/<lab>/`, and a
`state.json` naming the owning process and run. Domains are transient: libvirt forgets them
once destroyed, and `ucnb lab clean` removes whatever a killed runner left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt

from ucnb import paths
from ucnb.errors import HarnessError, InfrastructureError, LaneFailure, ParameterError
from ucnb.host import netns
from ucnb.host.accel import Accelerator
from ucnb.host.procs import SUPERVISOR_ENV, ProcessId
from ucnb.image import GuestImage
from ucnb.image.keys import lab_keys
from ucnb.kernel.live import WaitProgress
from ucnb.kernel.record import Recorder
from ucnb.kernel.wait import wait_until
from ucnb.lab import domain as domain_mod
from ucnb.lab import registry, watcher
from ucnb.lab.registry import LabState, connect, destroy, list_labs
from ucnb.lab.serial import MarkerCursor, SeenMarker, SerialWatcher
from ucnb.lab.ssh import CommandResult, GuestShell
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import paramiko

    from ucnb.lab import warm
else:  # `ucnb run` imports this module to validate parameters: paramiko once used
    paramiko = lazy_module("paramiko")

# Network i of lab subnet N is 10.(77+i).N.0/24: i=0 the lab network (SSH, clients), i=1 a
# second one (e.g. Raft traffic, so a partition can cut it and leave SSH to the minority).
NETWORK_PREFIXES = netns.LAB_PREFIXES
LOG_OUTPUT_CHARS = 64 * 1024   # per stream and command in logs/<node>-commands.log
T = TypeVar("T")
DISK_SIZE_PATTERN = re.compile(r"^[1-9][0-9]{0,5}[KMG]$")    # what qemu-img gets as its size argument
DISK_SERIAL_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,20}$")  # virtio serials: 20 bytes at most


@dataclass(frozen=True)
class DiskConfig:
    """A disk seen in the guest as /dev/disk/by-id/virtio-<serial>: a blank one of `size` in
    `format` (raw or qcow2), or with `image` an existing raw image attached read-only (a tools
    disk). `cache` is QEMU's host cache mode; `total_iops_sec` throttles it (libvirt iotune)."""

    serial: str
    size: str = "2G"
    format: str = "qcow2"
    cache: str = "writeback"
    total_iops_sec: int = 0
    image: Path | None = None

    def __post_init__(self) -> None:
        if not DISK_SERIAL_PATTERN.match(self.serial) or not DISK_SIZE_PATTERN.match(self.size):
            raise ParameterError(f"disk {self.serial!r}: a serial of 1-20 letters, digits, . _ - and a size "
                                 f"such as 512M or 2G are required (got size {self.size!r})")


@dataclass(frozen=True)
class NodeConfig:
    """What a lane asks for; the lab turns it into a NodeSpec.

    `boot="kernel"` boots the lab image directly (its system disk as a qcow2 overlay);
    `boot="firmware"` is a bare machine: its blank disks, then `cdrom`, as firmware would.
    """

    name: str
    services: tuple[str, ...] = ()
    held: tuple[str, ...] = ()        # supervised, down until configured (see the guest's init)
    memory_mib: int = 256
    vcpus: int = 1
    networks: int = 1
    boot: str = "kernel"
    disks: tuple[DiskConfig, ...] = ()
    cdrom: Path | None = None
    kernel_args: str = ""
    dmi_serial: str = ""              # the machine's SMBIOS serial (bare-metal identity)


def _private_disk(path: Path, options: list[str], size: str | None = None, fmt: str = "qcow2") -> Path:
    """`qemu-img create` a disk readable by root only (it may come to hold a token)."""
    size_arg = [size] if size else []
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), *size_arg], check=True)
    path.chmod(0o600)
    return path


def in_parallel(action: Callable[[T], None], items: list[T]) -> None:
    """Run `action` on each item in its own daemon thread and wait for all; the first error is
    raised. An interrupt (Ctrl-C) ends the wait at once: the threads are left to the teardown
    instead of holding the cell (or the interpreter's exit) until their own timeouts."""
    errors: list[BaseException] = []

    def run(item: T) -> None:
        try:
            action(item)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class LabUnavailable(InfrastructureError):
    """The lab id or subnet asked for (a warm snapshot's) is taken by another lab."""


class Node:
    """One guest: power, console markers and a shell."""

    def __init__(self, lab: Lab, spec: domain_mod.NodeSpec, address: str) -> None:
        self.lab, self.spec, self.name, self.address = lab, spec, spec.name, address
        self.domain_name = domain_mod.domain_name(lab.lab_id, spec.name)
        self.started_at: float | None = None
        self.watcher = SerialWatcher(spec.serial_log, self.name, self._on_marker)
        self.cursor: MarkerCursor = self.watcher.cursor()
        keys = lab_keys()
        self.shell = GuestShell(self.name, address, keys.client_private, keys.host_public,
                                log=lab.log_command)

    def _on_marker(self, seen: SeenMarker) -> None:
        since = seen.seen - (self.started_at or seen.seen)
        self.lab.recorder.marker(self.name, seen.marker.name, seen.seen, round(since, 3))

    # -- power -----------------------------------------------------------------------------
    def _domain(self) -> libvirt.virDomain:
        return self.lab.conn.lookupByName(self.domain_name)

    def before_power_on(self) -> None:
        """Watch the console from here on; the marker cursor moves to the end of the log."""
        self.watcher.start()
        self.watcher.read_once()
        self.cursor = self.watcher.cursor()
        self.started_at = time.time()

    def start(self) -> None:
        """Create (boot) the domain."""
        self.before_power_on()
        xml = domain_mod.domain_xml(self.lab.lab_id, self.spec)
        try:
            self.lab.conn.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise InfrastructureError(f"{self.name}: libvirt refused to start the domain: {exc}") from exc

    def running(self) -> bool:
        try:
            return bool(self._domain().isActive())
        except libvirt.libvirtError:
            return False

    def power_loss(self) -> None:
        """Pull the plug (virDomainDestroy): no shutdown, the guest's page cache is lost."""
        self.shell.close()
        with contextlib.suppress(libvirt.libvirtError):
            self._domain().destroy()

    def reset(self) -> None:
        self.shell.close()
        self.cursor = self.watcher.cursor()
        self.started_at = time.time()
        self._domain().reset(0)

    def pause(self) -> None:
        self._domain().suspend()

    def resume(self) -> None:
        self._domain().resume()

    def insert_cdrom(self, iso: Path | None) -> None:
        """Put an ISO in the CD-ROM drive (or empty it) for the next power-on; live if running."""
        self.spec = dataclasses.replace(self.spec, cdrom=iso)
        if self.running():
            source = f"<source file='{iso}'/>" if iso else ""
            xml = (f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>{source}"
                   f"<target dev='hdc' bus='ide'/><readonly/></disk>")
            self._domain().updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_link(self, up: bool, nic: int = 0) -> None:
        """NIC carrier up/down through updateDeviceFlags (virsh domif-setlink is buggy on libvirt 9)."""
        n = self.spec.nics[nic]
        xml = (f"<interface type='network'><source network='{n.network}'/><mac address='{n.mac}'/>"
               f"<model type='virtio'/><link state='{'up' if up else 'down'}'/></interface>")
        self._domain().updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    # -- console and shell -----------------------------------------------------------------
    def wait_marker(self, expected: str, timeout: float = 60.0) -> SeenMarker:
        """Wait for the next console marker matching `expected` (a failure marker fails at once)."""
        with self.lab.recorder.step(f"marker: {expected}", self.name, kind="wait") as row, \
                WaitProgress(f"marker {expected}", self.name, timeout):
            seen = self.cursor.wait_for(expected, timeout)
            row.detail = seen.marker.name
            return seen

    def run(self, command: str, timeout: float = 30.0, check: bool = False,
            stdin: str | None = None, log_output: bool = True) -> CommandResult:
        """Run a shell command in the guest over SSH (`check` raises LaneFailure on non-zero exit).

        A guest that is not running fails at once, naming the node, instead of timing out. The
        command, its stdout and stderr go to logs/<node>-commands.log (`log_output=False`: only
        their sizes, for output the caller saves elsewhere).
        """
        try:
            return self.shell.run(command, timeout=timeout, check=check, stdin=stdin, log_output=log_output)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not self.running():
                raise LaneFailure(f"{self.name}: the domain is not running (powered off or crashed) "
                                  f"while running `{command}`") from exc
            raise

    def open_shell(self) -> GuestShell:
        """Another SSH connection to this guest, for a caller that runs its commands one at a time
        beside others (a workload's client): channels opened concurrently on one connection were
        refused or closed now and then as another closed (6 of 191 calls in one run). Close it
        when done."""
        keys = lab_keys()
        return GuestShell(self.name, self.address, keys.client_private, keys.host_public,
                          log=self.lab.log_command)

    @staticmethod
    def clock_command() -> str:
        """The command that sets the guest's clock to the host's (a restored guest's stood still
        while it was saved). busybox `date` takes whole seconds: the jump to this second now, and
        the step to the next one in the background at its edge (so the guest is off by the trip's
        time, not up to 1 s). Made when sent: it holds the host's time."""
        now = time.time()
        second = int(now)
        return (f"date -u -s @{second} >/dev/null; (sleep {second + 1 - now:.3f}; date -u -s @{second + 1}) "
                "</dev/null >/dev/null 2>&1 &")

    def wait_ssh(self, timeout: float = 60.0, command: Callable[[], str] = lambda: "true") -> None:
        """Wait until the guest answers a command over SSH (`command()`, made at each try: e.g. a
        restored guest's `clock_command`, so that its first answer has set its clock)."""
        def probe() -> CommandResult | bool:
            if not self.running():
                raise LaneFailure(f"{self.name}: domain is not running (it died or was destroyed)")
            return self.shell.run(command(), timeout=5)
        wait_until(probe, timeout=timeout, what="SSH", node=self.name, interval=0.3,
                   recorder=self.lab.recorder)


class Lab:
    """A set of nodes on one isolated network; use as a context manager or call teardown()."""

    def __init__(self, nodes: list[NodeConfig], image: GuestImage, accelerator: Accelerator,
                 recorder: Recorder | None = None, run_id: str = "", lab_id: str | None = None,
                 log_dir: Path | None = None, subnet: int | None = None, high_subnet: bool = False) -> None:
        netns.enter()  # guest addresses exist only inside the lab namespace
        self.conn = connect()
        self.image, self.accelerator = image, accelerator
        self.recorder = recorder or Recorder()
        self.lab_id = lab_id or uuid.uuid4().hex[:8]
        self.run_id = run_id or self.lab_id
        self.directory = paths.labs_dir() / self.lab_id
        self.log_dir = log_dir or self.directory
        self.keep = False
        self._torn_down = False
        self.owner: ProcessId | None = ProcessId.current()
        self.supervisor = ProcessId.supervisor()
        self.network_count = max([1, *(n.networks for n in nodes)])
        self.networks = registry.network_names(self.lab_id, self.network_count)
        self.network = self.networks[0]
        self.nodes: dict[str, Node] = {}
        self.configs = {c.name: c for c in nodes}
        self.subnet = self._reserve(subnet, high_subnet)
        atexit.register(self._atexit)   # unregistered at teardown: a rerun cell keeps no old lab alive
        # No runner will clean up after this process (a kernel under JupyterLab or plain
        # papermill, which may end without atexit): a watcher process removes the lab then.
        self._watcher = None if os.environ.get(SUPERVISOR_ENV) else watcher.spawn(self.lab_id)
        try:
            for index, config in enumerate(nodes, start=1):
                self.nodes[config.name] = self._make_node(index, config)
            self._save_state()
        except BaseException:
            self.teardown()
            raise

    # -- construction ----------------------------------------------------------------------
    def _reserve(self, wanted: int | None, high: bool = False) -> int:
        """Under the host-wide lock: claim the lab id and a free /24 (or the wanted one), write
        the state that records them, then create the networks it names. Every lab on the host
        (any work root) is seen: by its state here, or by its libvirt networks and domains.
        A warm snapshot keeps its subnet for later runs: a new lab takes none a snapshot holds
        while another is free, and `high` (a new warm slot) the highest, labs booting cold the
        lowest, so the two seldom meet."""
        from ucnb.lab import warm

        made: list[str] = []   # the bridges made here
        with registry.host_lock():
            if registry.names_taken(self.conn, self.lab_id):
                raise LabUnavailable(f"lab id {self.lab_id} is in use on this host")
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=False)
            except FileExistsError:
                raise LabUnavailable(f"lab id {self.lab_id} is in use") from None
            try:
                used = registry.used_subnets(self.conn)
                if wanted in used:
                    raise LabUnavailable(f"subnet {wanted} is in use by another lab")
                free = [n for n in range(1, 250) if n not in used]
                if wanted is None and not free:
                    raise InfrastructureError("every lab subnet (1-249) is in use on this host")
                held = warm.held_subnets()
                free = [n for n in free if n not in held] or free
                self.subnet = wanted or free[-1 if high else 0]
                self._save_state()   # the reservation, before anything exists on the host
                for i, name in enumerate(self.networks):
                    gateway = f"{NETWORK_PREFIXES[i]}.{self.subnet}.1"
                    bridge = netns.bridge_name(self.subnet, i)
                    netns.add_bridge(bridge, f"{gateway}/24")
                    made.append(bridge)
                    try:
                        self.conn.networkCreateXML(domain_mod.network_xml(name, bridge))
                    except libvirt.libvirtError as exc:
                        raise InfrastructureError(f"cannot create lab network {gateway}/24: {exc}") from exc
            except BaseException:
                destroy(self.lab_id, self.conn, networks=self.networks)
                for bridge in made:   # one whose network was never made (destroy sees none)
                    netns.remove_bridge(bridge)
                raise
        return self.subnet

    def address(self, index: int, network: int = 0) -> str:
        """The address of the index-th node (from 1) on one of the lab's networks."""
        return f"{NETWORK_PREFIXES[network]}.{self.subnet}.{10 + index}"

    def _make_node(self, index: int, config: NodeConfig) -> Node:
        if config.networks > len(NETWORK_PREFIXES) or config.boot not in ("kernel", "firmware"):
            raise ParameterError(f"{config.name}: at most {len(NETWORK_PREFIXES)} networks and boot "
                                 f"'kernel' or 'firmware' (got {config.networks}, {config.boot!r})")
        disks = [domain_mod.DiskSpec(d.image, d.serial, "raw", readonly=True, cache=d.cache)
                 if d.image is not None else
                 domain_mod.DiskSpec(self._blank_disk(config.name, d), d.serial, d.format, cache=d.cache,
                                     total_iops_sec=d.total_iops_sec)
                 for d in config.disks]
        if config.boot == "kernel":
            overlay = _private_disk(self.directory / f"{config.name}-system.qcow2",
                                    ["-F", "raw", "-b", str(self.image.system_disk)])
            disks.insert(0, domain_mod.DiskSpec(overlay, "ucnb-system"))
        nics = tuple(domain_mod.NicSpec(self.networks[i], domain_mod.mac_for(self.subnet, index, i),
                                        f"{self.address(index, i)}/24") for i in range(config.networks))
        ips = " ".join(f"ucnb.ip{i + 1 if i else ''}={n.address}" for i, n in enumerate(nics))
        cmdline = (f"console=ttyS0 loglevel=4 panic=-1 ucnb.node={config.name} {ips} "
                   f"ucnb.services={','.join(config.services)} ucnb.held={','.join(config.held)} "
                   f"{config.kernel_args}").strip()
        kernel_boot = config.boot == "kernel"
        spec = domain_mod.NodeSpec(
            name=config.name, memory_mib=config.memory_mib, vcpus=config.vcpus,
            kernel=self.image.kernel if kernel_boot else None,
            initrd=self.image.initrd if kernel_boot else None,
            cmdline=cmdline if kernel_boot else "", disks=tuple(disks), nics=nics,
            serial_log=self.log_dir / f"{config.name}-serial.log", accelerator=self.accelerator.mode,
            cdrom=config.cdrom, metadata=self.metadata(config.name), dmi_serial=config.dmi_serial)
        return Node(self, spec, self.address(index))

    def metadata(self, node: str) -> dict[str, str]:
        """What a domain carries so `ucnb lab clean` recognises it as this lab's (of this labs
        folder, owned by this process), never by its name alone."""
        return {"lab": self.lab_id, "run": self.run_id, "node": node, "labs": str(paths.labs_dir()),
                "owner": str(self.owner)}

    def _blank_disk(self, node: str, disk: DiskConfig) -> Path:
        if disk.format not in ("raw", "qcow2"):
            raise ParameterError(f"{node}: disk {disk.serial}: format raw or qcow2, not {disk.format!r}")
        path = self.directory / f"{node}-{disk.serial}.{disk.format}"
        return _private_disk(path, [], disk.size, disk.format)

    def _save_state(self) -> None:
        LabState(self.lab_id, self.run_id, self.owner, self.subnet, self.networks,
                 [n.domain_name for n in self.nodes.values()], self.keep,
                 {n.name: {"address": n.address, "serial_log": str(n.spec.serial_log)}
                  for n in self.nodes.values()}, supervisor=self.supervisor).save(self.directory)

    # -- use -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def log_command(self, result: CommandResult) -> None:
        """Every guest command goes to logs/<node>-commands.log with its stdout and stderr, each
        bounded to its last LOG_OUTPUT_CHARS characters (redacted)."""
        redact = self.recorder.redactor.text  # before the lines are prefixed: a wrapped secret
        status = "timed out" if result.exit_status is None else f"exit {result.exit_status}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        lines = [f"{stamp} [{status}] {result.duration:.2f}s $ {redact(result.command)}"]
        for name, raw in (("stdout", result.stdout), ("stderr", result.stderr)):
            text = redact(raw)
            if text.strip():
                cut = len(text) > LOG_OUTPUT_CHARS
                body = text[-LOG_OUTPUT_CHARS:].rstrip("\n")
                lines.append(f"  {name}:" + (f" (last {LOG_OUTPUT_CHARS} of {len(text)} characters)"
                                             if cut else ""))
                lines += [f"  | {line}" for line in body.split("\n")]
        with (self.log_dir / f"{result.node}-commands.log").open("a") as f:
            f.write(redact("\n".join(lines) + "\n"))

    def boot(self, names: list[str] | None = None, ready_marker: str = "lab.init.done",
             timeout: float = 90.0) -> None:
        """Boot nodes in parallel and wait until each reaches its marker and answers over SSH."""
        targets = [self.nodes[n] for n in (names or list(self.nodes))]

        def boot_one(node: Node) -> None:
            with self.recorder.step("boot", node.name):
                node.start()
                node.wait_marker(ready_marker, timeout)
                node.wait_ssh(timeout)

        in_parallel(boot_one, targets)

    def boot_warm(self, slot: warm.Slot, shape: dict[str, Any], timeout: float = 90.0,
                  settle: Callable[[Node], None] | None = None) -> bool:
        """Restore the nodes from `slot`'s snapshot, or boot them cold, wait until each has
        `settle`d (its boot-time services up, so restored runs do not pay their start-up), save
        the slot and resume from it (the next run restores). Returns whether it restored.

        Each node is restored, reached over SSH and its clock set (it stood still in the save)
        on its own thread: one slow guest does not hold the others' steps back."""
        from ucnb.lab import warm

        snapshot = slot.snapshot()
        restored = snapshot is not None
        if snapshot is None:
            self.boot(timeout=timeout)
            if settle is not None:
                in_parallel(settle, list(self.nodes.values()))
            with self.recorder.step("save warm snapshot"):
                snapshot = warm.save(self, slot, shape)
        if snapshot.lab_id != self.lab_id:
            raise HarnessError(f"lab {self.lab_id} cannot restore {slot.lab_id}'s snapshot "
                               f"(libvirt restores a guest only under its saved name)")

        def resume(node: Node) -> None:
            with self.recorder.step("restore from snapshot", node.name):
                warm.restore(self, snapshot, node.name)
                node.wait_ssh(timeout, command=node.clock_command)   # its clock set by the first answer

        in_parallel(resume, list(self.nodes.values()))
        return restored

    def keep_alive(self) -> None:
        """Leave the lab running after this process ends (`ucnb lab clean` removes it)."""
        self.keep = True
        self._save_state()
        self._release()

    def reach_commands(self) -> list[str]:
        """The exact commands that reach a kept lab."""
        keys = lab_keys()
        cmds = [f"ucnb lab ssh {self.lab_id} {name}" for name in self.nodes]
        cmds += [f"ip netns exec {netns.NAME} ssh -i {keys.client_private} -o StrictHostKeyChecking=no "
                 f"root@{n.address}" for n in self.nodes.values()]
        cmds.append(f"ucnb lab clean {self.lab_id}")
        return cmds

    def teardown(self) -> None:
        """Destroy every domain, the network and the lab's files (unless kept)."""
        if self._torn_down or self.keep:
            return
        self._torn_down = True
        for node in self.nodes.values():
            node.shell.close()
            node.watcher.stop()
        destroy(self.lab_id, self.conn, domains=[n.domain_name for n in self.nodes.values()],
                networks=self.networks)
        self._release()

    @property
    def torn_down(self) -> bool:
        return self._torn_down

    def _release(self) -> None:
        """This process no longer answers for the lab (gone, or kept): no exit handler, no watcher."""
        atexit.unregister(self._atexit)
        watcher.stop(self._watcher)
        self._watcher = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.teardown()

    # -- reattaching a kept lab (`ucnb lab attach`, `ucnb.attach()`) ------------------------
    @classmethod
    def attach(cls, lab_id: str | None = None) -> Lab:
        """Reattach to a live lab from a new kernel or process: the newest kept lab by default.

        Its nodes come back with their addresses, serial logs (new markers only) and shells. The
        lab stays kept: this object going away, or the kernel exiting, never destroys it;
        `ucnb lab clean <lab>` does. Guest commands are logged under the lab's folder.
        """
        labs = sorted(list_labs(), key=lambda s: s.created, reverse=True)
        state = next((s for s in labs if (s.lab_id == lab_id if lab_id else s.keep)), None)
        if state is None:
            raise ParameterError(f"no {'lab ' + lab_id if lab_id else 'kept lab'} to attach to; "
                                 f"`ucnb lab status` lists the labs (keep one with -p keep_vm=true)")
        netns.enter()
        lab = cls.__new__(cls)
        lab.conn, lab.recorder, lab.keep, lab._torn_down = connect(), Recorder(), True, False
        lab._watcher = None   # a kept lab: nothing removes it but `ucnb lab clean`
        lab.lab_id, lab.run_id, lab.subnet, lab.network = (state.lab_id, state.run_id, state.subnet,
                                                           state.network)
        lab.owner, lab.supervisor = state.owner, state.supervisor
        lab.directory = lab.log_dir = paths.labs_dir() / state.lab_id
        lab.nodes, lab.configs = {}, {}
        for name, info in state.nodes.items():
            try:
                dom = lab.conn.lookupByName(domain_mod.domain_name(state.lab_id, name))
            except libvirt.libvirtError as exc:
                raise InfrastructureError(f"lab {state.lab_id}: node {name} has no domain "
                                          f"(stopped by `ucnb lab stop`?): {exc}") from exc
            spec = _spec_from_domain(dom.XMLDesc(0), name, Path(info["serial_log"]), info["address"])
            lab.nodes[name] = node = Node(lab, spec, info["address"])
            node.watcher.start()
        lab.networks = sorted({n.network for node in lab.nodes.values() for n in node.spec.nics})
        lab.network_count = len(lab.networks)
        mode = next((n.spec.accelerator for n in lab.nodes.values()), "tcg")
        lab.accelerator = Accelerator(mode, f"as lab {state.lab_id} was booted")
        return lab


def _spec_from_domain(xml: str, name: str, serial_log: Path, address: str) -> domain_mod.NodeSpec:
    """A running domain's NodeSpec, read back from its libvirt XML (for `Lab.attach`)."""
    import xml.etree.ElementTree as ET

    dom = ET.fromstring(xml)

    def attr(element: ET.Element, child: str, key: str) -> str:
        found = element.find(child)
        return "" if found is None else found.get(key, "")

    def os_text(tag: str) -> str:
        return (dom.findtext(f"os/{tag}") or "").strip()

    disks = tuple(domain_mod.DiskSpec(Path(attr(d, "source", "file")), d.findtext("serial") or "",
                                      attr(d, "driver", "type") or "qcow2", d.find("readonly") is not None,
                                      attr(d, "driver", "cache") or "writeback",
                                      int(d.findtext("iotune/total_iops_sec") or 0))
                  for d in dom.iter("disk") if d.get("device") == "disk")
    host = ".".join(address.split(".")[2:])  # nic i of a node is NETWORK_PREFIXES[i].<subnet>.<host>
    nics = tuple(domain_mod.NicSpec(attr(n, "source", "network"), attr(n, "mac", "address"),
                                    f"{NETWORK_PREFIXES[min(i, len(NETWORK_PREFIXES) - 1)]}.{host}/24")
                 for i, n in enumerate(dom.iter("interface")))
    memory = dom.find("memory")
    scale = {"KiB": 1024, "MiB": 1, "GiB": 1 / 1024}.get(memory.get("unit", "KiB"), 1024) \
        if memory is not None else 1
    return domain_mod.NodeSpec(
        name=name, memory_mib=int(int(memory.text or 0) / scale) if memory is not None else 0,
        vcpus=int(dom.findtext("vcpu") or 1), kernel=Path(os_text("kernel")) if os_text("kernel") else None,
        initrd=Path(os_text("initrd")) if os_text("initrd") else None, cmdline=os_text("cmdline"),
        disks=disks, nics=nics, serial_log=serial_log,
        accelerator="kvm" if dom.get("type") == "kvm" else "tcg")
