"""fresh-smoke: the six-node VM cluster from clean state, its readiness, core behaviour and faults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from ucnb.cluster.faults import Fault
from ucnb.cluster.steps import (
    ClusterEnv,
    ClusterParameters,
    acknowledged_writes,
    boot,
    check_fault_targets,
    latency_plot,
    readiness,
    start_workload,
)
from ucnb.cluster.steps import run_faults as _run_faults
from ucnb.kernel.steps import lab_step
from ucnb.lanes import Lane
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

__all__ = ["acknowledged_writes", "boot", "core_behaviour", "faults", "latency_plot", "readiness",
           "scheduler_and_hypervisor", "start_workload"]

# Steps that need roles the lab profile lacks: skipped with the profile's reason.
ROLE_STEPS = (("scheduler maintenance active -> draining -> active", "scheduler"),
              ("fail-stop worker loss and replica restoration", "scheduler"),
              ("worker registrations advertise exactly HYPERVISOR_TYPE_KVM", "hypervisor"))


def default_faults() -> list[Fault]:
    return [Fault(kind="power_loss", target="leader", hold_s=3),
            Fault(kind="link_down", target="minority", hold_s=5),
            Fault(kind="service_restart", target="one", service="chainfire")]


class Parameters(ClusterParameters):
    faults: list[Fault] = Field(default_factory=default_faults, max_length=50)

    @model_validator(mode="after")
    def _targets(self) -> Parameters:
        check_fault_targets(self.nodes, self.faults, self.voters, self.profile)
        return self


LANE = Lane(name="fresh-smoke", title="Six-node VM cluster smoke", parameters=Parameters,
            cell_timeout_s=900)


@lab_step("core behaviour")
def core_behaviour(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """Writes through one node, then local reads of them on every member."""
    first = env.cp.members[0]
    with run.step("write through one node", first):
        for i in range(5):
            env.cp.write(f"core/{i}", f"value-{i}", via=[first])
    with run.step("read from every node"):
        return env.cp.read_check("core behaviour")


def faults(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """The `faults` schedule, each with its invariants checked."""
    return _run_faults(run, env, run.parameters(Parameters).faults)


@lab_step("scheduler and hypervisor steps")
def scheduler_and_hypervisor(run: Run) -> pd.DataFrame:
    """Steps that need roles the profile may lack are skipped with the profile's reason."""
    rows = []
    for step, role in ROLE_STEPS:
        reason = run.profile.role(role).missing or (
            f"the {role} role's checks are not implemented for the {run.profile.name} profile")
        rows.append(run.skip(step, reason))
    return pd.concat(rows, ignore_index=True)
