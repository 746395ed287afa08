"""Warm start (a lab saved just after boot, restored instead of booted) under the new ownership
rules: the snapshot is staged in a leased folder and published whole (memory and disks 0600), a
restored domain is tagged as this process's (not the saver's), and nothing is left after either."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

from ucnb import paths
from ucnb.host.procs import ProcessId
from ucnb.lab import leases, warm
from ucnb.lab.domain import METADATA_NS
from ucnb.lab.lab import Lab, NodeConfig

from ..lab_fixtures import leftovers


def _lab(lab_image, accelerator, nodes: list[NodeConfig], key: str) -> Lab:  # type: ignore[no-untyped-def]
    snapshot = warm.find(key)
    return Lab(nodes, lab_image, accelerator, lab_id=warm.lab_id_for(key),
               subnet=snapshot.subnet if snapshot else None)


def test_a_lab_saved_after_boot_is_restored_and_owned_by_the_restoring_process(
        lab_image, accelerator, lab_host) -> None:  # type: ignore[no-untyped-def]
    nodes = [NodeConfig("warmcheck")]
    key = warm.snapshot_key(lab_image.key, accelerator.mode, nodes)
    shutil.rmtree(paths.cache_dir("warm") / key, ignore_errors=True)   # this test's own key: cold first
    with _lab(lab_image, accelerator, nodes, key) as first:
        how = first.boot_warm(key, timeout=120)
        assert how.startswith("cold")
        lab_id = first.lab_id
    snapshot = warm.find(key)
    assert snapshot is not None and snapshot.lab_id == lab_id
    saved = [p for p in snapshot.directory.iterdir() if p.suffix in (".save", ".qcow2")]
    assert saved and all(p.stat().st_mode & 0o777 == 0o600 for p in saved)
    assert snapshot.directory.stat().st_mode & 0o777 == 0o700
    assert json.loads((snapshot.directory / "snapshot.json").read_text())["nodes"] == ["warmcheck"]
    assert not [lease for lease in leases.all_leases()[0] if lease.kind == "temp-warm-staging"]
    assert leftovers(set(), {lab_id}) == []

    with _lab(lab_image, accelerator, nodes, key) as second:
        assert second.boot_warm(key, timeout=120).startswith("restore")
        node = second["warmcheck"]
        assert node.run("hostname", timeout=15, check=True).stdout.strip() == "warmcheck"
        meta = ET.fromstring(node._domain().metadata(2, METADATA_NS))   # VIR_DOMAIN_METADATA_ELEMENT
        assert meta.findtext("owner") == str(ProcessId.current())
    assert leftovers(set(), {lab_id}) == []
    shutil.rmtree(snapshot.directory, ignore_errors=True)
