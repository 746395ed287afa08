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

from ucnb.lanes.product_only import Parameters, boot, product_lane, product_result

__all__ = ["LANE", "Parameters", "boot", "product_result"]

LANE = product_lane(
    "fresh-demo-vm-webapp", "Demo VM web app (VM hosting bundle)",
    lab_unavailable=(
        "no honest stand-in here for a VM hosted by plasmavmc on prismnet networking with its state in "
        "lightningstor: the lab's guests run under TCG and cannot host VMs themselves, and the lab "
        "provides none of those provider APIs"))
