"""Disk layouts for the reference installer: a disko-shaped file in, the script that applies it out.

An install plan's `disko_config_path` names the layout of its node class. The product's is a Disko
module (Nix); the lab's is the same shape as YAML, restricted to what the reference installer
applies (one disk, a GPT or MBR table, vfat/ext4/ext2 file systems):

```yaml
disko:
  devices:
    disk:
      main:                         # the disk the install plan's target_disk_by_id selects
        type: disk
        content:
          type: gpt                 # or msdos (MBR)
          partitions:               # in order
            ESP:  {size: 32M, type: EF00, content: {type: filesystem, format: vfat, mountpoint: /boot/efi}}
            root: {size: 100%, bootable: true, content: {type: filesystem, format: ext4, mountpoint: /}}
```

`disko_script` compiles it, as Disko compiles its module into a script, into a POSIX shell script
that the installer runs with the disk's device (`sh disko.sh /dev/vda`): sfdisk writes the table,
mkfs.fat / e2fsprogs' mke2fs format, the file systems are mounted under /mnt, and
`/tmp/disko.env` tells the installer the table type, the root partition and its file system.

Booting: SeaBIOS (the lab's firmware) runs the disk's MBR code. On MBR that is syslinux's
`mbr.bin`, which boots the partition with the boot flag; on GPT it is syslinux's `gptmbr.bin`,
which boots the partition with the "legacy BIOS bootable" attribute. So the partition holding
`/boot` (here: root) must say `bootable: true`; extlinux lives in it. An ESP is made and mounted
for UEFI firmware, which the lab does not emulate.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ucnb.errors import ParameterError
from ucnb.reference.cluster import describe_validation_error

# GPT type codes (sgdisk's short forms, as Disko takes them) -> partition type GUIDs.
GPT_TYPES = {
    "EF00": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",   # EFI system partition
    "EF02": "21686148-6449-6E6F-744E-656564454649",   # BIOS boot partition
    "8300": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",   # Linux file system
}
MBR_TYPES = {"vfat": "0c", "ext4": "83", "ext2": "83"}
MKFS = {  # full paths: busybox's mke2fs/mkfs.vfat applets shadow the real tools on PATH
    "vfat": "/usr/sbin/mkfs.fat",
    "ext4": "/usr/sbin/mke2fs -q -F -t ext4",
    "ext2": "/usr/sbin/mke2fs -q -F -t ext2",
}
LABEL_FLAG = {"vfat": "-n", "ext4": "-L", "ext2": "-L"}
SIZE_PATTERN = r"^([1-9][0-9]{0,6}[KMG]|100%)$"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,35}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filesystem(_Strict):
    type: Literal["filesystem"]
    format: Literal["vfat", "ext4", "ext2"]
    mountpoint: str = Field(pattern=r"^/([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,11}$")


class Partition(_Strict):
    size: str = Field(pattern=SIZE_PATTERN)
    type: Literal["EF00", "EF02", "8300"] | None = None   # GPT only; default 8300
    bootable: bool = False
    content: Filesystem | None = None


class Table(_Strict):
    type: Literal["gpt", "msdos"]
    partitions: dict[str, Partition] = Field(min_length=1, max_length=8)

    @field_validator("partitions")
    @classmethod
    def _names(cls, value: dict[str, Partition]) -> dict[str, Partition]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"partition name {name!r} must match {NAME_PATTERN}")
        return value


class Disk(_Strict):
    type: Literal["disk"]
    content: Table


class Devices(_Strict):
    disk: dict[str, Disk] = Field(min_length=1, max_length=1)   # the install plan selects one disk


class Disko(_Strict):
    devices: Devices


class Layout(_Strict):
    """A validated layout: one disk, its table and partitions in order."""

    disko: Disko

    @property
    def table(self) -> Table:
        return next(iter(self.disko.devices.disk.values())).content

    @model_validator(mode="after")
    def _bootable_root(self) -> Layout:
        table = self.table
        parts = list(table.partitions.items())
        mounts = [p.content.mountpoint for _, p in parts if p.content]
        if mounts.count("/") != 1:
            raise ValueError("exactly one partition must be mounted at /")
        if len(set(mounts)) != len(mounts):
            raise ValueError("two partitions share a mountpoint")
        if any(p.size == "100%" for _, p in parts[:-1]):
            raise ValueError("only the last partition may take the rest of the disk (100%)")
        root_name, root = next((n, p) for n, p in parts if p.content and p.content.mountpoint == "/")
        if root.content and root.content.format == "vfat":
            raise ValueError("the root file system must be ext4 or ext2 (extlinux and the system live there)")
        if not root.bootable:
            raise ValueError(f"partition {root_name!r} holds /boot: it must be bootable (the firmware's "
                             "MBR code boots the partition marked so)")
        if sum(p.bootable for _, p in parts) != 1:
            raise ValueError("exactly one partition must be bootable")
        if table.type == "msdos" and any(p.type for _, p in parts):
            raise ValueError("partition `type` codes are GPT's; on msdos the format gives the type")
        if table.type == "msdos" and len(parts) > 4:
            raise ValueError("an msdos table holds at most 4 (primary) partitions")
        return self

    def root_index(self) -> int:
        """1-based number of the root partition."""
        return 1 + next(i for i, p in enumerate(self.table.partitions.values())
                        if p.content and p.content.mountpoint == "/")

    def root_format(self) -> str:
        part = list(self.table.partitions.values())[self.root_index() - 1]
        assert part.content is not None
        return part.content.format


def load_layout(path: Path) -> Layout:
    """Read and validate a layout file; problems are ParameterErrors naming the file and field."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ParameterError(f"cannot read disk layout {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"disk layout {path} is not valid YAML: {exc}") from None
    try:
        return Layout.model_validate(document)
    except ValidationError as exc:
        raise ParameterError(f"disk layout {path}: {describe_validation_error(exc)}") from None


def _sfdisk_size(size: str) -> str:
    return "" if size == "100%" else f"size={size[:-1]}{size[-1]}iB, "


def sfdisk_script(layout: Layout) -> str:
    """sfdisk's input for the layout (`label:` line, then one line per partition, in order)."""
    table = layout.table
    lines = [f"label: {'dos' if table.type == 'msdos' else 'gpt'}"]   # sfdisk's name for MBR is dos
    for name, part in table.partitions.items():
        fs = part.content.format if part.content else "ext4"
        if table.type == "gpt":
            attrs = ', attrs="LegacyBIOSBootable"' if part.bootable else ""
            guid = GPT_TYPES[part.type or "8300"]
            lines.append(f'{_sfdisk_size(part.size)}type={guid}, name="{name}"{attrs}')
        else:
            flag = ", bootable" if part.bootable else ""
            lines.append(f"{_sfdisk_size(part.size)}type={MBR_TYPES[fs]}{flag}")
    return "\n".join(lines) + "\n"


def disko_script(layout: Layout, source: str) -> str:
    """The shell script the installer runs as `sh disko.sh DEVICE` (busybox sh; see the module doc)."""
    table = layout.table
    parts = list(table.partitions.items())
    by_depth = sorted((p.content.mountpoint.count("/") if p.content.mountpoint != "/" else 0, i, p.content)
                      for i, (_, p) in enumerate(parts, start=1) if p.content)
    out = [
        "#!/bin/sh",
        f"# Generated by ucnb.installer.layout from {source}: apply this layout to the disk $1,",
        "# mount it under /mnt, and describe it in /tmp/disko.env. Do not edit: edit the layout file.",
        "set -e",
        'DEV="$1"',
        '[ -b "$DEV" ] || { echo "disko: $DEV is not a block device" >&2; exit 2; }',
        'part() { case "$DEV" in *[0-9]) echo "${DEV}p$1" ;; *) echo "$DEV$1" ;; esac; }',
        "/usr/sbin/sfdisk --quiet --wipe always --wipe-partitions always \"$DEV\" <<'SFDISK'",
        sfdisk_script(layout).rstrip("\n"),
        "SFDISK",
        f"for n in {' '.join(str(i) for i in range(1, len(parts) + 1))}; do",
        '  tries=0',   # the kernel re-reads the table; devtmpfs makes the nodes shortly after
        '  while [ ! -b "$(part "$n")" ]; do',
        '    tries=$((tries + 1)); [ $tries -lt 50 ] || exit 3; sleep 0.1',
        '  done',
        "done",
    ]
    for index, (name, part) in enumerate(parts, start=1):
        if part.content:
            fs = part.content
            label = fs.label or name[:11]
            flag = LABEL_FLAG[fs.format]
            out.append(f'{MKFS[fs.format]} {flag} {shlex.quote(label)} "$(part {index})" >/dev/null')
    fstab = []
    for _, index, fs in by_depth:
        target = "/mnt" + (fs.mountpoint if fs.mountpoint != "/" else "")
        quoted = shlex.quote(target)
        out.append(f'mkdir -p {quoted} && mount -t {fs.format} "$(part {index})" {quoted}')
        fstab.append(f"{index} {fs.mountpoint} {fs.format}")
    out += [
        "cat > /tmp/disko.env <<ENV",
        f"TABLE={table.type}",
        f"ROOT_PART={layout.root_index()}",
        f"ROOT_FS={layout.root_format()}",
        "ENV",
        "# The installed system mounts these (partition number, mountpoint, type) at boot.",
        "mkdir -p /mnt/etc/ultracloud",
        "cat > /mnt/etc/ultracloud/fstab <<FSTAB",
        *fstab,
        "FSTAB",
    ]
    return "\n".join(out) + "\n"


def layout_digest(path: Path) -> str:
    """sha256 of the layout file, for the evidence (which layout a node got)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
