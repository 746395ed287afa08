"""Choose the accelerator: KVM only when a probe guest actually runs under it, else TCG.

On nested hosts /dev/kvm can exist and still be unusable (LAB-NOTES: a paging-based nested
hypervisor aborts or crawls), so the only honest probe is a real guest reaching its first marker.
The verdict is cached per host boot and QEMU build, and its reason goes into the evidence.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ucnb import files, paths
from ucnb.errors import InfrastructureError
from ucnb.host.procs import ProcessId
from ucnb.image import GuestImage
from ucnb.lab import domain as domain_mod
from ucnb.lab.serial import SerialWatcher

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Accelerator:
    mode: str      # "kvm" or "tcg"
    reason: str

    @property
    def libvirt_type(self) -> str:
        return "kvm" if self.mode == "kvm" else "qemu"


def _host_key() -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return f"{boot_id} {qemu.splitlines()[0] if qemu else 'unknown qemu'}"


def choose(image: GuestImage, conn: object) -> Accelerator:
    """The accelerator for this host: forced by UCNB_ACCEL, cached, or probed now."""
    forced = os.environ.get("UCNB_ACCEL", "auto")
    if forced in ("kvm", "tcg"):
        return Accelerator(forced, f"forced by UCNB_ACCEL={forced}")
    if forced != "auto":
        raise InfrastructureError(f"UCNB_ACCEL must be kvm, tcg or auto, not {forced!r}")
    if not os.path.exists("/dev/kvm"):
        return Accelerator("tcg", "/dev/kvm is absent")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accelerator("tcg", "/dev/kvm is not readable and writable")
    cache = paths.cache_dir() / "accelerator.json"
    key = _host_key()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("host") == key:
            return Accelerator(cached["mode"], cached["reason"] + " (probed earlier this host boot)")
    except (OSError, ValueError, KeyError):
        pass
    verdict = probe_kvm(image, conn)
    files.atomic_write_text(cache, json.dumps({"host": key, **asdict(verdict)}) + "\n")
    return verdict


def probe_kvm(image: GuestImage, conn: object) -> Accelerator:
    """Boot the lab kernel under KVM and wait for its first marker."""
    import libvirt

    assert isinstance(conn, libvirt.virConnect)
    from ucnb.lab.leases import temp_dir

    with temp_dir(paths.cache_dir(), "kvm-probe") as tmp:
        log = Path(tmp) / "serial.log"
        lab_id = "probe" + uuid.uuid4().hex[:6]
        # Tagged like a lab's domain, so `ucnb lab clean` removes it if this process is killed.
        metadata = {"lab": lab_id, "run": os.environ.get("UCNB_RUN_ID", ""), "node": "kvmprobe",
                    "labs": str(paths.labs_dir()), "owner": str(ProcessId.current())}
        spec = domain_mod.NodeSpec(
            name="kvmprobe", memory_mib=256, vcpus=1, kernel=image.kernel, initrd=image.initrd,
            cmdline="console=ttyS0 ucnb.node=kvmprobe", disks=(), nics=(), serial_log=log,
            accelerator="kvm", metadata=metadata)
        watcher = SerialWatcher(log, "kvmprobe")
        start = time.monotonic()
        try:
            dom = conn.createXML(domain_mod.domain_xml(lab_id, spec), 0)
        except libvirt.libvirtError as exc:
            return Accelerator("tcg", f"KVM probe guest refused by libvirt: {exc}")
        try:
            watcher.start()
            try:
                watcher.cursor().wait_for("lab.boot", PROBE_TIMEOUT)
                return Accelerator("kvm", f"KVM probe guest reached its first marker in "
                                          f"{time.monotonic() - start:.1f}s")
            except Exception:
                return Accelerator("tcg", f"/dev/kvm present but a KVM probe guest printed no marker "
                                          f"within {PROBE_TIMEOUT:g}s (nested KVM unusable)")
        finally:
            watcher.stop()
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
