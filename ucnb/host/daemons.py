"""Start and stop virtlogd and libvirtd without systemd; libvirtd runs inside the lab namespace."""

from __future__ import annotations

import grp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ucnb.errors import InfrastructureError
from ucnb.host import netns

LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
PIDFILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}


def pid_of(daemon: str) -> int | None:
    """The live pid of a daemon according to its pid file, or None."""
    try:
        pid = int(PIDFILES[daemon].read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == daemon else None


def status() -> dict[str, str]:
    """One line of state per component, for `ucnb host status` and environment.txt."""
    out = {"netns": f"{netns.NAME} present" if netns.exists() else f"{netns.NAME} absent"}
    for daemon in PIDFILES:
        pid = pid_of(daemon)
        if pid is None:
            out[daemon] = "not running"
        elif daemon == "libvirtd":
            where = "lab namespace" if netns.process_inside(pid) else "HOST namespace"
            out[daemon] = f"running (pid {pid}, {where})"
        else:
            out[daemon] = f"running (pid {pid})"
    return out


def up() -> None:
    """Idempotently create the lab namespace and start virtlogd and libvirtd (inside it)."""
    if os.geteuid() != 0:
        raise InfrastructureError("the lab host needs root (libvirtd, network namespaces)")
    for tool in ("ip", "libvirtd", "virtlogd", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            raise InfrastructureError(f"{tool} is not installed: run `make setup`")
    netns.create()
    _kvm_device_permissions()
    # libvirt's network driver writes MAC lists here even for DHCP-less networks.
    Path("/var/lib/libvirt/dnsmasq").mkdir(parents=True, exist_ok=True)
    if pid_of("virtlogd") is None:
        _run(["virtlogd", "-d"])
    pid = pid_of("libvirtd")
    if pid is not None and not netns.process_inside(pid):
        raise InfrastructureError(
            f"libvirtd (pid {pid}) runs in the host network namespace; stop it so ucnb can run "
            f"its own inside {netns.NAME!r} (its bridges must not touch the host's network)")
    if pid is None:
        LIBVIRT_SOCKET.unlink(missing_ok=True)
        # Detached, under a subreaper that outlives this process (see reaper.py for why).
        subprocess.Popen([sys.executable, "-m", "ucnb.host.reaper", "ip", "netns", "exec", netns.NAME,
                          "libvirtd", "-d"], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    deadline = time.monotonic() + 30
    while not LIBVIRT_SOCKET.exists():
        if time.monotonic() > deadline:
            raise InfrastructureError(f"libvirtd started but {LIBVIRT_SOCKET} never appeared")
        time.sleep(0.1)


def _kvm_device_permissions() -> None:
    """Give /dev/kvm the owner udev gives it on Debian (root:kvm 0660); there is no udev here.

    Otherwise libvirt sees KVM as unavailable to its QEMU user, declares its capability cache
    stale and re-probes QEMU (about 2 s a probe, dozens per domain start).
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    st = kvm.stat()
    if st.st_gid != gid or (st.st_mode & 0o660) != 0o660:
        os.chown(kvm, 0, gid)
        kvm.chmod(0o660)


def down() -> None:
    """Stop libvirtd and virtlogd and delete the namespace (labs should be cleaned first)."""
    for daemon in ("libvirtd", "virtlogd"):
        pid = pid_of(daemon)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_of(daemon) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_of(daemon) is not None:
            os.kill(pid, signal.SIGKILL)
    netns.delete()


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InfrastructureError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
