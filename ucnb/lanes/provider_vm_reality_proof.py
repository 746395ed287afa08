"""provider-vm-reality-proof: Provider and VM-hosting reality proof.

The artifact-producing companion of the provider and VM-hosting bundle: authoritative FlashDNS
answers, FiberLB backend drain and re-convergence, PlasmaVMC KVM shared-storage migration and the
post-migration restart state, PrismNet port and ACL state, all in one dated proof root (`<work
root>/provider-vm-reality-proof/latest`).

On `ultracloud` the boot step runs the product's command (`nix run ./nix/test-cluster#cluster --
provider-vm-reality-proof`) through `ucnb.kernel.product`; the lab profile refuses the lane before
it starts, with `LAB_UNAVAILABLE` as the reason (a suite reports it `not-runnable`).

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
    "no honest stand-in here for authoritative FlashDNS, FiberLB backend drain or PlasmaVMC "
    "shared-storage migration: the lab provides none of these services, and its TCG guests cannot "
    "host or migrate VMs")


class Parameters(LaneParameters):
    # The lane's only profile: the notebook's defaults run the product.
    profile: Literal["lab", "ultracloud"] = "ultracloud"


LANE = Lane(name="provider-vm-reality-proof", title="Provider and VM-hosting reality proof",
            parameters=Parameters, lab_unavailable=LAB_UNAVAILABLE)


@boots
def boot(run: Run) -> None:
    """The product's command for this lane (ultracloud). The lab profile is refused before a run
    starts, so on the lab this is never reached; if it were, it refuses with the same reason."""
    LANE.check_profile(run.profile.name)
