"""Which Debian packages (and versions) a lab guest image carries, for environment.txt.

The image copies busybox, dropbear, sqlite3 and etcd from the host's installed packages and
unpacks runit and the kernel from downloaded debs; the image key hashes those inputs, so the
answer is fixed per image and kept beside it (`guest-packages.txt`) after the first look-up.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from ucnb import paths
from ucnb.image.build import INITRAMFS_PROGRAMS, SYSTEM_DISK_PROGRAMS, GuestImage

HOST_PROGRAMS = ("/bin/busybox", *INITRAMFS_PROGRAMS, *SYSTEM_DISK_PROGRAMS)
CACHE_NAME = "guest-packages.txt"


def _lines(cmd: list[str]) -> list[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.splitlines()


def host_packages(programs: tuple[str, ...] = HOST_PROGRAMS) -> list[str]:
    """`package=version` of the installed packages owning `programs` (dpkg's own answer)."""
    owners = sorted({line.split(":")[0].strip() for line in _lines(["dpkg", "-S", *programs])
                     if ":" in line and not line.startswith("diversion")})
    if not owners:
        return []
    return _lines(["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *owners])


def unpacked_debs() -> list[str]:
    """`package=version` of the debs unpacked into the cache (runit), from their file names."""
    found = []
    for marker in sorted(paths.cache_dir("debs").glob("*/.unpacked")):
        name = marker.read_text().strip()                   # runit_2.1.2-54_amd64.deb
        parts = name.removesuffix(".deb").split("_")
        if len(parts) == 3 and not parts[0].startswith("linux-image"):
            found.append(f"{parts[0]}={parts[1].replace('%3a', ':')}")
    return found


def guest_packages(image: GuestImage) -> str:
    """The image's packages as one line (`busybox-static=1:1.35.0-4 dropbear-bin=… kernel=…`)."""
    cache = Path(image.directory) / CACHE_NAME
    with contextlib.suppress(OSError):
        return cache.read_text().strip()
    packages = [*host_packages(), *unpacked_debs(), f"linux-image={image.kernel_version}"]
    line = " ".join(packages)
    with contextlib.suppress(OSError):   # a read-only cache only costs the look-up next time
        cache.write_text(line + "\n")
    return line
