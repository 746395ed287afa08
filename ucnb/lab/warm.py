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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ucnb import paths

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
    """Save every running node of `lab` (they stop) and its disks, under `key`."""
    staging = paths.cache_dir("warm") / f".{key}.{time.time_ns()}"
    staging.mkdir()

    def save_one(name: str) -> None:
        lab[name]._domain().save(str(staging / f"{name}.save"))
    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        list(pool.map(save_one, lab.nodes))
    for disk in lab.directory.glob("*.qcow2"):
        shutil.copy2(disk, staging / disk.name)
    (staging / "snapshot.json").write_text(json.dumps({"lab_id": lab.lab_id, "subnet": lab.subnet,
                                                       "nodes": list(lab.nodes)}) + "\n")
    target = paths.cache_dir("warm") / key
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return Snapshot(target, lab.lab_id, lab.subnet)


def restore(lab: Lab, snapshot: Snapshot) -> None:
    """Put the saved disks back and resume every node from its saved memory."""
    for disk in snapshot.directory.glob("*.qcow2"):
        shutil.copy2(disk, lab.directory / disk.name)

    def restore_one(name: str) -> None:
        node = lab[name]
        image = str(snapshot.directory / f"{name}.save")
        xml = lab.conn.saveImageGetXMLDesc(image, 0)
        xml = re.sub(r"(<log file=)'[^']*'", rf"\1'{node.spec.serial_log}'", xml)
        node.before_power_on()
        lab.conn.restoreFlags(image, xml, 0)
    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        list(pool.map(restore_one, lab.nodes))
