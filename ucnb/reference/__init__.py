"""Reference implementations of UltraCloud services for the embedded lab.

- `ucnb.reference.cluster`: cluster state in the product's `ultracloud.cluster` shape (one loader);
- `ucnb.reference.deployer`: the reference deployer (`Deployer`, and `python -m ucnb.reference.deployer`).

The deployer is not imported here, so `python -m ucnb.reference.deployer` runs it exactly once.
"""

from ucnb.reference.cluster import Cluster, load_cluster, parse_cluster

__all__ = ["Cluster", "load_cluster", "parse_cluster"]
