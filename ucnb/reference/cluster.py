"""Cluster state in the product's authoring shape (`ultracloud.cluster`), validated.

The product authors clusters once (`nix/lib/cluster-schema.nix`); on the `ultracloud` profile the
state comes from `nix eval --json` of that module, on `lab` from a file written in the same shape.
Both go through `load_cluster`, so there is one loader and one schema:

```yaml
ultracloud:            # optional wrapper; the bare object (as `nix eval --json` prints it) works too
  cluster:
    name: lab
    node_classes:
      control-plane:
        install_plan:
          nixos_configuration: baremetal-qemu-control-plane
          disko_config_path: nix/nodes/baremetal-qemu/control-plane/disko.nix
          target_disk_by_id: /dev/disk/by-id/virtio-uc-control-root
        desired_system:                      # optional
          target_system: /nix/store/...-control-plane
          health_check_command: systemctl is-system-running --wait
    nodes:
      node01: {class: control-plane}         # node_id and hostname default to the key
```

Unknown keys are errors: a misspelt key must not silently drop part of an install plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ucnb.errors import ParameterError

BY_ID_PREFIX = "/dev/disk/by-id/"
BY_ID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,127}$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # safe in URLs, file names and kernel parameters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InstallPlan(_Strict):
    """What the live installer materialises: a NixOS configuration, its Disko layout, the disk."""

    nixos_configuration: str = Field(pattern=NAME_PATTERN)
    disko_config_path: str = Field(min_length=1)
    target_disk_by_id: str

    @field_validator("target_disk_by_id")
    @classmethod
    def _stable_selector(cls, value: str) -> str:
        # The contract is a stable selector: /dev/sdX names move between boots on real hardware.
        # It reaches the installer's shell and kernel command line: one plain by-id name only.
        if not value.startswith(BY_ID_PREFIX) or not BY_ID_NAME.match(value[len(BY_ID_PREFIX):]):
            raise ValueError(f"must be a stable selector under {BY_ID_PREFIX} (one name of letters, "
                             "digits and . _ : + @ -)")
        return value


class DesiredSystem(_Strict):
    """The prebuilt system the node agent converges to, and how it judges the result healthy."""

    target_system: str = Field(min_length=1)
    health_check_command: str | None = None


class NodeClass(_Strict):
    install_plan: InstallPlan
    desired_system: DesiredSystem | None = None


class ClusterNode(_Strict):
    node_class: str = Field(alias="class")
    node_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    hostname: str | None = Field(default=None, pattern=NAME_PATTERN)


class Cluster(_Strict):
    """One cluster: reusable node classes and the nodes that use them."""

    name: str | None = None
    node_classes: dict[str, NodeClass]
    nodes: dict[str, ClusterNode] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Cluster:
        for name, node in self.nodes.items():
            if node.node_class not in self.node_classes:
                raise ValueError(f"nodes.{name}: class {node.node_class!r} is not one of the node_classes "
                                 f"({', '.join(sorted(self.node_classes)) or 'none'})")
        for attribute in ("node_id", "hostname"):
            values = [getattr(self.resolved(name), attribute) for name in self.nodes]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"duplicate {attribute}: {', '.join(duplicates)}")
        return self

    def resolved(self, name: str) -> ResolvedNode:
        """Node `name` (a key of `nodes`) with its defaults filled in and its class attached."""
        node = self.nodes[name]
        return ResolvedNode(name=name, node_id=node.node_id or name, hostname=node.hostname or name,
                            node_class=node.node_class, spec=self.node_classes[node.node_class])

    def by_node_id(self) -> dict[str, ResolvedNode]:
        """Every node keyed by node_id (the identity the installer phones home with)."""
        return {r.node_id: r for r in (self.resolved(name) for name in self.nodes)}


class ResolvedNode(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    node_id: str
    hostname: str
    node_class: str
    spec: NodeClass


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, `dotted.location: message`, never echoing the offending value.

    Values stay out because a request body or file may hold a secret in the wrong field.
    """
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{location}: {message}")
    return "; ".join(lines)


def parse_cluster(document: Mapping[str, Any], source: str = "cluster") -> Cluster:
    """Validate a cluster document: `{ultracloud: {cluster: ...}}` or the bare cluster object."""
    if not isinstance(document, Mapping):
        raise ParameterError(f"{source}: expected a mapping, got {type(document).__name__}")
    body: Any = document
    if set(document) == {"ultracloud"}:
        wrapper = document["ultracloud"]
        if not isinstance(wrapper, Mapping) or set(wrapper) != {"cluster"}:
            raise ParameterError(f"{source}: under `ultracloud` only the key `cluster` is allowed")
        body = wrapper["cluster"]
    try:
        return Cluster.model_validate(body)
    except ValidationError as exc:
        raise ParameterError(f"{source}: invalid cluster state: {describe_validation_error(exc)}") from None


def load_cluster(path: Path) -> Cluster:
    """Read and validate a cluster file (YAML, or JSON as `nix eval --json` writes it)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ParameterError(f"cannot read cluster file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ParameterError(f"cluster file {path} is not valid YAML/JSON: {exc}") from None
    return parse_cluster(document if document is not None else {}, source=f"cluster file {path}")
