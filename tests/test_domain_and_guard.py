"""Domain XML (pure) and the lab-namespace guard."""

from __future__ import annotations

import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from ucnb.host import netns
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


def test_network_is_isolated() -> None:
    root = ET.fromstring(domain.network_xml("ucnb-x", "ucnb7", "10.77.7.1"))
    assert root.find("forward") is None and root.find("ip/dhcp") is None
    assert root.find("dns").get("enable") == "no"  # type: ignore[union-attr]


GUARD_PROBE = """
import socket
from ucnb.errors import LabNamespaceError
from ucnb.host import netns
from ucnb.image.keys import lab_keys
from ucnb.lab.ssh import GuestShell

def no_sockets(*args, **kwargs):
    raise SystemExit("a socket was opened to a lab address from the host namespace")

socket.create_connection = no_sockets
socket.socket.connect = no_sockets
assert not netns.inside()
keys = lab_keys()
shell = GuestShell("node01", "10.77.1.11", keys.client_private, keys.host_public)
for attempt in (shell.connect, lambda: shell.run("true")):
    try:
        attempt()
    except LabNamespaceError as exc:
        print("refused:", exc)
    else:
        raise SystemExit("connected")
"""


def test_guard_refuses_lab_addresses_outside_the_namespace(lab_host: None) -> None:
    """Outside the namespace a lab address is routed off the machine: no socket may be opened.

    Runs in a fresh process, which is certainly in the host namespace.
    """
    out = subprocess.run([sys.executable, "-c", GUARD_PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("refused:") == 2
    assert "not in the lab network namespace" in out.stdout


def test_enter_moves_only_the_calling_thread(lab_host: None) -> None:
    seen: dict[str, bool] = {}
    before = netns.inside()

    def worker() -> None:
        netns.enter()
        seen["worker"] = netns.inside()
        child = threading.Thread(target=lambda: seen.__setitem__("child", netns.inside()))
        child.start()
        child.join()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": True, "child": True}
    assert netns.inside() == before  # the calling thread is where it was
