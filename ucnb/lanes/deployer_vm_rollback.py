"""deployer-vm-rollback: a desired system whose health check fails is rolled back.

The same lane shape and steps as deployer-vm-smoke (`deployer_vm.py`); only the defaults differ:
the published `health_check_command` fails, so the node agent must report `rolled-back` and the
node must stay on the system it had.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ucnb.lanes import Lane
from ucnb.lanes.deployer_vm import Parameters as SmokeParameters


class Parameters(SmokeParameters):
    health_check_command: str = Field("test -e /run/ultracloud/never-healthy", min_length=1)
    expect: Literal["active", "rolled-back"] = "rolled-back"


LANE = Lane(
    name="deployer-vm-rollback",
    title="Node agent rollback on a failing health check",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env",),
    cell_timeout_s=600,
)
