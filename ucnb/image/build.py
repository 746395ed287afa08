"""Build the lab guest offline from Debian packages, into a content-addressed cache.

Outputs per image: Debian's cloud kernel, a small gzip initramfs (busybox, runit, dropbear,
sqlite3, dmsetup, the virtio and device-mapper modules, the product-surface manifest, the host's
lab keys) and a raw ext4 system disk holding the big binaries (etcd), which every node gets as a
qcow2 overlay.
The image is rebuilt only when one of its inputs changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ucnb import files, paths
from ucnb.errors import InfrastructureError
from ucnb.image import debs
from ucnb.image.keys import lab_keys
from ucnb.lab.leases import temp_dir
from ucnb.profiles import Profile

GUEST_DIR = Path(__file__).resolve().parent / "guest"
BUILD_FORMAT = "4"  # bump when the layout below changes
# Loaded by /init: the virtio drivers. Shipped for lanes to load on demand: device-mapper and its
# flakey target (disk faults injected inside a guest; error and linear are built into dm-mod).
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng", "dm_mod", "dm_flakey"]
INITRAMFS_PROGRAMS = ["/usr/sbin/dropbear", "/usr/bin/sqlite3", "/usr/sbin/dmsetup"]
SYSTEM_DISK_PROGRAMS = ["/usr/bin/etcd", "/usr/bin/etcdctl"]
RUNIT_PROGRAMS = ["usr/bin/runsvdir", "usr/bin/runsv", "usr/bin/sv"]
SYSTEM_DISK_SIZE = "512M"


@dataclass(frozen=True)
class GuestImage:
    key: str
    directory: Path
    kernel_version: str

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def system_disk(self) -> Path:
        return self.directory / "system.img"

    @property
    def manifest(self) -> dict[str, object]:
        return dict(json.loads((self.directory / "product-surface.json").read_text()))


def _hash_files(digest: hashlib._Hash, files: Iterable[Path]) -> None:
    """Content of our own small files; (size, mtime) of packaged binaries, which only an
    upgrade changes (hashing 40 MB of etcd on every run would cost half a second)."""
    for f in sorted(files):
        digest.update(str(f).encode())
        if f.is_relative_to(GUEST_DIR):
            digest.update(f.read_bytes())
        else:
            st = f.stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())


def shared_libraries(program: str) -> list[Path]:
    """Every library `ldd` resolves for `program` (absolute paths, the loader included)."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def _module_closure(kernel_root: Path, kver: str, modules: Iterable[str] = MODULES) -> list[str]:
    """Module files (relative to lib/modules/KVER) for `modules` and everything they depend on."""
    moddir = kernel_root / "lib/modules" / kver
    if not (moddir / "modules.dep").exists():
        subprocess.run(["busybox", "depmod", "-b", str(kernel_root), kver], check=True)
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
    wanted: set[str] = set()
    todo = [by_name[m.replace("-", "_")] for m in modules]
    while todo:
        mod = todo.pop()
        if mod not in wanted:
            wanted.add(mod)
            todo.extend(deps[mod])
    return sorted(wanted)


def _copy(src: Path, root: Path, dest: str | None = None) -> None:
    target = root / (dest or str(src).lstrip("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target, follow_symlinks=True)


def build_image(profile: Profile, log: Callable[[str], None] = lambda _: None) -> GuestImage:
    """Return the cached guest image for this profile and host, building it when inputs changed."""
    for program in ("busybox", "cpio", "mke2fs", "dropbearconvert", "apt-get", *INITRAMFS_PROGRAMS,
                    *SYSTEM_DISK_PROGRAMS):
        if shutil.which(program) is None and not Path(program).exists():
            raise InfrastructureError(f"{program} is missing: run `make setup`")
    kernel_pkg = debs.resolve_dependency("linux-image-cloud-amd64", "linux-image-")
    kver = kernel_pkg.removeprefix("linux-image-")
    runit_root = debs.unpacked("runit")
    keys = lab_keys()
    manifest = json.dumps(profile.manifest(), indent=2, sort_keys=True)

    digest = hashlib.sha256(f"{BUILD_FORMAT}\n{kernel_pkg}\n{manifest}\n".encode())
    digest.update(keys.client_public.encode())
    _hash_files(digest, [keys.host_private_dropbear, Path("/bin/busybox"),
                         *(Path(p) for p in INITRAMFS_PROGRAMS + SYSTEM_DISK_PROGRAMS),
                         *(runit_root / p for p in RUNIT_PROGRAMS),
                         *(p for p in GUEST_DIR.rglob("*") if p.is_file())])
    key = digest.hexdigest()[:16]
    directory = paths.cache_dir("images") / key
    image = GuestImage(key, directory, kver)
    if (directory / "product-surface.json").exists():
        return image

    log(f"building guest image {key} (kernel {kver})")
    kernel_root = debs.unpacked(kernel_pkg)
    with temp_dir(paths.cache_dir("images"), "image-build") as tmp:
        staging = Path(tmp) / "image"
        staging.mkdir()
        shutil.copy2(kernel_root / "boot" / f"vmlinuz-{kver}", staging / "vmlinuz")
        _build_initramfs(Path(tmp) / "initramfs", staging / "initrd.img", kernel_root, kver, runit_root,
                         keys.client_public, keys.host_private_dropbear, manifest)
        _build_system_disk(Path(tmp) / "system", staging / "system.img")
        (staging / "product-surface.json").write_text(manifest + "\n")
        (staging / "build.json").write_text(json.dumps(
            {"key": key, "kernel_package": kernel_pkg, "kernel_version": kver,
             "format": BUILD_FORMAT}, indent=2) + "\n")
        files.publish_dir(staging, directory, complete="product-surface.json")
    log(f"guest image {key} ready")
    return image


def _build_initramfs(root: Path, out: Path, kernel_root: Path, kver: str, runit_root: Path,
                     authorized_key: str, host_key: Path, manifest: str) -> None:
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "lab", "root/.ssh",
              "etc/dropbear", "etc/ultracloud"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _copy(Path("/bin/busybox"), root, "bin/busybox")
    shutil.copy2(GUEST_DIR / "init", root / "init")
    shutil.copytree(GUEST_DIR / "sv", root / "etc/sv")
    shutil.copytree(GUEST_DIR / "flaredb", root / "etc/flaredb")
    for program in RUNIT_PROGRAMS:
        _copy(runit_root / program, root, "bin/" + Path(program).name)
    for program in INITRAMFS_PROGRAMS:
        _copy(Path(program), root, "bin/" + Path(program).name)
        for lib in shared_libraries(program):
            _copy(lib, root)
    for mod in _module_closure(kernel_root, kver):
        _copy(kernel_root / "lib/modules" / kver / mod, root, f"lib/modules/{kver}/{mod}")
    subprocess.run(["busybox", "depmod", "-b", str(root), kver], check=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (root / "root/.ssh/authorized_keys").write_text(authorized_key + "\n")
    (root / "root/.ssh").chmod(0o700)
    (root / "root").chmod(0o700)
    shutil.copy2(host_key, root / "etc/dropbear/dropbear_ed25519_host_key")
    (root / "etc/ultracloud/product-surface.json").write_text(manifest + "\n")
    pack_initramfs(root, out)


def pack_initramfs(root: Path, out: Path) -> None:
    """Pack the tree `root` as a reproducible gzip newc cpio (an initramfs) into `out`."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "--reproducible"], cwd=root,
                          input=("\n".join([".", *files]) + "\n").encode(), capture_output=True)
    if cpio.returncode != 0:
        raise InfrastructureError(f"cpio failed: {cpio.stderr.decode()[-300:]}")
    gz = subprocess.run(["gzip", "-6", "-n"], input=cpio.stdout, capture_output=True, check=True)
    out.write_bytes(gz.stdout)


def _build_system_disk(root: Path, out: Path) -> None:
    for d in ("bin", "etc", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for program in SYSTEM_DISK_PROGRAMS:
        _copy(Path(program), root, "bin/" + Path(program).name)
    subprocess.run(["/usr/sbin/mke2fs" if os.path.exists("/usr/sbin/mke2fs") else "/sbin/mke2fs",
                    "-q", "-F", "-t", "ext4", "-L", "ucnb-system", "-d", str(root), str(out),
                    SYSTEM_DISK_SIZE], check=True, capture_output=True)
