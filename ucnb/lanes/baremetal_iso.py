"""baremetal-iso: a control-plane node and a worker installed from the installer ISO, as on hardware.

Lab profile: the reference installer ISO, the reference deployer on the lab network and the
reference node agent (stand-ins for ultracloud-iso, the deployer and nix-agent) on machines that
boot from firmware: blank disk, then CD; after the install the firmware lands on the installed disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ucnb.baremetal import harness
from ucnb.kernel.steps import boots, lab_step
from ucnb.lanes import Lane, TokenParameters
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")


class Parameters(TokenParameters):
    memory_mib: int = Field(256, ge=192, le=8192)
    disk_size: str = Field("512M", pattern=r"^[1-9][0-9]{0,5}[MG]$")
    control_plane_disk_serial: str = Field("uc-control-root", pattern=r"^[A-Za-z0-9._-]{1,20}$")
    worker_disk_serial: str = Field("uc-worker-root", pattern=r"^[A-Za-z0-9._-]{1,20}$")
    install_timeout_s: float = Field(120.0, gt=0, le=3600)
    post_install_timeout_s: float = Field(90.0, gt=0, le=3600)
    installer_token_env: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    allow_tcg: bool = True
    execution_model: str = Field("papermill-notebook", pattern=r"^[A-Za-z0-9._-]{1,40}$")


LANE = Lane(
    name="baremetal-iso",
    title="Bare-metal ISO install (control plane + worker)",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env", "installer_token_env"),
    cell_timeout_s=600,
)


def machines(params: Parameters) -> list[tuple[str, str, str]]:
    """(node, cluster class, disk serial): the serials are what the install plan's selectors find."""
    return [("control-plane", "control-plane", params.control_plane_disk_serial),
            ("worker", "worker", params.worker_disk_serial)]


@boots
def prepare(run: Run) -> harness.BareMetalLab:
    """The machines, the deployer and the ISOs, once the accelerator is acceptable."""
    params = run.parameters(Parameters)
    harness.refuse_tcg_unless_allowed(run, params.allow_tcg)
    return harness.prepare(run, machines(params), memory_mib=params.memory_mib, disk_size=params.disk_size,
                           bootstrap_token_env=params.bootstrap_token_env,
                           installer_token_env=params.installer_token_env,
                           execution_model=params.execution_model)


@lab_step("install and first boot")
def install(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Boot every machine from its ISO and follow the marker sequence through the reboot."""
    params = run.parameters(Parameters)
    return harness.install_and_boot(bare, install_timeout_s=params.install_timeout_s,
                                    post_install_timeout_s=params.post_install_timeout_s)


@lab_step("phone-home requests")
def phone_home(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Every request the deployer saw (its requests.jsonl), phone-homes first."""
    table = harness.phone_home_requests(bare)
    for machine in bare.nodes.values():
        ok = ((table["path"] == "/api/v1/phone-home") & (table["node_id"] == machine.name)
              & (table["status"] == 200)).any()
        run.recorder.check(f"phone-home accepted {machine.name}", True, bool(ok), node=machine.name)
    return table


@lab_step("disk layout")
def disk_layout(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """The installed disks, read over SSH on the installed systems."""
    return harness.disk_layout(bare, run.parameters(Parameters).post_install_timeout_s)


@lab_step("desired system status")
def agent_status(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """The deployer's view: every node reported its desired system `active`."""
    table = harness.deployer_state(bare)
    for row in table.itertuples():
        run.recorder.check(f"desired system active {row.node_id}", "active", row.observed_status,
                           node=str(row.node_id))
    return table


@lab_step("install timeline")
def timeline(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Install vs post-install time per node, and the markers across the reboot as a plot."""
    run.show_figure(harness.timeline_plot(bare), "baremetal-timeline.png")
    return harness.phase_times(bare)
