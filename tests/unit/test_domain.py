"""Domain and network XML (pure: no libvirt connection)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ucnb.lab import domain


def _spec(accel: str) -> domain.NodeSpec:
    return domain.NodeSpec(
        name="node01", memory_mib=256, vcpus=1, kernel=Path("/k"), initrd=Path("/i"),
        cmdline="console=ttyS0 ucnb.node=node01", serial_log=Path("/tmp/s.log"), accelerator=accel,
        disks=(domain.DiskSpec(Path("/d.qcow2"), "uc-control-root"),),
        nics=(domain.NicSpec("ucnb-lab", "52:54:00:01:00:01", "10.77.1.11/24"),))


def test_domain_xml_tcg() -> None:
    root = ET.fromstring(domain.domain_xml("lab1", _spec("tcg")))
    assert root.get("type") == "qemu" and root.findtext("name") == "ucnb-lab1-node01"
    assert root.find("devices/disk/serial").text == "uc-control-root"  # type: ignore[union-attr]
    assert root.find("features/tcg/tb-cache") is not None
    assert root.find("devices/serial/log").get("append") == "on"  # type: ignore[union-attr]
    assert root.find("devices/interface/link").get("state") == "up"  # type: ignore[union-attr]


def test_domain_xml_kvm() -> None:
    root = ET.fromstring(domain.domain_xml("lab1", _spec("kvm")))
    assert root.get("type") == "kvm" and root.find("features/tcg") is None
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_a_network_is_our_bridge_with_nothing_of_libvirts_on_it() -> None:
    root = ET.fromstring(domain.network_xml("ucnb-x", "ucnb7n0"))
    assert root.find("forward").get("mode") == "bridge"  # type: ignore[union-attr]
    assert root.find("bridge").get("name") == "ucnb7n0"  # type: ignore[union-attr]
    assert root.find("ip") is None and root.find("dns") is None   # no address, DHCP or DNS of libvirt's
