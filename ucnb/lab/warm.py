"""Warm start (openQA's snapshots): a lab saved just after boot, restored instead of booted.

libvirt restores a saved guest only under its own name and UUID, and the guests' memory holds
their addresses, so a restored lab reuses the saved lab's id and subnet. Runs side by side each
need their own: a key has a few *slots*, each one lab id and subnet with its own snapshot, and
holding the slot's lab id (reserved under the host lock, like any lab) is the lease on it. A run
restores the first free slot that has a snapshot, else boots cold into a free empty slot and
saves it; with every slot taken it boots cold and says so. The key covers everything that shapes
the guests (image, accelerator, profile, node configs): a change means a cold boot, and the
evidence names the inputs that changed since the newest snapshot of the same nodes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ucnb import files, paths
from ucnb.lab.domain import metadata_xml
from ucnb.lab.leases import temp_dir

if TYPE_CHECKING:
    from ucnb.kernel.record import Recorder
    from ucnb.lab.lab import Lab, Node, NodeConfig
    from ucnb.profiles import Profile

FORMAT = "3"   # bump when what a snapshot holds, or the domains it restores, change shape
SLOTS = 3      # runs of one key that can restore side by side


def inputs(image_key: str, accelerator: str, profile: str, nodes: list[NodeConfig],
           hypervisor: str = "") -> dict[str, Any]:
    """Everything that shapes the saved guests, by name (kept in the snapshot to explain a miss);
    `hypervisor` the QEMU and libvirt versions (a save image is QEMU's migration stream)."""
    return {"format": FORMAT, "image": image_key, "accelerator": accelerator, "profile": profile,
            "hypervisor": hypervisor, "nodes": {n.name: repr(n) for n in nodes}}


def hypervisor(conn: Any) -> str:
    """The QEMU and libvirt versions of a libvirt connection, for `inputs`."""
    return f"qemu {conn.getVersion()} libvirt {conn.getLibVersion()}"


def snapshot_key(shape: dict[str, Any]) -> str:
    """The snapshot key of `inputs(...)`: any change in them is another key."""
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def changes(shape: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """What differs between two `inputs`, in words ("image a -> b", "node01 config")."""
    found = [f"{k} {old.get(k)} -> {shape[k]}" for k in ("format", "image", "accelerator", "profile",
                                                         "hypervisor") if shape[k] != old.get(k)]
    nodes, before = shape["nodes"], old.get("nodes", {})
    found += [f"{name} config" for name in nodes if name in before and nodes[name] != before[name]]
    found += [f"nodes {sorted(before)} -> {sorted(nodes)}"] if set(nodes) != set(before) else []
    return found


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    lab_id: str
    subnet: int


@dataclass(frozen=True)
class Slot:
    """One of a key's snapshots: its lab id (which the restored domains must carry) and folder."""

    key: str
    number: int

    @property
    def lab_id(self) -> str:
        return f"w{self.key[:6]}{self.number}"

    @property
    def directory(self) -> Path:
        return paths.cache_dir("warm") / f"{self.key}-{self.number}"

    def snapshot(self) -> Snapshot | None:
        try:
            meta = json.loads((self.directory / "snapshot.json").read_text())
        except (OSError, ValueError):
            return None
        return Snapshot(self.directory, meta["lab_id"], meta["subnet"])


@dataclass(frozen=True)
class Claim:
    """The lab a warm run got: with a slot (restore it, or boot cold and save it), or without
    one and `why` (every slot taken)."""

    lab: Lab
    slot: Slot | None
    shape: dict[str, Any]
    why: str = ""


def claim(shape: dict[str, Any], make: Callable[..., Lab]) -> Claim:
    """Make the lab (`make(lab_id=, subnet=, high_subnet=)`) under the first free slot of
    `shape`'s key that holds a snapshot, else the first free empty one, else a lab of its own."""
    from ucnb.lab.lab import LabUnavailable

    key = snapshot_key(shape)
    slots = [Slot(key, n) for n in range(SLOTS)]
    taken: list[str] = []
    for slot in sorted(slots, key=lambda s: s.snapshot() is None):
        snapshot = slot.snapshot()
        try:
            lab = make(lab_id=slot.lab_id, subnet=snapshot.subnet if snapshot else None, high_subnet=True)
        except LabUnavailable as exc:
            taken.append(f"slot {slot.number}: {exc}")
            continue
        return Claim(lab, slot, shape, why="" if snapshot else _miss(shape, key, taken))
    return Claim(make(), None, shape, why=f"every warm slot of {key} is in use ({'; '.join(taken)})")


def _saved() -> list[dict[str, Any]]:
    """Every snapshot's snapshot.json in the cache (unreadable ones left out)."""
    found = []
    for meta_file in paths.cache_dir("warm").glob("*/snapshot.json"):
        try:
            found.append(json.loads(meta_file.read_text()))
        except (OSError, ValueError):
            continue
    return found


def held_subnets() -> set[int]:
    """The subnets saved snapshots were taken on (a restore needs its own again)."""
    return {int(meta["subnet"]) for meta in _saved() if "subnet" in meta}


def _miss(shape: dict[str, Any], key: str, taken: list[str]) -> str:
    """Why there is no snapshot to restore: the slots that have one are `taken` by other runs,
    or the inputs changed since the newest snapshot of the same nodes, or none was ever saved."""
    newest: tuple[float, dict[str, Any]] | None = None
    for meta in _saved():
        old = meta.get("inputs", {})
        if set(old.get("nodes", {})) == set(shape["nodes"]) and (newest is None or meta["saved"] > newest[0]):
            newest = (meta["saved"], old)
    if newest is None:
        return f"no snapshot of these nodes saved yet (key {key})"
    if not changes(shape, newest[1]):
        return f"the snapshots of these inputs are in use by other runs ({'; '.join(taken)})"
    return f"inputs changed since the last snapshot of these nodes: {', '.join(changes(shape, newest[1]))}"


def settled(profile: Profile, recorder: Recorder) -> Callable[[Node], None]:
    """What a snapshot waits for on each node before it is saved: every service the node starts
    at boot answering its profile's health probe (else each restored run would pay their start-up,
    and a service caught half-started would finish starting after every restore)."""
    from ucnb.kernel.wait import wait_until

    def settle(node: Node) -> None:
        for c in profile.components.values():
            if c.service in node.lab.configs[node.name].services and c.health:
                wait_until(functools.partial(node.run, c.health, timeout=10), timeout=60, node=node.name,
                           what=f"{c.service} healthy before the snapshot", recorder=recorder)
    return settle


def save(lab: Lab, slot: Slot, shape: dict[str, Any]) -> Snapshot:
    """Save every running node of `lab` (they stop) and its disks, in `slot`.

    The snapshot is assembled in a leased staging folder (reclaimed by `ucnb lab clean` if this
    process dies meanwhile) and renamed into place whole; memory images and disks stay 0600."""
    from ucnb.lab.lab import in_parallel

    target, parent = slot.directory, paths.cache_dir("warm")
    with temp_dir(parent, "warm-staging") as staging:
        in_parallel(lambda name: lab[name]._domain().save(str(staging / f"{name}.save")), list(lab.nodes))
        for disk in _writable_disks(lab):
            shutil.copy2(disk, staging / disk.name)
        for saved in staging.iterdir():
            saved.chmod(0o600)
        files.atomic_write_text(staging / "snapshot.json", json.dumps(
            {"lab_id": lab.lab_id, "subnet": lab.subnet, "nodes": list(lab.nodes), "saved": time.time(),
             "inputs": shape}) + "\n")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return Snapshot(target, lab.lab_id, lab.subnet)


def _writable_disks(lab: Lab, node: str | None = None) -> list[Path]:
    """The lab's own disks (system overlays, blank disks) of every node or one: what a guest may
    have written, saved beside its memory (read-only tools disks are shared, not copied)."""
    return [d.path for n in lab.nodes.values() if node in (None, n.name)
            for d in n.spec.disks if not d.readonly and d.path.parent == lab.directory]


def restore(lab: Lab, snapshot: Snapshot, name: str) -> None:
    """Put node `name`'s saved disks back and resume it from its saved memory."""
    node = lab[name]
    for disk in _writable_disks(lab, name):
        shutil.copy2(snapshot.directory / disk.name, disk)
        disk.chmod(0o600)
    image = str(snapshot.directory / f"{name}.save")
    xml = lab.conn.saveImageGetXMLDesc(image, 0)
    xml = re.sub(r"(<log file=)'[^']*'", rf"\1'{node.spec.serial_log}'", xml)
    # This run's lab owns it now, not the process that saved it.
    xml = re.sub(r"<metadata>.*?</metadata>", lambda _: metadata_xml(lab.metadata(name)), xml, flags=re.S)
    node.before_power_on()
    lab.conn.restoreFlags(image, xml, 0)
