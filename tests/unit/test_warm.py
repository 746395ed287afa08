"""Warm-start snapshots: the key covers every input that shapes the guests, a changed input is
named, and runs side by side each claim their own slot (no libvirt: the lab maker is a stand-in)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ucnb.lab import warm
from ucnb.lab.lab import DiskConfig, LabUnavailable, NodeConfig

NODES = [NodeConfig("node01", services=("flaredb",), held=("chainfire",), networks=2),
         NodeConfig("node02", services=("flaredb",), held=("chainfire",), networks=2)]


def shape(nodes: list[NodeConfig] = NODES, **changes: str) -> dict[str, Any]:
    base = {"image_key": "img-a", "accelerator": "tcg", "profile": "lab", "hypervisor": "qemu 7002000",
            **changes}
    return warm.inputs(base["image_key"], base["accelerator"], base["profile"], nodes, base["hypervisor"])


def changed(node: int, **fields: Any) -> list[NodeConfig]:
    return [dataclasses.replace(n, **fields) if i == node else n for i, n in enumerate(NODES)]


@pytest.mark.parametrize(("name", "other", "named"), [
    ("image", shape(image_key="img-b"), "image img-a -> img-b"),
    ("accelerator", shape(accelerator="kvm"), "accelerator tcg -> kvm"),
    ("profile", shape(profile="ultracloud"), "profile lab -> ultracloud"),
    ("QEMU", shape(hypervisor="qemu 8000000"), "hypervisor qemu 7002000 -> qemu 8000000"),
    ("memory", shape(changed(0, memory_mib=384)), "node01 config"),
    ("cpus", shape(changed(1, vcpus=2)), "node02 config"),
    ("services", shape(changed(0, services=())), "node01 config"),
    ("a disk", shape(changed(1, disks=(DiskConfig("ucnb-data", "256M"),))), "node02 config"),
    ("kernel arguments", shape(changed(0, kernel_args="quiet")), "node01 config"),
    ("node set", shape(NODES[:1]), "nodes ['node01', 'node02'] -> ['node01']"),
])
def test_every_input_that_shapes_the_guests_changes_the_key_and_is_named(
        name: str, other: dict[str, Any], named: str) -> None:
    assert warm.snapshot_key(other) != warm.snapshot_key(shape()), name
    assert named in warm.changes(other, shape())


def test_the_same_inputs_give_the_same_key_and_no_changes() -> None:
    assert warm.snapshot_key(shape()) == warm.snapshot_key(shape())
    assert warm.changes(shape(), shape()) == []


class FakeLab:
    def __init__(self, lab_id: str | None = None, subnet: int | None = None,
                 high_subnet: bool = False) -> None:
        self.lab_id, self.subnet, self.high_subnet = lab_id or "fresh", subnet, high_subnet


def maker(busy: set[str]) -> Any:
    made: list[FakeLab] = []

    def make(**options: Any) -> FakeLab:
        if options.get("lab_id") in busy:
            raise LabUnavailable(f"lab id {options['lab_id']} is in use on this host")
        made.append(FakeLab(**options))
        return made[-1]
    return make


def saved(slot: warm.Slot, subnet: int, inputs: dict[str, Any], when: float = 1.0) -> None:
    slot.directory.mkdir(parents=True)
    (slot.directory / "snapshot.json").write_text(json.dumps(
        {"lab_id": slot.lab_id, "subnet": subnet, "nodes": list(inputs["nodes"]), "saved": when,
         "inputs": inputs}))


def test_a_run_restores_a_free_slot_with_a_snapshot_under_its_id_and_subnet() -> None:
    key = warm.snapshot_key(shape())
    saved(warm.Slot(key, 1), 240, shape())
    claim = warm.claim(shape(), maker(set()))
    assert claim.slot == warm.Slot(key, 1) and claim.why == ""
    assert (claim.lab.lab_id, claim.lab.subnet) == (warm.Slot(key, 1).lab_id, 240)


def test_two_runs_of_one_snapshot_the_second_takes_another_slot_and_says_why_it_boots_cold() -> None:
    key = warm.snapshot_key(shape())
    saved(warm.Slot(key, 0), 249, shape())
    claim = warm.claim(shape(), maker({warm.Slot(key, 0).lab_id}))
    assert claim.slot is not None and claim.slot.number == 1
    assert claim.lab.subnet is None and claim.lab.high_subnet   # a new slot keeps a high subnet
    assert claim.why == (f"the snapshots of these inputs are in use by other runs "
                         f"(slot 0: lab id {warm.Slot(key, 0).lab_id} is in use on this host)")


def test_with_every_slot_taken_the_lab_is_its_own_and_the_reason_names_the_slots() -> None:
    key = warm.snapshot_key(shape())
    claim = warm.claim(shape(), maker({warm.Slot(key, n).lab_id for n in range(warm.SLOTS)}))
    assert claim.slot is None and claim.lab.lab_id == "fresh"
    assert f"every warm slot of {key} is in use" in claim.why and "slot 2: lab id" in claim.why


def test_a_changed_input_misses_and_names_what_changed_since_the_newest_snapshot() -> None:
    old, older = shape(image_key="img-old"), shape(changed(0, memory_mib=512))
    saved(warm.Slot(warm.snapshot_key(older), 0), 248, older, when=1.0)
    saved(warm.Slot(warm.snapshot_key(old), 0), 249, old, when=2.0)
    saved(warm.Slot(warm.snapshot_key(shape(NODES[:1])), 0), 247, shape(NODES[:1]), when=3.0)  # other nodes
    claim = warm.claim(shape(), maker(set()))
    assert claim.slot is not None and claim.slot.key == warm.snapshot_key(shape())
    assert claim.why == "inputs changed since the last snapshot of these nodes: image img-old -> img-a"


def test_slots_are_lab_ids_the_lab_registry_accepts(tmp_path: Path) -> None:
    import re

    slot = warm.Slot(warm.snapshot_key(shape()), warm.SLOTS - 1)
    assert re.fullmatch(r"[0-9a-z]{8}", slot.lab_id)
    assert len({warm.Slot(slot.key, n).lab_id for n in range(warm.SLOTS)}) == warm.SLOTS


def test_the_subnets_of_saved_snapshots_are_held_for_their_restores() -> None:
    saved(warm.Slot(warm.snapshot_key(shape()), 0), 249, shape())
    saved(warm.Slot(warm.snapshot_key(shape(NODES[:1])), 2), 231, shape(NODES[:1]))
    assert warm.held_subnets() == {249, 231}
