"""Node specs and the libvirt XML they become (pure: no libvirt connection here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

DOMAIN_PREFIX = "ucnb-"
METADATA_NS = "https://ultracloud.dev/ucnb/lab/1"


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    serial: str                  # appears in the guest as /dev/disk/by-id/virtio-<serial>
    format: str = "qcow2"
    readonly: bool = False
    cache: str = "writeback"     # QEMU's host cache mode: none (O_DIRECT), writeback, writethrough, ...
    total_iops_sec: int = 0      # libvirt <iotune> cap on read+write IOPS (0: unthrottled)


@dataclass(frozen=True)
class NicSpec:
    network: str                 # libvirt network name
    mac: str
    address: str                 # ADDR/PREFIX configured by the guest's init


@dataclass(frozen=True)
class NodeSpec:
    """A machine. With `kernel` set it boots that kernel directly; without, its firmware boots
    the devices in `boot_order` (a disk, then the CD-ROM), as on bare metal."""

    name: str
    memory_mib: int
    vcpus: int
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    disks: tuple[DiskSpec, ...]
    nics: tuple[NicSpec, ...]
    serial_log: Path
    accelerator: str = "tcg"     # "kvm" or "tcg"
    tb_cache_mib: int = 64       # caps qemu RSS under TCG (LAB-NOTES: 0.8-1.4 GiB otherwise)
    cdrom: Path | None = None    # an ISO in an IDE CD-ROM drive
    boot_order: tuple[str, ...] = ("hd", "cdrom")
    metadata: dict[str, str] = field(default_factory=dict)
    dmi_serial: str = ""         # SMBIOS system serial (/sys/class/dmi/id/product_serial) when set


def domain_name(lab_id: str, node: str) -> str:
    return f"{DOMAIN_PREFIX}{lab_id}-{node}"


def mac_for(lab_index: int, node_index: int, nic_index: int) -> str:
    """Deterministic locally administered MACs (52:54:00 is QEMU's prefix)."""
    return f"52:54:00:{lab_index % 256:02x}:{nic_index:02x}:{node_index:02x}"


def _iotune(disk: DiskSpec) -> str:
    """QEMU's throttling of one disk (accurate under TCG too: LAB-NOTES), or nothing."""
    if disk.total_iops_sec <= 0:
        return ""
    return f"\n      <iotune><total_iops_sec>{int(disk.total_iops_sec)}</total_iops_sec></iotune>"


def metadata_xml(metadata: dict[str, str]) -> str:
    """The `<metadata>` element by which ucnb recognises its domains (lab, run, node, labs folder,
    owner): never by name alone."""
    fields = "".join(f"<ucnb:{k}>{escape(v)}</ucnb:{k}>" for k, v in sorted(metadata.items()))
    return f"<metadata><ucnb:lab xmlns:ucnb='{METADATA_NS}'>{fields}</ucnb:lab></metadata>"


def domain_xml(lab_id: str, spec: NodeSpec) -> str:
    """libvirt domain XML: direct kernel boot, virtio disks with serials, logged serial console."""
    kvm = spec.accelerator == "kvm"
    disks = "\n".join(
        f"""    <disk type='file' device='disk'>
      <driver name='qemu' type={quoteattr(d.format)} cache={quoteattr(d.cache)}/>
      <source file={quoteattr(str(d.path))}/>
      <target dev='vd{chr(ord("a") + i)}' bus='virtio'/>{_iotune(d)}
      <serial>{escape(d.serial)}</serial>{"<readonly/>" if d.readonly else ""}
    </disk>"""
        for i, d in enumerate(spec.disks))
    nics = "\n".join(
        f"""    <interface type='network'>
      <source network={quoteattr(n.network)}/>
      <mac address='{n.mac}'/>
      <model type='virtio'/>
      <link state='up'/>
    </interface>"""
        for n in spec.nics)
    if spec.cdrom is not None:
        disks += f"""
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(spec.cdrom))}/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>"""
    if spec.kernel is not None:
        boot = (f"<kernel>{escape(str(spec.kernel))}</kernel>\n"
                f"    <initrd>{escape(str(spec.initrd))}</initrd>\n"
                f"    <cmdline>{escape(spec.cmdline)}</cmdline>")
    else:
        boot = "\n    ".join(f"<boot dev='{dev}'/>" for dev in spec.boot_order)
    tcg = "" if kvm else f"<tcg><tb-cache unit='MiB'>{spec.tb_cache_mib}</tb-cache></tcg>"
    sysinfo, smbios = "", ""
    if spec.dmi_serial:  # what a real machine's firmware reports, and installers derive identity from
        sysinfo = (f"\n  <sysinfo type='smbios'><system><entry name='serial'>{escape(spec.dmi_serial)}"
                   "</entry></system></sysinfo>")
        smbios = "\n    <smbios mode='sysinfo'/>"
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{escape(domain_name(lab_id, spec.name))}</name>
  {metadata_xml(spec.metadata)}
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>{sysinfo}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    {boot}{smbios}
  </os>
  <features><acpi/>{tcg}</features>
  {"<cpu mode='host-passthrough'/>" if kvm else ""}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
{disks}
{nics}
    <serial type='pty'>
      <log file={quoteattr(str(spec.serial_log))} append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
"""


def network_xml(name: str, bridge: str) -> str:
    """A libvirt network over our own bridge in the lab namespace (`ucnb.host.netns.add_bridge`):
    libvirt adds no firewall rules, no DHCP, no DNS; nothing leaves the namespace."""
    return f"""<network>
  <name>{escape(name)}</name>
  <forward mode='bridge'/>
  <bridge name={quoteattr(bridge)}/>
</network>
"""
