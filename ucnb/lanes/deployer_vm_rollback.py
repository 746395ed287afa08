"""deployer-vm-rollback: a desired system whose health check fails is rolled back.

Same steps as deployer-vm-smoke (`deployer_vm.py`); the published `health_check_command` fails,
so the observed status must become `rolled-back` and the node must stay on the previous system.
"""

from __future__ import annotations

from pydantic import Field

from ucnb.lanes import Lane
from ucnb.lanes.deployer_vm import Parameters as SmokeParameters


class Parameters(SmokeParameters):
    health_check_command: str = Field("test -e /run/ultracloud/never-healthy", min_length=1)


LANE = Lane(
    name="deployer-vm-rollback",
    title="Node agent rollback on a failing health check",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env",),
    cell_timeout_s=600,
)
