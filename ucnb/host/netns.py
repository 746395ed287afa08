"""The lab's network namespace: libvirtd, its bridges and every guest address live inside it.

Outside this namespace a connection to a lab address does not fail: it leaves the machine through
the default route. So every client that may reach a lab address (SSH, the deployer's admin API,
a Redfish BMC, media servers' callers) goes through `guard()`, or `urlopen()` for HTTP.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ucnb.errors import InfrastructureError, LabNamespaceError

NAME = os.environ.get("UCNB_NETNS", "ucnb")
CLONE_NEWNET = 0x40000000
# Lab network i of subnet N is LAB_PREFIXES[i].N.0/24 (see ucnb.lab.lab): these /16s are the lab's.
LAB_PREFIXES = ("10.77", "10.78")
LAB_NETWORKS = tuple(ipaddress.ip_network(f"{p}.0.0/16") for p in LAB_PREFIXES)


def path() -> Path:
    return Path("/run/netns") / NAME


def exists() -> bool:
    return path().exists()


def _ns_id(p: str | Path) -> tuple[int, int]:
    st = os.stat(p)
    return (st.st_dev, st.st_ino)


def inside() -> bool:
    """True when the calling thread's network namespace is the lab's."""
    return exists() and _ns_id("/proc/thread-self/ns/net") == _ns_id(path())


def process_inside(pid: int) -> bool:
    try:
        return exists() and _ns_id(f"/proc/{pid}/ns/net") == _ns_id(path())
    except OSError:
        return False


def create() -> None:
    """Create the namespace (idempotent) with its loopback up, forwarding nothing: the lab
    networks' bridges are not routed into each other (labs side by side stay apart)."""
    if not exists():
        _ip("netns", "add", NAME)
    _ip("-n", NAME, "link", "set", "lo", "up")
    _ip("netns", "exec", NAME, "sysctl", "-q", "-e", "-w", "net.ipv4.ip_forward=0",
        "net.ipv6.conf.all.forwarding=0")


# A lab network's wire is a bridge of ours in the namespace, which libvirt is given as it is
# (`<forward mode='bridge'/>`): its own isolated networks cost 11 iptables-nft calls to create
# and 11 to remove (0.2 s of every teardown here), rules that filtered nothing in a namespace
# that forwards nothing.
BRIDGE = re.compile(r"ucnb(\d+)n(\d+)")   # the bridge of lab subnet N's network i: ucnb<N>n<i>


def bridge_name(subnet: int, network: int) -> str:
    return f"ucnb{subnet}n{network}"


def bridge_subnet(name: str) -> int | None:
    """The lab subnet a bridge name is for, or None when it is not a lab bridge's."""
    match = BRIDGE.fullmatch(name)
    return int(match.group(1)) if match else None


def add_bridge(name: str, address: str) -> None:
    """Bridge `name` (a BRIDGE name) up, with the namespace's own `address` (CIDR) on it."""
    if not BRIDGE.fullmatch(name):
        raise ValueError(f"{name!r} is not a lab bridge name")
    _ip("-n", NAME, "link", "add", "name", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    _ip("-n", NAME, "addr", "add", address, "dev", name)
    _ip("-n", NAME, "link", "set", name, "up")


def remove_bridge(name: str) -> None:
    """Remove lab bridge `name` from the namespace, if it is there (still there: an error)."""
    if not BRIDGE.fullmatch(name):
        return
    try:
        _ip("-n", NAME, "link", "del", name)
    except InfrastructureError:
        if name in bridges():   # not gone meanwhile (`ucnb lab clean` may remove it too)
            raise


def bridges() -> list[str]:
    """The lab bridges in the namespace (none when it does not exist)."""
    if not exists():
        return []
    result = subprocess.run(["ip", "-n", NAME, "-j", "link", "show", "type", "bridge"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise InfrastructureError(f"cannot list the lab namespace's bridges: {result.stderr.strip()}")
    return sorted(link["ifname"] for link in json.loads(result.stdout or "[]")
                  if BRIDGE.fullmatch(link.get("ifname", "")))


def delete() -> None:
    if exists():
        _ip("netns", "delete", NAME)


def enter() -> None:
    """Move the calling thread (and threads it starts later) into the lab namespace.

    Needs root; libvirt keeps working because its socket is a filesystem path.
    """
    if inside():
        return
    if not exists():
        raise InfrastructureError(
            f"lab network namespace {NAME!r} does not exist: run `ucnb host up` (or `make setup`)")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path(), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise InfrastructureError(f"cannot join network namespace {NAME!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def require_inside(address: str) -> None:
    """Refuse a connection to a lab address unless this thread is inside the lab namespace."""
    if not inside():
        raise LabNamespaceError(
            f"refusing to connect to lab address {address}: this thread is not in the lab network "
            f"namespace {NAME!r}, where such a connection would leave the machine. Call "
            f"ucnb.host.netns.enter() first, or run under `ip netns exec {NAME} …`.")


def is_lab_address(host: str) -> bool:
    """`host` is, or resolves to, an address of a lab network."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False   # unresolvable: the connection will fail by itself
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return any(a.version == 4 and any(a in net for net in LAB_NETWORKS) for a in addresses)


def guard(host: str) -> None:
    """The one check before any connection: a lab address only from inside the lab namespace."""
    if is_lab_address(host):
        require_inside(host)


def urlopen(request: urllib.request.Request | str, timeout: float,
            context: ssl.SSLContext | None = None) -> Any:
    """`urllib.request.urlopen` behind `guard` (no proxy: a proxy would carry the request out);
    `context` verifies an HTTPS server (e.g. against a run's private CA)."""
    url = request.full_url if isinstance(request, urllib.request.Request) else request
    guard(urlsplit(url).hostname or "")
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    return opener.open(request, timeout=timeout)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise InfrastructureError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
