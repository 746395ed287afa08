"""Warm start (openQA's snapshots): a lab saved just after boot, restored instead of booted.

libvirt restores a saved guest only under its own name and UUID, and the guests' memory holds
their addresses, so a restored lab reuses the saved lab's id and subnet; the serial logs move to
the new run. The snapshot is keyed by everything that shapes the guests (image, accelerator,
node configs): a change means a cold boot, which saves a fresh snapshot.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ucnb import files, paths
from ucnb.lab.domain import metadata_xml
from ucnb.lab.leases import temp_dir

if TYPE_CHECKING:
    from ucnb.lab.lab import Lab, NodeConfig

FORMAT = "1"


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    lab_id: str
    subnet: int


def snapshot_key(image_key: str, accelerator: str, nodes: list[NodeConfig]) -> str:
    text = json.dumps([FORMAT, image_key, accelerator, [repr(n) for n in nodes]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lab_id_for(key: str) -> str:
    """The lab id every lab saved or restored under this key uses (libvirt keeps domain names)."""
    return "w" + key[:7]


def find(key: str) -> Snapshot | None:
    directory = paths.cache_dir("warm") / key
    try:
        meta = json.loads((directory / "snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    return Snapshot(directory, meta["lab_id"], meta["subnet"])


def save(lab: Lab, key: str) -> Snapshot:
    """Save every running node of `lab` (they stop) and its disks, under `key`.

    The snapshot is assembled in a leased staging folder (reclaimed by `ucnb lab clean` if this
    process dies meanwhile) and renamed into place whole; memory images and disks stay 0600."""
    from ucnb.lab.lab import in_parallel

    target = paths.cache_dir("warm") / key
    with temp_dir(paths.cache_dir("warm"), "warm-staging") as staging:
        in_parallel(lambda name: lab[name]._domain().save(str(staging / f"{name}.save")), list(lab.nodes))
        for disk in lab.directory.glob("*.qcow2"):
            shutil.copy2(disk, staging / disk.name)
        for saved in staging.iterdir():
            saved.chmod(0o600)
        files.atomic_write_text(staging / "snapshot.json", json.dumps(
            {"lab_id": lab.lab_id, "subnet": lab.subnet, "nodes": list(lab.nodes)}) + "\n")
        old = target.with_name(f".{key}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return Snapshot(target, lab.lab_id, lab.subnet)


def restore(lab: Lab, snapshot: Snapshot) -> None:
    """Put the saved disks back and resume every node from its saved memory."""
    for disk in snapshot.directory.glob("*.qcow2"):
        shutil.copy2(disk, lab.directory / disk.name)
        (lab.directory / disk.name).chmod(0o600)

    def restore_one(name: str) -> None:
        node = lab[name]
        image = str(snapshot.directory / f"{name}.save")
        xml = lab.conn.saveImageGetXMLDesc(image, 0)
        xml = re.sub(r"(<log file=)'[^']*'", rf"\1'{node.spec.serial_log}'", xml)
        # This run's lab owns it now, not the process that saved it.
        xml = re.sub(r"<metadata>.*?</metadata>", lambda _: metadata_xml(lab.metadata(name)), xml, flags=re.S)
        node.before_power_on()
        lab.conn.restoreFlags(image, xml, 0)
    from ucnb.lab.lab import in_parallel

    in_parallel(restore_one, list(lab.nodes))
