"""fresh-matrix: Provider bundle composition matrix.

The provider bundles compose: `prismnet + flashdns + fiberlb` and `plasmavmc + coronafs +
lightningstor`. PrismNet security-group ACL add/remove; FiberLB TCP and TLS-terminated
(`Https`/`TerminatedHttps`) listeners; LightningStor bucket metadata and object versions; the
published k8shost pod-watch surface; creditservice quota, wallet and reservation flows through the
API gateway; and the KVM-only PlasmaVMC worker contract.

On `ultracloud` the boot step runs the product's command (`nix run ./nix/test-cluster#cluster --
fresh-matrix`) through `ucnb.kernel.product`; the lab profile refuses the lane before it starts,
with `LAB_UNAVAILABLE` as the reason (a suite reports it `not-runnable`).

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
    "no honest stand-in here for the provider bundles (prismnet, flashdns, fiberlb, plasmavmc, "
    "coronafs, lightningstor), k8shost, creditservice or the API gateway: the lab provides none of "
    "their APIs, and its TCG guests cannot be KVM workers")


class Parameters(LaneParameters):
    # The lane's only profile: the notebook's defaults run the product.
    profile: Literal["lab", "ultracloud"] = "ultracloud"


LANE = Lane(name="fresh-matrix", title="Provider bundle composition matrix",
            parameters=Parameters, lab_unavailable=LAB_UNAVAILABLE)


@boots
def boot(run: Run) -> None:
    """The product's command for this lane (ultracloud). The lab profile is refused before a run
    starts, so on the lab this is never reached; if it were, it refuses with the same reason."""
    LANE.check_profile(run.profile.name)
