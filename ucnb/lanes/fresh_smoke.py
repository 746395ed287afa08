"""fresh-smoke: the six-node VM cluster from clean state, its readiness, core behaviour and faults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import Field

from ..clusterlane import ClusterEnv, boot_cluster, readiness
from ..faults import Fault
from . import Lane, LaneParameters

if TYPE_CHECKING:
    from ..run import Run

ALL_NODES = ["node01", "node02", "node03", "node04", "node05", "node06"]


def default_faults() -> list[Fault]:
    return [Fault(kind="power_loss", target="leader", hold_s=3),
            Fault(kind="link_down", target="minority", hold_s=5),
            Fault(kind="service_restart", target="one", service="chainfire")]


class Parameters(LaneParameters):
    profile: Literal["lab", "ultracloud"] = "lab"
    nodes: list[str] = Field(default_factory=lambda: list(ALL_NODES))
    voters: list[str] = Field(default_factory=lambda: ["node01", "node02", "node03"])
    client: str = "node04"
    boot_timeout_s: float = Field(120.0, gt=0)
    boot_mode: Literal["cold", "restore"] = "cold"
    write_interval_s: float = Field(0.2, ge=0)
    faults: list[Fault] = Field(default_factory=default_faults)
    keep_vm: bool = False
    flake: str = "."


LANE = Lane(name="fresh-smoke", title="Six-node VM cluster smoke", parameters=Parameters,
            cell_timeout_s=900)


def product_command(params: Parameters) -> list[str]:
    """The product's own harness for this lane (seed: Publishable Checks)."""
    return [f"nix run {params.flake}/nix/test-cluster#cluster -- fresh-smoke"]


def boot(run: Run, params: Parameters) -> ClusterEnv | None:
    """Lab: boot node01..06 and form the 3-voter control plane. ultracloud: the product's harness."""
    if run.profile.name == "ultracloud":
        run.run_commands(product_command(params), cwd=params.flake, log_name="fresh-smoke.log")
        return None
    return boot_cluster(run, params.nodes, params.voters, params.client, params.boot_timeout_s,
                        params.boot_mode)


def ready(run: Run, env: ClusterEnv | None, started: float) -> pd.DataFrame:
    if env is None:
        run.skip("readiness", "ultracloud profile: checked by the product's harness")
        return pd.DataFrame()
    return readiness(run, env, started)


def core_behaviour(run: Run, env: ClusterEnv | None) -> pd.DataFrame:
    """Writes through one node, then local reads of them on every member."""
    if env is None:
        run.skip("core behaviour", "ultracloud profile: checked by the product's harness")
        return pd.DataFrame()
    first = env.cp.members[0]
    with run.step("write through one node", first):
        for i in range(5):
            env.cp.write(f"core/{i}", f"value-{i}", via=[first])
    with run.step("read from every node"):
        return env.cp.read_check("core behaviour")


def scheduler_and_hypervisor(run: Run, env: ClusterEnv | None) -> pd.DataFrame:
    """Steps that need roles the profile may lack are skipped with the profile's reason."""
    rows = []
    if env is None:
        run.skip("scheduler and hypervisor steps", "ultracloud profile: checked by the product's harness")
        return pd.DataFrame()
    for step, role in (("scheduler maintenance active -> draining -> active", "scheduler"),
                       ("fail-stop worker loss and replica restoration", "scheduler"),
                       ("worker registrations advertise exactly HYPERVISOR_TYPE_KVM", "hypervisor")):
        reason = run.profile.role(role).missing
        if reason is None:
            reason = f"the {role} role's checks are not implemented for the {run.profile.name} profile"
        run.skip(step, reason)
        rows.append({"step": step, "skipped": reason})
    return pd.DataFrame(rows)

