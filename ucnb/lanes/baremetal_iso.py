"""baremetal-iso: a control-plane node and a worker installed from the installer ISO, as on hardware.

Lab profile: the reference installer ISO, the reference deployer on the lab network and the
reference node agent (stand-ins for ultracloud-iso, the deployer and nix-agent) on machines that
boot from firmware: blank disk, then CD; after the install the firmware lands on the installed disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field

from ucnb.baremetal import harness
from ucnb.lanes import Lane, LaneParameters

if TYPE_CHECKING:
    from ucnb.kernel.run import Run


class Parameters(LaneParameters):
    profile: Literal["lab", "ultracloud"] = "lab"
    memory_mib: int = Field(256, ge=192, le=8192)
    disk_size: str = "512M"
    control_plane_disk_serial: str = Field("uc-control-root", pattern=r"^[A-Za-z0-9._-]{1,20}$")
    worker_disk_serial: str = Field("uc-worker-root", pattern=r"^[A-Za-z0-9._-]{1,20}$")
    install_timeout_s: float = Field(120.0, gt=0)
    post_install_timeout_s: float = Field(90.0, gt=0)
    bootstrap_token_env: str = "ULTRACLOUD_BOOTSTRAP_TOKEN"
    installer_token_env: str = ""
    allow_tcg: bool = True
    execution_model: str = "papermill-notebook"
    flake: str = "."


LANE = Lane(
    name="baremetal-iso",
    title="Bare-metal ISO install (control plane + worker)",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env", "installer_token_env"),
    cell_timeout_s=600,
)


def ultracloud_plan(params: Parameters) -> list[str]:
    """The product's commands for this lane (seed: Canonical Bare-Metal Proof)."""
    flake = params.flake
    evals = [f"nix eval --no-eval-cache {flake}#nixosConfigurations.baremetal-qemu-{c}.config.system"
             f".build.toplevel.drvPath --raw" for c in ("control-plane", "worker")]
    return [*evals, "nix run ./nix/test-cluster#cluster -- baremetal-iso"]


def machines(params: Parameters) -> list[tuple[str, str, str]]:
    """(node, cluster class, disk serial): the serials are what the install plan's selectors find."""
    return [("control-plane", "control-plane", params.control_plane_disk_serial),
            ("worker", "worker", params.worker_disk_serial)]


def prepare(run: Run, params: Parameters) -> harness.BareMetalLab | None:
    """Lab: the machines, the deployer and the ISOs. ultracloud: the product's harness instead."""
    harness.refuse_tcg_unless_allowed(run, params.allow_tcg)
    if run.profile.name == "ultracloud":
        run.run_commands(ultracloud_plan(params), cwd=params.flake, log_name="baremetal-iso.log")
        return None
    return harness.prepare(run, machines(params), memory_mib=params.memory_mib, disk_size=params.disk_size,
                           bootstrap_token_env=params.bootstrap_token_env,
                           installer_token_env=params.installer_token_env,
                           execution_model=params.execution_model)


def _skipped(run: Run, what: str) -> pd.DataFrame:
    reason = "ultracloud profile: verify-baremetal-iso.sh checked this itself (logs/baremetal-iso.log)"
    run.skip(what, reason)
    return pd.DataFrame([{"step": what, "skipped": reason}])


def install(run: Run, bare: harness.BareMetalLab | None, params: Parameters) -> pd.DataFrame:
    """Boot every machine from its ISO and follow the marker sequence through the reboot."""
    if bare is None:
        return _skipped(run, "install and first boot")
    return harness.install_and_boot(bare, install_timeout_s=params.install_timeout_s,
                                    post_install_timeout_s=params.post_install_timeout_s)


def phone_home(run: Run, bare: harness.BareMetalLab | None) -> pd.DataFrame:
    """Every request the deployer saw (its requests.jsonl), phone-homes first."""
    if bare is None:
        return _skipped(run, "phone-home requests")
    table = harness.phone_home_requests(bare)
    for machine in bare.nodes.values():
        ok = ((table["path"] == "/api/v1/phone-home") & (table["node_id"] == machine.name)
              & (table["status"] == 200)).any()
        run.recorder.check(f"phone-home accepted {machine.name}", True, bool(ok), node=machine.name)
    return table


def disk_layout(run: Run, bare: harness.BareMetalLab | None, params: Parameters) -> pd.DataFrame:
    """The installed disks, read over SSH on the installed systems."""
    if bare is None:
        return _skipped(run, "disk layout")
    return harness.disk_layout(bare, params.post_install_timeout_s)


def agent_status(run: Run, bare: harness.BareMetalLab | None) -> pd.DataFrame:
    """The deployer's view: every node reported its desired system `active`."""
    if bare is None:
        return _skipped(run, "desired system status")
    table = harness.deployer_state(bare)
    for row in table.itertuples():
        run.recorder.check(f"desired system active {row.node_id}", "active", row.observed_status,
                           node=str(row.node_id))
    return table


def timeline(run: Run, bare: harness.BareMetalLab | None) -> pd.DataFrame:
    """Install vs post-install time per node, and the markers across the reboot as a plot."""
    if bare is None:
        return _skipped(run, "timeline")
    run.show_figure(harness.timeline_plot(bare), "baremetal-timeline.png")
    return harness.phase_times(bare)


def finish(run: Run, bare: harness.BareMetalLab | None) -> dict[str, Any]:
    """Stop the deployer and the lab, redact, and record the verdict."""
    return harness.finish(bare, run)
