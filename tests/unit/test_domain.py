"""Domain and network XML (pure: no libvirt connection)."""

from __future__ import annotations

import dataclasses
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

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


class _Domain:
    """A listed domain: its definition, or gone (another run's teardown removed it after the listing)."""

    def __init__(self, xml: str | None) -> None:
        self.xml = xml

    def XMLDesc(self, _flags: int) -> str:
        if self.xml is None:
            raise libvirt.libvirtError("Domain not found: no domain with matching uuid")
        return self.xml


def test_tagged_domains_reads_each_definition_once_and_skips_one_gone_meanwhile() -> None:
    from ucnb import paths
    from ucnb.lab.registry import tagged_domains

    def defined(lab: str, labs: str, networks: tuple[str, ...]) -> _Domain:
        spec = _spec("tcg")
        nics = tuple(domain.NicSpec(n, f"52:54:00:01:00:0{i}", "") for i, n in enumerate(networks))
        spec = dataclasses.replace(spec, nics=nics, metadata={"lab": lab, "run": "r1", "labs": labs,
                                                              "owner": "4242:17:boot-1"})
        return _Domain(domain.domain_xml(lab, spec))

    ours = str(paths.labs_dir())
    listed = [defined("a1", ours, ("ucnb-a1", "ucnb-a1-1", "ucnb-b2", "default")), _Domain(None),
              defined("b2", "/elsewhere/labs", ("ucnb-b2",)), _Domain("<domain><name>x</name></domain>")]
    conn = type("Conn", (), {"listAllDomains": lambda _self: listed})()
    [tagged] = tagged_domains(conn)   # type: ignore[arg-type]
    assert (tagged.lab_id, tagged.run_id, tagged.networks) == ("a1", "r1", ("ucnb-a1", "ucnb-a1-1"))
    assert tagged.owner is not None and tagged.owner.pid == 4242


def test_a_lab_whose_guest_this_process_could_not_kill_loses_its_networks_only_after_its_domains(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ucnb.lab import registry

    done: list[str] = []

    class Removable:
        def __init__(self, name: str) -> None:
            self.name = name

        def destroy(self) -> None:
            if self.name.endswith("node01"):
                time.sleep(0.2)   # libvirt stopping a domain; a network goes at once
            done.append(f"destroy {self.name}")

        def undefine(self) -> None:
            done.append(f"undefine {self.name}")

        def bridgeName(self) -> str:
            return "not-a-lab-bridge"

    conn = type("Conn", (), {"listAllDomains": lambda _self: [],
                             "lookupByName": lambda _self, name: Removable(name),
                             "networkLookupByName": lambda _self, name: Removable(name)})()
    for killed, networks_after_domains in ((False, True), (True, False)):
        done.clear()
        monkeypatch.setattr(registry, "_kill_guest", lambda _name, killed=killed: killed)
        registry.destroy("lab1", conn, domains=["ucnb-lab1-node01"], networks=["ucnb-lab1"])  # type: ignore[arg-type]
        assert set(done) == {"destroy ucnb-lab1-node01", "undefine ucnb-lab1-node01", "destroy ucnb-lab1"}
        assert (done[-1] == "destroy ucnb-lab1") is networks_after_domains, done
