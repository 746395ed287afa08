"""A read-only tools disk: Debian-packaged programs for the guests, with their shared libraries.

Some programs are too big, or have too many libraries, for the initramfs (Debian's fio links 63
libraries, ~82 MB). They go on a raw ext4 disk built without mounting (`mke2fs -d`), cached by
content like the guest image, and attached read-only to the guests that need them. Each program
runs through the disk's own dynamic loader with the disk's libraries, so nothing on the guest's
root has to match:

    /bin/<program>      a wrapper: exec <disk>/lib/<loader> --library-path <disk>/lib <disk>/libexec/<program>
    /libexec/<program>  the host's (Debian's) binary
    /lib/               every library `ldd` names, flattened by soname, and the loader
    /packages.json      which Debian package and version each program came from

The wrapper finds the disk from its own path, so the disk works wherever it is mounted.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ucnb import files, paths
from ucnb.errors import InfrastructureError
from ucnb.image.build import shared_libraries

TOOLS_FORMAT = "1"          # bump when the layout above changes
SERIAL = "ucnb-tools"       # /dev/disk/by-id/virtio-ucnb-tools in the guest
MOUNTPOINT = "/tools"
WRAPPER = """#!/bin/sh
# ucnb tools disk: {program} with this disk's loader and libraries (see ucnb/image/tools.py).
d=${{0%/bin/*}}
exec "$d/lib/{loader}" --library-path "$d/lib" "$d/libexec/{program}" "$@"
"""


@dataclass(frozen=True)
class ToolsDisk:
    key: str
    directory: Path
    programs: tuple[str, ...]

    @property
    def image(self) -> Path:
        """The raw ext4 image (attach read-only, serial SERIAL)."""
        return self.directory / "tools.img"

    @property
    def packages(self) -> dict[str, str]:
        """program -> 'package version' (Debian's), for the evidence."""
        return dict(json.loads((self.directory / "packages.json").read_text()))

    def command(self, program: str, mountpoint: str = MOUNTPOINT) -> str:
        """The program's path in a guest that ran `mount_command(mountpoint)`."""
        if program not in self.programs:
            raise KeyError(f"the tools disk {self.key} holds {', '.join(self.programs)}, not {program}")
        return f"{mountpoint}/bin/{program}"


def mount_command(mountpoint: str = MOUNTPOINT) -> str:
    """The guest shell command that mounts the tools disk read-only (idempotent).

    `noload`: the device is read-only, so ext4 must not even try to replay a journal."""
    mp = shlex.quote(mountpoint)
    mounted = shlex.quote(f" {mountpoint} ")   # busybox has no `mountpoint`: ask /proc/mounts
    return (f"mkdir -p {mp} && {{ grep -qF {mounted} /proc/mounts || mount -t ext4 -o ro,noload "
            f"/dev/disk/by-id/virtio-{SERIAL} {mp}; }}")


def _package_of(program: Path) -> str:
    """'package version' of the Debian package owning `program` (or 'unpackaged')."""
    owner = subprocess.run(["dpkg-query", "-S", str(program)], capture_output=True, text=True)
    if owner.returncode != 0:
        return "unpackaged"
    package = owner.stdout.split(":", 1)[0].strip()
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                             text=True).stdout.strip()
    return f"{package} {version}".strip()


def _inputs(programs: Sequence[Path]) -> dict[Path, list[Path]]:
    missing = [str(p) for p in programs if not p.is_file()]
    if missing:
        raise InfrastructureError(f"{', '.join(missing)} missing on this host: run `make setup`")
    return {p: shared_libraries(str(p)) for p in programs}


def _key(closure: dict[Path, list[Path]]) -> str:
    """Paths with (size, mtime) of every binary and library: only a package upgrade changes them."""
    digest = hashlib.sha256(f"{TOOLS_FORMAT}\n{WRAPPER}".encode())
    for program, libs in sorted(closure.items()):
        for f in (program, *sorted(libs)):
            st = f.stat()
            digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def build_tools_disk(programs: Sequence[str], log: Callable[[str], None] = lambda _: None) -> ToolsDisk:
    """The cached tools disk holding `programs` (host paths such as /usr/bin/fio), built when needed."""
    sources = [Path(p) for p in programs]
    closure = _inputs(sources)
    key = _key(closure)
    names = tuple(p.name for p in sources)
    directory = paths.cache_dir("tools") / key
    disk = ToolsDisk(key, directory, names)
    if (directory / "packages.json").exists():
        return disk
    log(f"building tools disk {key} ({', '.join(names)})")
    with tempfile.TemporaryDirectory(dir=paths.cache_dir("tools")) as tmp:
        root, staging = Path(tmp) / "root", Path(tmp) / "disk"
        for d in ("bin", "libexec", "lib"):
            (root / d).mkdir(parents=True)
        staging.mkdir()
        packages = {}
        for program, libs in closure.items():
            loaders = [lib for lib in libs if lib.name.startswith("ld-linux")]
            if len(loaders) != 1:
                raise InfrastructureError(f"{program}: expected one dynamic loader in ldd's output, "
                                          f"found {[str(x) for x in loaders]}")
            for lib in libs:
                shutil.copy2(lib, root / "lib" / lib.name, follow_symlinks=True)
            shutil.copy2(program, root / "libexec" / program.name)
            wrapper = root / "bin" / program.name
            wrapper.write_text(WRAPPER.format(program=program.name, loader=loaders[0].name))
            wrapper.chmod(0o755)
            packages[program.name] = _package_of(program)
        (root / "packages.json").write_text(json.dumps(packages, indent=2) + "\n")
        used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        size_mib = used * 5 // 4 // 2**20 + 16   # ext4 metadata and a margin
        mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
        done = subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", SERIAL, "-d", str(root),
                               str(staging / "tools.img"), f"{size_mib}M"], capture_output=True, text=True)
        if done.returncode != 0:
            raise InfrastructureError(f"mke2fs of the tools disk failed: {done.stderr.strip()[-300:]}")
        shutil.copy2(root / "packages.json", staging / "packages.json")
        files.publish_dir(staging, directory, complete="packages.json")
    log(f"tools disk {key} ready ({size_mib} MiB)")
    return disk
