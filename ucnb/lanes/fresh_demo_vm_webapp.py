"""fresh-demo-vm-webapp: Demo VM web app (VM hosting bundle).

A VM hosted by plasmavmc on prismnet networking serves a web app whose state persists through
lightningstor: the optional VM-hosting bundle proof (`plasmavmc + prismnet`, state in
`lightningstor`) of the publishable suite, on the six-node VM cluster.

On `ultracloud` the boot step runs the product's command (`nix run ./nix/test-cluster#cluster --
fresh-demo-vm-webapp`) through `ucnb.kernel.product`; the lab profile refuses the lane before it
starts, with `LAB_UNAVAILABLE` as the reason (a suite reports it `not-runnable`).

The product's own lane: the lab profile has no stand-in for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ucnb.kernel.product import product_result
from ucnb.kernel.steps import boots
from ucnb.lanes import Lane, LaneParameters

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

__all__ = ["LANE", "Parameters", "boot", "product_result"]

LAB_UNAVAILABLE = (
    "no honest stand-in here for a VM hosted by plasmavmc on prismnet networking with its state in "
    "lightningstor: the lab's guests run under TCG and cannot host VMs themselves, and the lab "
    "provides none of those provider APIs")


class Parameters(LaneParameters):
    # The lane's only profile: the notebook's defaults run the product.
    profile: Literal["lab", "ultracloud"] = "ultracloud"


LANE = Lane(name="fresh-demo-vm-webapp", title="Demo VM web app (VM hosting bundle)",
            parameters=Parameters, lab_unavailable=LAB_UNAVAILABLE)


@boots
def boot(run: Run) -> None:
    """The product's command for this lane (ultracloud). The lab profile is refused before a run
    starts, so on the lab this is never reached; if it were, it refuses with the same reason."""
    LANE.check_profile(run.profile.name)
