"""core-control-plane-ops-proof: Core control-plane operations proof.

The core control plane's operational boundaries, recorded as proof: the ChainFire API boundary,
FlareDB's additive-first migration and destructive-DDL boundary, IAM bootstrap hardening, and the
signing-key, credential and mTLS rotation proofs (`iam-key-rotation-tests.log`, `iam-credential-
rotation-tests.log`, `iam-mtls-rotation-tests.log`, `scope-fixed-contract.json`).

On `ultracloud` the boot step runs the product's command
(`./nix/test-cluster/run-core-control-plane-ops-proof.sh
./work/core-control-plane-ops-proof/latest`) through `ucnb.kernel.product`; the lab profile refuses
the lane before it starts, with `LAB_UNAVAILABLE` as the reason (a suite reports it `not-runnable`).

The product's own lane: the lab profile has no stand-in for it.
"""

from __future__ import annotations

from ucnb.lanes.product_only import Parameters, boot, product_lane, product_result

__all__ = ["LANE", "Parameters", "boot", "product_result"]

LANE = product_lane(
    "core-control-plane-ops-proof", "Core control-plane operations proof",
    lab_unavailable=(
        "no honest stand-in here for the product's IAM (bootstrap hardening, signing-key, credential and "
        "mTLS rotation), the ChainFire API boundary or FlareDB's migration rules: etcd and sqlite3 stand "
        "in for storage semantics only"))
