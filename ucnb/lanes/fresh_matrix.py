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

from ucnb.lanes.product_only import Parameters, boot, product_lane, product_result

__all__ = ["LANE", "Parameters", "boot", "product_result"]

LANE = product_lane(
    "fresh-matrix", "Provider bundle composition matrix",
    lab_unavailable=(
        "no honest stand-in here for the provider bundles (prismnet, flashdns, fiberlb, plasmavmc, "
        "coronafs, lightningstor), k8shost, creditservice or the API gateway: the lab provides none of "
        "their APIs, and its TCG guests cannot be KVM workers"))
