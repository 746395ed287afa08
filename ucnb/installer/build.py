"""The reference installer, built offline from Debian packages into a content-addressed cache.

It stands in for the product's `nixosConfigurations.ultracloud-iso`: a live installer that phones
home to the deployer, downloads the install bundle, partitions the disk the install plan selects,
installs the system with extlinux and reboots into it. Outputs, per cache key:

- `vmlinuz`: the lab image's Debian cloud kernel (one kernel for installer and installed system);
- `installer.img`: the installer initramfs (busybox, virtio and vfat modules, extlinux and
  syslinux's mbr.bin/gptmbr.bin, sfdisk, mkfs.fat, e2fsprogs' mke2fs, GNU wget for TLS,
  `guest/installer-init`);
- `system.img`: the installed system's initramfs (busybox, runit, dropbear with the lab keys,
  GNU wget, sfdisk, the reference node agent, `guest/system-init`), which reaches the disk only
  through the bundle;
- `isolinux/`: isolinux.bin and ldlinux.c32 for the ISO.

ISOs are per node (their kernel command line carries the node's address and the bootstrap
token) and cheap (< 0.5 s): `build_iso` writes one wherever the caller wants it, never into a
proof root, since it holds the token.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ucnb import files, paths
from ucnb.errors import InfrastructureError
from ucnb.image import GuestImage, debs
from ucnb.image import build as image_build
from ucnb.image.keys import lab_keys
from ucnb.installer.layout import disko_script, load_layout
from ucnb.lab.leases import temp_dir

GUEST_DIR = Path(__file__).resolve().parent / "guest"
BUILD_FORMAT = "4"  # bump when the layout below changes
EXTLINUX = Path("/usr/bin/extlinux")
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
GPTMBR_BIN = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
# Disk tools at their Debian paths, called by full path in the guest: busybox's applets of the
# same names (mke2fs: ext2 only, mkfs.vfat, wget: no certificate verification) come first on PATH.
SFDISK = Path("/usr/sbin/sfdisk")          # fdisk: GPT and MBR tables, --json read-back
MKFS_FAT = Path("/usr/sbin/mkfs.fat")      # dosfstools
MKE2FS = Path("/usr/sbin/mke2fs")          # e2fsprogs: ext4
MKE2FS_CONF = Path("/etc/mke2fs.conf")
BLKID = Path("/usr/sbin/blkid")            # util-linux: the installed system's file systems, read back
# The TLS client that verifies the deployer against the private CA. The smallest that verifies
# and speaks HTTP itself: GNU wget (GnuTLS, ~3.3 MB gzip with its libraries) against openssl
# s_client (~2.5 MB, but no HTTP) or curl (~7 MB, 32 libraries).
GNU_WGET = Path("/usr/bin/wget")
DISK_MODULES = ("vfat", "nls_cp437", "nls_ascii")   # the ESP: fat is a module in Debian's cloud kernel
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
ISOHYBRID_MBR = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
HOST_FILES = (EXTLINUX, MBR_BIN, GPTMBR_BIN, ISOLINUX_BIN, ISOHYBRID_MBR, LDLINUX_C32, SFDISK, MKFS_FAT,
              MKE2FS, MKE2FS_CONF, GNU_WGET, BLKID)
ISO_LABEL = "ULTRACLOUD_INSTALLER"
# Console at warning level: the kernel's own "Command line:" notice (which would carry the token)
# stays off the console; the lab still redacts every artifact in case it does appear.
CONSOLE_ARGS = "console=ttyS0 loglevel=4 panic=-1"


@dataclass(frozen=True)
class InstallerArtifacts:
    """The cached installer and installed-system files of one cache key."""

    key: str
    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def installer_initrd(self) -> Path:
        return self.directory / "installer.img"

    @property
    def system_initrd(self) -> Path:
        return self.directory / "system.img"

    @property
    def isolinux(self) -> Path:
        return self.directory / "isolinux"


def _cache_key(image: GuestImage) -> str:
    digest = hashlib.sha256(f"{BUILD_FORMAT}\n{image.key}\n".encode())
    for f in sorted(p for p in GUEST_DIR.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(GUEST_DIR)).encode() + b"\0" + f.read_bytes())
    for f in HOST_FILES:  # packaged files change only with an upgrade: (size, mtime) is enough
        st = f.stat()
        digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_installer(image: GuestImage, log: Callable[[str], None] = lambda _: None) -> InstallerArtifacts:
    """Return the cached installer artifacts for this lab image, building them when inputs changed."""
    missing = [str(f) for f in HOST_FILES if not f.exists()]
    missing += [tool for tool in ("xorriso",) if shutil.which(tool) is None]
    if missing:
        raise InfrastructureError(f"installer build inputs missing ({', '.join(missing)}): run `make setup` "
                                  "(isolinux, syslinux-common, extlinux, xorriso, fdisk, dosfstools, "
                                  "e2fsprogs, wget)")
    key = _cache_key(image)
    directory = paths.cache_dir("installer") / key
    artifacts = InstallerArtifacts(key, directory)
    if (directory / "build.json").exists():
        return artifacts
    log(f"building reference installer {key}")
    kernel_root = debs.unpacked(f"linux-image-{image.kernel_version}")
    with temp_dir(paths.cache_dir("installer"), "installer-build") as tmp:
        staging = Path(tmp) / "out"
        (staging / "isolinux").mkdir(parents=True)
        shutil.copy2(image.kernel, staging / "vmlinuz")
        shutil.copy2(ISOLINUX_BIN, staging / "isolinux/isolinux.bin")
        shutil.copy2(LDLINUX_C32, staging / "isolinux/ldlinux.c32")
        _initramfs(Path(tmp) / "installer", staging / "installer.img", kernel_root, image.kernel_version,
                   system=False)
        _initramfs(Path(tmp) / "system", staging / "system.img", kernel_root, image.kernel_version,
                   system=True)
        (staging / "build.json").write_text(json.dumps(
            {"key": key, "guest_image": image.key, "kernel_version": image.kernel_version,
             "format": BUILD_FORMAT}, indent=2) + "\n")
        files.publish_dir(staging, directory, complete="build.json")
    return artifacts


def _initramfs(root: Path, out: Path, kernel_root: Path, kver: str, system: bool) -> None:
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "lib/ultracloud"):
        (root / d).mkdir(parents=True, exist_ok=True)
    image_build._copy(Path("/bin/busybox"), root, "bin/busybox")
    shutil.copy2(GUEST_DIR / "common.sh", root / "lib/ultracloud/common.sh")
    for mod in image_build._module_closure(kernel_root, kver, [*image_build.MODULES, *DISK_MODULES]):
        image_build._copy(kernel_root / "lib/modules" / kver / mod, root, f"lib/modules/{kver}/{mod}")
    subprocess.run(["busybox", "depmod", "-b", str(root), kver], check=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    if not system:
        shutil.copy2(GUEST_DIR / "installer-init", root / "init")
        programs = [EXTLINUX, SFDISK, MKFS_FAT, MKE2FS, GNU_WGET]
        shutil.copy2(MBR_BIN, root / "lib/ultracloud/mbr.bin")
        shutil.copy2(GPTMBR_BIN, root / "lib/ultracloud/gptmbr.bin")
        shutil.copy2(MKE2FS_CONF, root / "etc/mke2fs.conf")
    else:
        shutil.copy2(GUEST_DIR / "system-init", root / "init")
        shutil.copy2(GUEST_DIR / "node-agent", root / "bin/ultracloud-node-agent")
        shutil.copytree(GUEST_DIR / "sv", root / "etc/sv")
        runit_root = debs.unpacked("runit")
        for runit_program in image_build.RUNIT_PROGRAMS:
            image_build._copy(runit_root / runit_program, root, "bin/" + Path(runit_program).name)
        programs = [Path("/usr/sbin/dropbear"), GNU_WGET, SFDISK, BLKID]
        keys = lab_keys()
        (root / "root/.ssh").mkdir(parents=True)
        (root / "root/.ssh/authorized_keys").write_text(keys.client_public + "\n")
        (root / "root/.ssh").chmod(0o700)
        (root / "root").chmod(0o700)
        (root / "etc/dropbear").mkdir()
        shutil.copy2(keys.host_private_dropbear, root / "etc/dropbear/dropbear_ed25519_host_key")
        (root / "etc/shells").write_text("/bin/sh\n")
    for program in programs:
        # dropbear and extlinux have no busybox namesake: /bin; the rest keep their Debian path.
        image_build._copy(program, root, "bin/" + program.name if program.name in ("dropbear", "extlinux")
                          else None)
        for lib in image_build.shared_libraries(str(program)):
            image_build._copy(lib, root)
    image_build.pack_initramfs(root, out)


# --------------------------------------------------------------------------------------------
# Per-node ISO, install bundles and target systems


def installer_kernel_params(deployer_url: str, bootstrap_token: str | None, *, address: str | None = None,
                            node_id: str | None = None, hostname: str | None = None,
                            ca_cert_url: str | None = None,
                            binary_cache_url: str | None = None) -> list[str]:
    """The installer's `ultracloud.*` kernel parameters (plus `ultracloud.ip=` for a static address).

    The result holds the token: pass it to `build_iso`, never write it into an artifact.
    """
    params = [f"ultracloud.deployer_url={deployer_url.rstrip('/')}"]
    if bootstrap_token:
        params.append(f"ultracloud.bootstrap_token={bootstrap_token}")
    optional = {"ca_cert_url": ca_cert_url, "binary_cache_url": binary_cache_url, "node_id": node_id,
                "hostname": hostname, "ip": address}
    params += [f"ultracloud.{key}={value}" for key, value in optional.items() if value]
    for p in params:
        if any(c.isspace() for c in p):
            raise ValueError(f"kernel parameter {p.split('=')[0]} contains whitespace")
    return params


def build_iso(artifacts: InstallerArtifacts, kernel_params: Sequence[str], out: Path) -> Path:
    """Write a bootable hybrid ISO (isolinux) whose kernel command line carries `kernel_params`.

    The file is created mode 0600: its boot configuration holds the bootstrap token.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tree = Path(tmp) / "iso"
        shutil.copytree(artifacts.isolinux, tree / "isolinux")
        for src, name in ((artifacts.kernel, "vmlinuz"), (artifacts.installer_initrd, "initrd.img")):
            _link_or_copy(src, tree / name)
        cfg = tree / "isolinux/isolinux.cfg"
        with open(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT install\nLABEL install\n"
                    "  KERNEL /vmlinuz\n  INITRD /initrd.img\n"
                    f"  APPEND {CONSOLE_ARGS} {' '.join(kernel_params)}\n")
        partial = Path(tmp) / "out.iso"
        done = subprocess.run(
            ["xorriso", "-as", "mkisofs", "-o", str(partial), "-V", ISO_LABEL, "-J", "-R",
             "-isohybrid-mbr", str(ISOHYBRID_MBR), "-c", "isolinux/boot.cat", "-b", "isolinux/isolinux.bin",
             "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(tree)],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise InfrastructureError(f"xorriso failed: {done.stderr[-500:]}")
        partial.chmod(0o600)
        partial.replace(out)
    return out


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def write_install_bundle(artifacts: InstallerArtifacts, bundle_dir: Path, configuration: str, *,
                         layout_file: Path) -> Path:
    """The bundle the deployer serves for `install_plan.nixos_configuration` = `configuration`:
    the installed system's kernel and initramfs under `boot/`, its configuration name, and its
    disk layout (`layout_file`, the class's disko_config_path) with the script compiled from it
    (`etc/ultracloud/disko.sh`, which the installer runs on the selected disk)."""
    layout = load_layout(layout_file)
    root = bundle_dir / configuration
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "etc/ultracloud").mkdir(parents=True, exist_ok=True)
    for src, name in ((artifacts.kernel, "vmlinuz"), (artifacts.system_initrd, "initrd.img")):
        if not (root / "boot" / name).exists():
            _link_or_copy(src, root / "boot" / name)
    (root / "etc/ultracloud/configuration").write_text(configuration + "\n")
    shutil.copy2(layout_file, root / "etc/ultracloud/disk-layout.yaml")
    (root / "etc/ultracloud/disko.sh").write_text(disko_script(layout, layout_file.name))
    return root


def write_target_system(bundle_dir: Path, name: str) -> Path:
    """A prebuilt target system the node agent activates as is (nothing is built in the guest):
    `activate` records the system as live in /run/ultracloud/active-system; `system.json` names it."""
    root = bundle_dir / name
    root.mkdir(parents=True, exist_ok=True)
    activate = root / "activate"
    activate.write_text("#!/bin/sh\n# Activation of a prebuilt lab system: record which system is live.\n"
                        f"mkdir -p /run/ultracloud && echo {name} > /run/ultracloud/active-system\n")
    activate.chmod(0o755)
    (root / "system.json").write_text(json.dumps({"name": name, "built_on": "host"}) + "\n")
    return root


def active_system_check(name: str) -> str:
    """A health_check_command that passes only when `name` is the live system."""
    return f"grep -qx {name} /run/ultracloud/active-system"
