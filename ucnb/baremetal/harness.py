"""The bare-metal harness shared by baremetal-iso and the deployer-vm lanes.

Machines boot from firmware (blank disk first, then the CD-ROM) like real hardware; the reference
deployer listens on the lab network's gateway address inside the lab namespace; each node gets its
own installer ISO (its static address and the bootstrap token on the kernel command line). After
the install the firmware finds the installed disk by itself: no harness-side kernel switch.
"""

from __future__ import annotations

import atexit
import json
import shlex
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
INSTALL_MARKERS = ("pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
                   "install.disko.complete", "install.nixos-install.complete", "reboot")
POST_INSTALL_MARKERS = ("post-install.boot", "desired-system-active")
EXPECTED_MARKERS = INSTALL_MARKERS + POST_INSTALL_MARKERS
TARGET_SYSTEMS = ("lab-system-1", "lab-system-2")


@dataclass
class BareMetalNode:
    """One machine of the bare-metal lab: its lab node, cluster identity and marker times."""

    node: Node
    node_class: str
    disk_serial: str
    markers: dict[str, float] = field(default_factory=dict)   # marker prefix -> seconds since power-on

    @property
    def name(self) -> str:
        return self.node.name


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
        with netns.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def stop(self) -> None:
        """Stop the deployer and tear the lab down; idempotent (also runs at interpreter exit)."""
        if self._stopped:
            return
        self._stopped = True
        self.deployer.stop()
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


def prepare(run: Run, machines: Sequence[tuple[str, str, str]], *, memory_mib: int, disk_size: str,
            bootstrap_token_env: str, installer_token_env: str = "",
            execution_model: str = "papermill-notebook") -> BareMetalLab:
    """Create the bare machines, the deployer on the lab network, the bundles and one ISO per node.

    `machines` are (name, cluster node class, disk serial). The bootstrap token comes from
    `bootstrap_token_env` (a per-run random token when it is unset); the installer is given the
    token of `installer_token_env` when that is set (a wrong token proves refusal), else the same.
    Every token value is registered with the run's redactor before anything could write it.
    """
    token = run.secret(bootstrap_token_env)
    if token is None:  # no operator token: a random one for this run, redacted all the same
        token = run.generate_secret("uc-run-")
    installer_token = (run.secret(installer_token_env) if installer_token_env else None) or token
    admin_token = run.generate_secret("uc-admin-")
    evidence.write_environment(run.proof_root, {"execution_model": execution_model})

    cluster = load_cluster(CLUSTER_FILE)
    configs = [NodeConfig(name, memory_mib=memory_mib, boot="firmware",
                          disks=(DiskConfig(serial, disk_size),)) for name, _, serial in machines]
    lab = run.lab(configs)
    evidence.write_environment(run.proof_root, {"lab_id": lab.lab_id})
    with run.step("build reference installer") as row:
        artifacts = build_installer(lab.image, log=lambda m: print(m, flush=True))
        row.detail = artifacts.key
    with run.step("start reference deployer") as row:
        bundles = lab.directory / "bundles"
        for spec in cluster.node_classes.values():
            write_install_bundle(artifacts, bundles, spec.install_plan.nixos_configuration)
        for name in TARGET_SYSTEMS:
            write_target_system(bundles, name)
        # Bound to the bridge's address from this (namespace-joined) thread: the socket lives in
        # the lab namespace, reachable from guests and from nothing outside it.
        deployer = Deployer(run.proof_root / "deployer", cluster, bind=(gateway_address(lab), 0),
                            bootstrap_token=token, admin_token=admin_token, bundle_dir=bundles,
                            bundle_cache_dir=lab.directory / "bundle-cache").start()
        row.detail = deployer.url
    bare = BareMetalLab(run, lab, deployer, cluster, artifacts, {}, admin_token, token)
    run.on_teardown(bare.stop)
    atexit.register(bare.stop)  # a kernel that dies before finish() still stops the deployer
    with run.step("build installer ISOs") as row:
        for index, (name, node_class, serial) in enumerate(machines, start=1):
            node = lab[name]
            params = installer_kernel_params(deployer.url, installer_token, address=f"{node.address}/24",
                                             node_id=name, hostname=name)
            # The ISO holds the token: it lives in the lab directory (removed with the lab), never
            # in the proof root.
            node.insert_cdrom(build_iso(artifacts, params, lab.directory / f"{name}-installer.iso"))
            bare.nodes[name] = BareMetalNode(node, node_class, serial)
            assert lab.address(index) == node.address
        row.detail = f"{len(machines)} ISOs, kernel parameters: " + " ".join(
            p.split("=")[0] + "=" for p in params)
    return bare


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
                        seen = machine.node.wait_marker(f"{name}.{machine.name}",
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
    """What the deployer recorded per node: phone-homes, desired generation, last observed status."""
    state = json.loads((bare.deployer.state_dir / STATE_FILE).read_text())
    rows = []
    for node_id, record in sorted(state["nodes"].items()):
        observed = record["observed"][-1] if record["observed"] else {}
        rows.append({"node_id": node_id, "phone_homes": len(record["phone_homes"]),
                     "desired_generation": (record["desired"] or {}).get("generation", 1),
                     "observed_generation": observed.get("generation"),
                     "observed_status": observed.get("status"), "detail": observed.get("detail")})
    return pd.DataFrame(rows)


def observed_status(bare: BareMetalLab, node_id: str) -> dict[str, Any] | None:
    """The node's latest status report as the deployer holds it (admin API)."""
    view = bare.admin("GET", f"/api/v1/nodes/{node_id}")
    status: dict[str, Any] | None = view.get("observed_status")
    return status


def disk_layout(bare: BareMetalLab, boot_timeout_s: float) -> pd.DataFrame:
    """Over SSH on each installed system: the selected disk's partition table, file system, boot files."""
    rows = []
    for machine in bare.nodes.values():
        node = machine.node
        node.wait_ssh(boot_timeout_s)
        selector = bare.cluster.node_classes[machine.node_class].install_plan.target_disk_by_id
        with bare.run.step("disk layout", machine.name) as row:
            device = node.run(f"readlink -f {shlex.quote(selector)}", timeout=10, check=True).stdout.strip()
            table = node.run(f"fdisk -l {shlex.quote(device)}", timeout=10, check=True).stdout
            mounted = node.run("df -k /disk | tail -n 1", timeout=10, check=True).stdout.split()
            boot = node.run("ls /disk/boot", timeout=10, check=True).stdout.split()
            configuration = node.run("cat /disk/etc/ultracloud/configuration", timeout=10).stdout.strip()
            part = next((line for line in table.splitlines() if line.startswith(device + "1")), "")
            bootable = part.split()[1:2] == ["*"]
            ok = bare.run.recorder.check(
                f"installed disk layout {machine.name}", "bootable partition 1, ldlinux.sys, kernel",
                f"partition={'bootable' if bootable else part or 'none'} boot={','.join(boot)}",
                ok=bootable and {"ldlinux.sys", "vmlinuz", "initrd.img", "extlinux.conf"} <= set(boot),
                node=machine.name)
            row.detail = f"{device}1 {'ok' if ok else 'unexpected'}"
        rows.append({"node": machine.name, "selector": selector, "device": device,
                     "partition": " ".join(part.split()), "fs_kib": mounted[1] if len(mounted) > 1 else "",
                     "used_kib": mounted[2] if len(mounted) > 2 else "", "boot_files": " ".join(boot),
                     "configuration": configuration})
        if not ok:
            raise LaneFailure(f"{machine.name}: the installed disk does not look installed: {rows[-1]}")
    return pd.DataFrame(rows)


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
