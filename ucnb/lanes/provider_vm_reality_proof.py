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

from ucnb.lanes.product_only import Parameters, boot, product_lane, product_result

__all__ = ["LANE", "Parameters", "boot", "product_result"]

LANE = product_lane(
    "provider-vm-reality-proof", "Provider and VM-hosting reality proof",
    lab_unavailable=(
        "no honest stand-in here for authoritative FlashDNS, FiberLB backend drain or PlasmaVMC shared-"
        "storage migration: the lab provides none of these services, and its TCG guests cannot host or "
        "migrate VMs"))
