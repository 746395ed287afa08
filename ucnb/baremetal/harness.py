"""The bare-metal harness shared by baremetal-iso and the deployer-vm lanes.

Machines boot from firmware (blank disk first, then the CD-ROM) like real hardware, each with a
DMI serial; the reference deployer listens on the lab network's gateway address inside the lab
namespace (HTTPS with a per-run private CA by default), beside the CA's publication and the
reference binary cache (`gateway.py`); each node gets its own installer ISO (its static address,
the bootstrap token, the CA and cache URLs, identity overrides on the kernel command line). Each
node class's install bundle carries the disk layout its `disko_config_path` names. After the
install the firmware finds the installed disk by itself: no harness-side kernel switch.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import shlex
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ucnb.baremetal.gateway import BootstrapOptions, Gateway, start_gateway
from ucnb.errors import InfrastructureError, LaneFailure
from ucnb.evidence import proof as evidence
from ucnb.host import netns
from ucnb.installer.build import (
    InstallerArtifacts,
    build_installer,
    build_iso,
    installer_kernel_params,
    write_install_bundle,
    write_target_system,
)
from ucnb.installer.layout import Layout, load_layout
from ucnb.lab.lab import DiskConfig, Lab, Node, NodeConfig
from ucnb.lab.registry import connect
from ucnb.lazy import lazy_module
from ucnb.reference.cluster import Cluster, load_cluster
from ucnb.reference.deployer import REQUEST_LOG, STATE_FILE, Deployer

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

CLUSTER_FILE = Path(__file__).resolve().parent / "baremetal-cluster.yaml"
# /proc/mounts names devices as they were mounted (by-id links): resolve them to /dev/vdXN.
RESOLVED_MOUNTS = 'while read -r dev at rest; do echo "$(readlink -f "$dev") $at"; done < /proc/mounts'
INSTALL_MARKERS = ("pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
                   "install.disko.complete", "install.nixos-install.complete", "reboot")
POST_INSTALL_MARKERS = ("post-install.boot", "desired-system-active")
EXPECTED_MARKERS = INSTALL_MARKERS + POST_INSTALL_MARKERS
TARGET_SYSTEMS = ("lab-system-1", "lab-system-2")


@dataclass(frozen=True)
class Machine:
    """A bare machine to install: lab node name (also its DMI serial), cluster class, disk serial,
    and optional `ultracloud.node_id=` / `ultracloud.hostname=` overrides ("" = none)."""

    name: str
    node_class: str
    disk_serial: str
    node_id: str = ""
    hostname: str = ""

    @property
    def expected_node_id(self) -> str:
        return self.node_id or self.name          # the override, else the DMI serial

    @property
    def expected_hostname(self) -> str:
        return self.hostname or self.expected_node_id


@dataclass
class BareMetalNode:
    """One machine of the bare-metal lab: its lab node, cluster identity and marker times."""

    node: Node
    node_class: str
    disk_serial: str
    markers: dict[str, float] = field(default_factory=dict)   # marker prefix -> seconds since power-on
    machine: Machine | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def node_id(self) -> str:
        """The identity it phones home with (an override, else its DMI serial = its name)."""
        return self.machine.expected_node_id if self.machine else self.name

    @property
    def hostname(self) -> str:
        """The hostname its markers carry."""
        return self.machine.expected_hostname if self.machine else self.name


@dataclass
class BareMetalLab:
    """The lab, the deployer serving it, and the tokens (values only in memory, never on disk,
    never in a repr)."""

    run: Run = field(repr=False)
    lab: Lab
    deployer: Deployer = field(repr=False)
    cluster: Cluster = field(repr=False)
    artifacts: InstallerArtifacts
    nodes: dict[str, BareMetalNode]
    admin_token: str = field(repr=False)
    bootstrap_token: str = field(repr=False)
    gateway: Gateway | None = None
    _stopped: bool = False

    @property
    def deployer_url(self) -> str:
        return self.deployer.url

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call the deployer's API with the admin token (as an operator's tool would); like every
        client of a lab address it refuses to run outside the lab namespace (`netns.urlopen`)."""
        request = urllib.request.Request(
            self.deployer_url + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"})
        context = self.gateway.client_context() if self.gateway else None
        with netns.urlopen(request, timeout=10, context=context) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def stop(self) -> None:
        """Stop the deployer and tear the lab down; idempotent (also runs at interpreter exit)."""
        if self._stopped:
            return
        self._stopped = True
        self.deployer.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.lab.teardown()


def gateway_address(lab: Lab) -> str:
    """The lab network's gateway (the bridge's own address, inside the lab namespace)."""
    return lab.address(1).rsplit(".", 1)[0] + ".1"


def refuse_tcg_unless_allowed(run: Run, allow_tcg: bool) -> None:
    """Stop before any VM exists when the host would fall back to TCG and that was not allowed."""
    from ucnb.host.accel import choose
    from ucnb.image import build_image

    with run.step("accelerator gate") as row:
        accelerator = choose(build_image(run.profile), connect())
        row.detail = f"{accelerator.mode}; allow_tcg={allow_tcg}"
        evidence.write_environment(run.proof_root, {"allow_tcg": str(allow_tcg).lower()})
        if accelerator.mode != "kvm" and not allow_tcg:
            raise InfrastructureError(f"this host would run the guests under TCG ({accelerator.reason}); "
                                      "the release-facing run requires KVM: pass allow_tcg "
                                      "(--allow-tcg) to accept TCG")


def prepare(run: Run, machines: Sequence[Machine | tuple[str, str, str]], *, memory_mib: int, disk_size: str,
            bootstrap_token_env: str, installer_token_env: str = "",
            execution_model: str = "papermill-notebook",
            options: BootstrapOptions | None = None) -> BareMetalLab:
    """Create the bare machines, the gateway services (deployer, CA, binary cache), the bundles and
    one ISO per node.

    `machines` are `Machine`s or (name, cluster node class, disk serial). The bootstrap token comes
    from `bootstrap_token_env` (a per-run random token when it is unset); the installer is given the
    token of `installer_token_env` when that is set (a wrong token proves refusal), else the same.
    Every token value is registered with the run's redactor before anything could write it.
    `options` (default: TLS with the run's CA, the binary cache) says how the bootstrap is secured.
    """
    options = options or BootstrapOptions()
    wanted = [m if isinstance(m, Machine) else Machine(*m) for m in machines]
    token = run.secret(bootstrap_token_env)
    if token is None:  # no operator token: a random one for this run, redacted all the same
        token = run.generate_secret("uc-run-")
    installer_token = (run.secret(installer_token_env) if installer_token_env else None) or token
    admin_token = run.generate_secret("uc-admin-")
    evidence.write_environment(run.proof_root, {"execution_model": execution_model})

    cluster = load_cluster(CLUSTER_FILE)
    class_layouts(cluster)   # a bad layout file fails here, before any VM exists
    configs = [NodeConfig(m.name, memory_mib=memory_mib, boot="firmware", dmi_serial=m.name,
                          disks=(DiskConfig(m.disk_serial, disk_size),)) for m in wanted]
    lab = run.lab(configs)
    evidence.write_environment(run.proof_root, {"lab_id": lab.lab_id})
    with run.step("build reference installer") as row:
        artifacts = build_installer(lab.image, log=lambda m: print(m, flush=True))
        row.detail = artifacts.key
    host = gateway_address(lab)
    with run.step("start gateway services") as row:
        # Bound to the bridge's address from this (namespace-joined) thread: the sockets live in
        # the lab namespace, reachable from guests and from nothing outside it.
        gateway = start_gateway(lab.directory, run.proof_root / "tls", host, options, run.run_id)
        run.on_teardown(gateway.stop)
        row.detail = (f"tls={options.tls} installer_ca={options.installer_ca} "
                      f"binary_cache={gateway.binary_cache_url or 'none'}")
    with run.step("start reference deployer") as row:
        bundles = lab.directory / "bundles"
        for spec in cluster.node_classes.values():
            write_install_bundle(artifacts, bundles, spec.install_plan.nixos_configuration,
                                 layout_file=layout_path(spec.install_plan.disko_config_path))
        for name in TARGET_SYSTEMS:
            write_target_system(bundles, name)
        deployer = Deployer(run.proof_root / "deployer", cluster, bind=(host, 0),
                            bootstrap_token=None if options.allow_unauthenticated else token,
                            admin_token=admin_token, bundle_dir=bundles,
                            allow_unauthenticated=options.allow_unauthenticated,
                            bundle_cache_dir=lab.directory / "bundle-cache",
                            tls=gateway.deployer_tls).start()
        row.detail = deployer.url
    bare = BareMetalLab(run, lab, deployer, cluster, artifacts, {}, admin_token, token, gateway)
    run.on_teardown(bare.stop)
    atexit.register(bare.stop)  # a kernel that dies before finish() still stops the deployer
    if gateway.cache is not None:
        with run.step("publish to the binary cache") as row:
            # The same bytes the deployer serves: one build on the host, two routes to the nodes.
            published = [(name, "systems") for name in TARGET_SYSTEMS]
            published += [(spec.install_plan.nixos_configuration, "bundles")
                          for spec in cluster.node_classes.values()]
            for name, kind in published:
                archive = deployer.app.bundles.archive(name)
                assert archive is not None, name
                gateway.cache.publish(name, archive[0], kind)
            row.detail = ", ".join(f"{n} {e['sha256'][:12]}" for n, e in gateway.cache.published.items())
    with run.step("register identity overrides") as row:
        overridden = [m for m in wanted if m.node_id and m.node_id not in cluster.by_node_id()]
        for m in overridden:  # an identity the cluster state does not list: the operator pre-registers it
            bare.admin("POST", "/api/v1/admin/nodes/pre-register",
                       {"node_id": m.node_id, "hostname": m.expected_hostname, "class": m.node_class})
        row.detail = ", ".join(f"{m.node_id} ({m.node_class})" for m in overridden) or "none"
    with run.step("build installer ISOs") as row:
        for index, machine in enumerate(wanted, start=1):
            node = lab[machine.name]
            params = installer_kernel_params(
                deployer.url, None if options.allow_unauthenticated else installer_token,
                address=f"{node.address}/24", node_id=machine.node_id or None,
                hostname=machine.hostname or None, ca_cert_url=gateway.ca_cert_url,
                binary_cache_url=gateway.binary_cache_url)
            # The ISO holds the token: it lives in the lab directory (removed with the lab), never
            # in the proof root.
            node.insert_cdrom(build_iso(artifacts, params, lab.directory / f"{machine.name}-installer.iso"))
            bare.nodes[machine.name] = BareMetalNode(node, machine.node_class, machine.disk_serial,
                                                     machine=machine)
            assert lab.address(index) == node.address
        row.detail = f"{len(wanted)} ISOs, kernel parameters: " + " ".join(
            p.split("=")[0] + "=" for p in params)
    return bare


def layout_path(disko_config_path: str) -> Path:
    """The lab's layout file for an install plan's `disko_config_path` (relative to the cluster file)."""
    return CLUSTER_FILE.parent / disko_config_path


def class_layouts(cluster: Cluster) -> dict[str, Layout]:
    """Every node class's validated disk layout."""
    return {name: load_layout(layout_path(spec.install_plan.disko_config_path))
            for name, spec in cluster.node_classes.items()}


def install_and_boot(bare: BareMetalLab, *, install_timeout_s: float, post_install_timeout_s: float,
                     expected: Sequence[str] = EXPECTED_MARKERS) -> pd.DataFrame:
    """Power every machine on and follow its console through install, reboot and first boot.

    Nodes are followed in parallel; the first failure (a failure marker, a timeout) ends the wait
    at once for all of them with that node's marker and console context.
    """
    errors: list[BaseException] = []
    done = threading.Event()
    remaining = [len(bare.nodes)]
    lock = threading.Lock()

    def follow(machine: BareMetalNode) -> None:
        try:
            with bare.run.step("install and first boot", machine.name):
                machine.node.start()
                for names, timeout in ((INSTALL_MARKERS, install_timeout_s),
                                       (POST_INSTALL_MARKERS, post_install_timeout_s)):
                    deadline = time.monotonic() + timeout
                    for name in (n for n in names if n in expected):
                        seen = machine.node.wait_marker(f"{name}.{machine.hostname}",
                                                        max(0.1, deadline - time.monotonic()))
                        machine.markers[name] = round(seen.seen - (machine.node.started_at or seen.seen), 3)
        except BaseException as exc:  # handed to the caller's thread
            with lock:
                errors.append(exc)
            done.set()
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    # Daemon threads, not a pool: a node still waiting when another failed must not hold the
    # kernel's exit until its own timeout.
    for machine in bare.nodes.values():
        threading.Thread(target=follow, args=(machine,), name=f"install-{machine.name}", daemon=True).start()
    done.wait()
    record_phase_figures(bare)
    if errors:
        raise errors[0]
    return marker_table(bare)


def record_phase_figures(bare: BareMetalLab) -> None:
    """Install and post-install time per node as headline figures (result.json `figures`)."""
    for machine in bare.nodes.values():
        reboot, active = machine.markers.get("reboot"), machine.markers.get("desired-system-active")
        if reboot is not None:
            bare.run.recorder.figure(f"install time: {machine.name}", reboot, "s (power-on to reboot)")
        if reboot is not None and active is not None:
            bare.run.recorder.figure(f"post-install time: {machine.name}", round(active - reboot, 3),
                                     "s (reboot to desired system active)")


def marker_table(bare: BareMetalLab) -> pd.DataFrame:
    """Per node and marker: its phase, seconds since the machine's power-on, and UTC."""
    rows = bare.run.recorder.table("markers")
    if rows.empty:
        return rows
    rows = rows[rows["node"].isin(list(bare.nodes))].copy()
    rows["phase"] = ["install" if any(m.startswith(p) for p in INSTALL_MARKERS) else "post-install"
                     for m in rows["marker"]]
    return rows[["node", "marker", "phase", "since_power_on_s", "utc"]].reset_index(drop=True)


def phase_times(bare: BareMetalLab) -> pd.DataFrame:
    """Install (power-on -> reboot marker) and post-install (reboot -> desired system active) per node."""
    rows = []
    for machine in bare.nodes.values():
        m = machine.markers
        reboot, active = m.get("reboot"), m.get("desired-system-active")
        rows.append({"node": machine.name, "install_s": reboot,
                     "post_install_s": round(active - reboot, 3) if reboot is not None and active is not None
                     else None, "total_s": active})
    return pd.DataFrame(rows, columns=["node", "install_s", "post_install_s", "total_s"])


def phone_home_requests(bare: BareMetalLab) -> pd.DataFrame:
    """The deployer's request log (requests.jsonl) as a table: who asked what, and the answer."""
    path = bare.deployer.state_dir / REQUEST_LOG
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    table = pd.DataFrame(entries, columns=["time", "method", "path", "node_id", "status", "auth",
                                           "client", "duration_ms", "error"])
    return table


def deployer_state(bare: BareMetalLab) -> pd.DataFrame:
    """What the deployer recorded per machine: the identity it phoned home with and where that came
    from, its phone-homes, desired generation, last observed status and the system's source."""
    state = json.loads((bare.deployer.state_dir / STATE_FILE).read_text())
    rows = []
    for machine in bare.nodes.values():
        record = state["nodes"].get(machine.node_id) or {"phone_homes": [], "desired": None, "observed": []}
        observed = record["observed"][-1] if record["observed"] else {}
        last_home = record["phone_homes"][-1] if record["phone_homes"] else {}
        rows.append({"machine": machine.name, "node_id": machine.node_id,
                     "node_id_source": last_home.get("node_id_source"),
                     "hostname": last_home.get("hostname"),
                     "hostname_source": last_home.get("hostname_source"),
                     "phone_homes": len(record["phone_homes"]),
                     "desired_generation": (record["desired"] or {}).get("generation", 1),
                     "observed_generation": observed.get("generation"),
                     "observed_status": observed.get("status"), "detail": observed.get("detail"),
                     "system_source": observed.get("source"), "system_sha256": observed.get("sha256")})
    return pd.DataFrame(rows)


def observed_status(bare: BareMetalLab, node_id: str) -> dict[str, Any] | None:
    """The node's latest status report as the deployer holds it (admin API)."""
    view = bare.admin("GET", f"/api/v1/nodes/{node_id}")
    status: dict[str, Any] | None = view.get("observed_status")
    return status


def disk_layout(bare: BareMetalLab, boot_timeout_s: float) -> pd.DataFrame:
    """Over SSH on each installed system: the selected disk's partition table as sfdisk reads it
    back, each partition's file system and mountpoint, and the boot code, checked against the
    class's layout file. One row per partition; the raw `sfdisk --json` goes to `disks/<node>.json`."""
    from ucnb.installer.build import GPTMBR_BIN, MBR_BIN

    loaders = {"gpt": ("gptmbr.bin", _boot_code_digest(GPTMBR_BIN)),
               "msdos": ("mbr.bin", _boot_code_digest(MBR_BIN))}
    layouts = class_layouts(bare.cluster)
    (bare.run.proof_root / "disks").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    for machine in bare.nodes.values():
        node = machine.node
        node.wait_ssh(boot_timeout_s)
        plan = bare.cluster.node_classes[machine.node_class].install_plan
        layout = layouts[machine.node_class]
        with bare.run.step("disk layout", machine.name) as row:
            device = node.run(f"readlink -f {shlex.quote(plan.target_disk_by_id)}", timeout=10,
                              check=True).stdout.strip()
            dumped = node.run(f"/usr/sbin/sfdisk --json {shlex.quote(device)}", timeout=10, check=True).stdout
            (bare.run.proof_root / "disks" / f"{machine.name}.json").write_text(dumped)
            table = json.loads(dumped)["partitiontable"]
            filesystems = _blkid(node.run("/usr/sbin/blkid", timeout=10).stdout)
            # /proc/mounts names devices as they were mounted (by-id links): resolve them.
            mounted = node.run(RESOLVED_MOUNTS, timeout=10, check=True).stdout
            mounts = {f[0]: f[1] for f in (line.split() for line in mounted.splitlines()) if len(f) > 1}
            boot = node.run("ls /disk/boot", timeout=10, check=True).stdout.split()
            code = node.run(f"dd if={shlex.quote(device)} bs=440 count=1 2>/dev/null | sha256sum", timeout=10,
                            check=True).stdout.split()[0]
            loader, loader_digest = loaders[layout.table.type]
            problems = _layout_problems(layout, table, filesystems)
            if code != loader_digest:
                problems.append(f"boot code is not syslinux's {loader}")
            if not {"ldlinux.sys", "vmlinuz", "initrd.img", "extlinux.conf"} <= set(boot):
                problems.append(f"/boot lacks the boot loader or kernel ({' '.join(boot)})")
            ok = bare.run.recorder.check(
                f"installed disk layout {machine.name}",
                f"{plan.disko_config_path}: {_layout_summary(layout)}, boot code {loader}",
                "; ".join(problems) or f"as laid out ({table['label']}, {len(table['partitions'])} parts)",
                ok=not problems, node=machine.name)
            row.detail = f"{device} {table['label']} {'ok' if ok else 'unexpected'}"
        sector = int(table.get("sectorsize", 512))
        for index, part in enumerate(table["partitions"], start=1):
            fs = filesystems.get(part["node"], {})
            rows.append({"node": machine.name, "layout": plan.disko_config_path, "device": device,
                         "table": table["label"], "partition": index, "part_node": part["node"],
                         "start_mib": round(part["start"] * sector / 2**20, 1),
                         "size_mib": round(part["size"] * sector / 2**20, 1),
                         "type": part.get("type"), "name": part.get("name", ""),
                         "flags": part.get("attrs") or ("bootable" if part.get("bootable") else ""),
                         "fs": fs.get("TYPE", ""), "label": fs.get("LABEL", ""),
                         "mounted_at": mounts.get(part["node"], ""),
                         "boot_code": loader if code == loader_digest else "unknown"})
        if not ok:
            raise LaneFailure(f"{machine.name}: the installed disk does not match its layout "
                              f"{plan.disko_config_path}: {'; '.join(problems)}")
    return pd.DataFrame(rows)


def _boot_code_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()[:440].ljust(440, b"\0")).hexdigest()


def _blkid(text: str) -> dict[str, dict[str, str]]:
    """busybox blkid lines (`/dev/vda1: LABEL="x" UUID="y" TYPE="vfat"`) by device."""
    found = {}
    for line in text.splitlines():
        device, _, rest = line.partition(":")
        found[device.strip()] = dict(re.findall(r'([A-Z_]+)="([^"]*)"', rest))
    return found


def _layout_summary(layout: Layout) -> str:
    parts = [f"{name} {p.content.format if p.content else 'raw'}{' bootable' if p.bootable else ''}"
             for name, p in layout.table.partitions.items()]
    return f"{layout.table.type}: " + ", ".join(parts)


def _layout_problems(layout: Layout, table: dict[str, Any],
                     filesystems: dict[str, dict[str, str]]) -> list[str]:
    """How the disk read back differs from its layout file (empty: it matches)."""
    expected_label = {"gpt": "gpt", "msdos": "dos"}[layout.table.type]
    problems = []
    if table["label"] != expected_label:
        problems.append(f"table {table['label']}, the layout says {expected_label}")
    parts = table["partitions"]
    if len(parts) != len(layout.table.partitions):
        problems.append(f"{len(parts)} partitions, the layout has {len(layout.table.partitions)}")
    for part, (name, spec) in zip(parts, layout.table.partitions.items(), strict=False):
        fs = filesystems.get(part["node"], {}).get("TYPE", "")
        if spec.content and fs != spec.content.format:
            problems.append(f"{part['node']} ({name}) holds {fs or 'no file system'}, "
                            f"not {spec.content.format}")
        bootable = "LegacyBIOSBootable" in (part.get("attrs") or "") or bool(part.get("bootable"))
        if bootable != spec.bootable:
            problems.append(f"{part['node']} ({name}) bootable={bootable}, the layout says {spec.bootable}")
        if layout.table.type == "gpt" and part.get("name") != name:
            problems.append(f"{part['node']} is named {part.get('name')!r}, not {name!r}")
    return problems


def timeline_plot(bare: BareMetalLab) -> Any:
    """Markers per node against seconds since power-on, the reboot drawn as a line."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9, 1.6 + 1.1 * len(bare.nodes)))
    for y, machine in enumerate(bare.nodes.values()):
        times = machine.markers
        xs = list(times.values())
        ax.scatter(xs, [y] * len(xs), zorder=3, color="#1565c0")
        for name, x in times.items():
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6), rotation=35, fontsize=7)
        if "reboot" in times:
            ax.axvline(times["reboot"], ymin=0, ymax=1, linestyle="--", linewidth=0.8, color="grey")
        if xs:
            ax.hlines(y, 0, max(xs), linewidth=0.6, color="lightgrey", zorder=1)
    ax.set_yticks(range(len(bare.nodes)), list(bare.nodes))
    ax.set_ylim(-0.5, len(bare.nodes) + 0.2)
    ax.set_xlim(left=0)
    started = [m.node.started_at for m in bare.nodes.values() if m.node.started_at]
    first = (f" (first power-on {datetime.fromtimestamp(min(started), UTC):%Y-%m-%d %H:%M:%S} UTC)"
             if started else "")
    ax.set_xlabel(f"seconds since each machine's power-on{first}")
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="none", color="#1565c0", label="serial marker"),
                       Line2D([], [], linestyle="--", color="grey", label="reboot into the installed disk")],
              fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
