"""Warm start (a lab saved just after boot, restored instead of booted) under the new ownership
rules: the snapshot is staged in a leased folder and published whole (memory and disks 0600), a
restored domain is tagged as this process's (not the saver's), and nothing is left after either."""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET

from ucnb.host.procs import ProcessId
from ucnb.lab import leases, warm
from ucnb.lab.domain import METADATA_NS
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

from ..lab_fixtures import leftovers

NODES = [NodeConfig("warmcheck")]


def _claim(lab_image, accelerator, shape) -> warm.Claim:  # type: ignore[no-untyped-def]
    return warm.claim(shape, lambda **options: Lab(NODES, lab_image, accelerator, **options))


def test_a_lab_saved_after_boot_is_restored_and_owned_by_the_restoring_process(
        lab_image, accelerator, lab_host) -> None:  # type: ignore[no-untyped-def]
    shape = warm.inputs(lab_image.key, accelerator.mode, "vm-test", NODES, warm.hypervisor(connect()))
    key = warm.snapshot_key(shape)
    for n in range(warm.SLOTS):   # this test's own key: cold first
        shutil.rmtree(warm.Slot(key, n).directory, ignore_errors=True)
    first = _claim(lab_image, accelerator, shape)
    with first.lab as lab:
        assert first.slot is not None and not lab.boot_warm(first.slot, shape, timeout=120)
        lab_id = lab.lab_id
    snapshot = first.slot.snapshot()
    assert snapshot is not None and snapshot.lab_id == lab_id
    saved = [p for p in snapshot.directory.iterdir() if p.suffix in (".save", ".qcow2")]
    assert saved and all(p.stat().st_mode & 0o777 == 0o600 for p in saved)
    assert snapshot.directory.stat().st_mode & 0o777 == 0o700
    assert json.loads((snapshot.directory / "snapshot.json").read_text())["nodes"] == ["warmcheck"]
    assert not [lease for lease in leases.all_leases()[0] if lease.kind == "temp-warm-staging"]
    assert leftovers(set(), {lab_id}) == []

    second = _claim(lab_image, accelerator, shape)
    assert second.slot == first.slot
    with second.lab as lab:
        assert lab.boot_warm(second.slot, shape, timeout=120)
        node = lab["warmcheck"]
        assert node.run("hostname", timeout=15, check=True).stdout.strip() == "warmcheck"
        meta = ET.fromstring(node._domain().metadata(2, METADATA_NS))   # VIR_DOMAIN_METADATA_ELEMENT
        assert meta.findtext("owner") == str(ProcessId.current())
        # The clock stood still in the save: set to the host's, within the trip's time.
        time.sleep(1.2)   # past the background step to the next second
        skew = float(node.run("date +%s", timeout=15, check=True).stdout) - time.time()
        assert -2.0 < skew < 1.0, skew
        # A run beside it wants the same snapshot: it gets another slot (and would boot cold).
        beside = _claim(lab_image, accelerator, shape)
        with beside.lab:
            assert beside.slot is not None and beside.slot.number != second.slot.number
            assert "in use by other runs" in beside.why
    assert leftovers(set(), {lab_id}) == []
    shutil.rmtree(snapshot.directory, ignore_errors=True)
