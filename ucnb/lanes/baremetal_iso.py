"""baremetal-iso: a control-plane node and a worker installed from the installer ISO, as on hardware.

Lab profile: the reference installer ISO, the reference deployer on the lab network (HTTPS with a
per-run private CA), the reference binary cache and the reference node agent (stand-ins for
ultracloud-iso, the deployer, a nix binary cache and nix-agent) on machines that boot from
firmware: blank disk, then CD; after the install the firmware lands on the installed disk, laid
out as each class's `disko_config_path` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from ucnb.baremetal import bootstrap_evidence, harness
from ucnb.baremetal.gateway import BootstrapOptions
from ucnb.kernel.steps import boots, lab_step
from ucnb.lanes import Lane, TokenParameters
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")


IDENTITY = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$"   # "" = no override (DMI serial, default hostname)


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
    tls: bool = True
    installer_ca: Literal["run", "other", "none"] = "run"
    binary_cache: bool = True
    allow_unauthenticated: bool = False
    control_plane_node_id: str = Field("", pattern=IDENTITY)
    control_plane_hostname: str = Field("", pattern=IDENTITY)
    worker_node_id: str = Field("", pattern=IDENTITY)
    worker_hostname: str = Field("", pattern=IDENTITY)

    @model_validator(mode="after")
    def _bootstrap(self) -> Parameters:
        self.options()   # raises a ParameterError naming tls / installer_ca
        return self

    def options(self) -> BootstrapOptions:
        return BootstrapOptions(tls=self.tls, installer_ca=self.installer_ca, binary_cache=self.binary_cache,
                                allow_unauthenticated=self.allow_unauthenticated)


LANE = Lane(
    name="baremetal-iso",
    title="Bare-metal ISO install (control plane + worker)",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env", "installer_token_env"),
    cell_timeout_s=600,
)


def machines(params: Parameters) -> list[harness.Machine]:
    """The two machines: the disk serials are what the install plan's selectors find; the machine
    names are their DMI serials; the identity overrides go on their kernel command lines."""
    return [harness.Machine("control-plane", "control-plane", params.control_plane_disk_serial,
                            params.control_plane_node_id, params.control_plane_hostname),
            harness.Machine("worker", "worker", params.worker_disk_serial, params.worker_node_id,
                            params.worker_hostname)]


@boots
def prepare(run: Run) -> harness.BareMetalLab:
    """The machines, the deployer and the ISOs, once the accelerator is acceptable."""
    params = run.parameters(Parameters)
    harness.refuse_tcg_unless_allowed(run, params.allow_tcg)
    return harness.prepare(run, machines(params), memory_mib=params.memory_mib, disk_size=params.disk_size,
                           bootstrap_token_env=params.bootstrap_token_env,
                           installer_token_env=params.installer_token_env,
                           execution_model=params.execution_model, options=params.options())


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
        ok = ((table["path"] == "/api/v1/phone-home") & (table["node_id"] == machine.node_id)
              & (table["status"] == 200)).any()
        run.recorder.check(f"phone-home accepted {machine.name}", True, bool(ok), node=machine.name)
    return table


@lab_step("TLS: who vouched for the deployer")
def tls(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """The deployer's certificate, its issuer (the run's CA) and the CA each installer verified with."""
    return bootstrap_evidence.tls_evidence(bare)


@lab_step("identities")
def identities(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Which identity each node phoned home with, and where it came from (override or DMI serial)."""
    return bootstrap_evidence.identities(bare)


@lab_step("disk layout")
def disk_layout(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """The installed disks' partition tables, read back over SSH on the installed systems."""
    return harness.disk_layout(bare, run.parameters(Parameters).post_install_timeout_s)


@lab_step("desired system status")
def agent_status(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """The deployer's view: every node reported its desired system `active`."""
    table = harness.deployer_state(bare)
    for row in table.itertuples():
        run.recorder.check(f"desired system active {row.machine}", "active", row.observed_status,
                           node=str(row.machine))
    return table


@lab_step("system sources")
def system_sources(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Where each node's system came from (binary cache or the deployer's bundles), with its checksum."""
    return bootstrap_evidence.system_sources(bare)


@lab_step("install timeline")
def timeline(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Install vs post-install time per node, and the markers across the reboot as a plot."""
    run.show_figure(harness.timeline_plot(bare), "baremetal-timeline.png")
    return harness.phase_times(bare)
