"""The kernel side of the ultracloud profile: run the lane's product commands, ingest what they wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ucnb.errors import InfrastructureError

if TYPE_CHECKING:
    from ucnb.kernel.run import Run


def run_lane(run: Run) -> None:
    raise InfrastructureError(f"{run.lane.name}: the ultracloud profile is being wired in")
