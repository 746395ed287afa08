"""Profiles: what each UltraCloud component is on a given platform (lab stand-in or the product).

Lanes speak of components and roles; the profile says which concrete service and commands they
are, or why the profile does not provide them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict

from ucnb.errors import ParameterError

if TYPE_CHECKING:
    from ucnb.reference.cluster import Cluster

PROFILE_DIR = Path(__file__).resolve().parent

# The product's canonical profiles (seed: "Canonical Profiles").
CANONICAL_PROFILES: dict[str, dict[str, list[str]]] = {
    "single-node dev": {
        "required": ["chainfire", "flaredb", "iam", "plasmavmc", "prismnet"],
        "optional": ["lightningstor", "coronafs", "flashdns", "fiberlb", "apigateway", "nightlight",
                     "creditservice", "k8shost"],
    },
}


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str | None = None
    stands_in: str | None = None
    health: str | None = None
    missing: str | None = None

    @property
    def provided(self) -> bool:
        return self.service is not None


class ServiceManager(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str
    stop: str
    restart: str
    status: str
    # Service log files in the guest (globs), whose tails a run pulls into logs/ at its end.
    logs: list[str] = []


class Role(BaseModel):
    """A role a lane speaks of (the KV store, the scheduler…), or why the profile lacks it."""

    model_config = ConfigDict(extra="forbid")
    component: str | None = None
    service: str | None = None
    ctl: str | None = None           # client command template: {endpoints} {timeout}
    # A light client for the role's JSON API: POST {body} to {url} within {timeout} seconds,
    # the reply on stdout (a workload's many small calls; no client binary to start each time).
    http: str | None = None
    health: str | None = None        # GET {url} (a member's health endpoint) within {timeout} seconds
    config_file: str | None = None
    missing: str | None = None

    @property
    def provided(self) -> bool:
        return self.missing is None


class NodeClassServices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    services: list[str] = []
    held: list[str] = []
    memory_mib: int = 256


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    surface_profile: str
    components: dict[str, Component]
    service_manager: ServiceManager
    roles: dict[str, Role] = {}
    cluster_file: str | None = None
    node_classes: dict[str, NodeClassServices] = {}
    # The product's own commands (ultracloud): validated by ucnb.product.contract, which owns them.
    commands: dict[str, Any] | None = None

    def role(self, name: str) -> Role:
        """A role, or a missing one naming why (so the lane skips its steps with that reason)."""
        return self.roles.get(name) or Role(
            missing=f"the {self.name} profile does not provide the {name!r} role")

    def cluster(self) -> Cluster:
        """The profile's cluster state, through the one loader of the product's cluster shape."""
        from ucnb.reference.cluster import load_cluster

        if self.cluster_file is None:
            raise ParameterError(f"the {self.name} profile has no cluster file")
        return load_cluster(PROFILE_DIR / self.cluster_file)

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            return Component(missing=f"the {self.name} profile does not declare component {name!r}")

    def manifest(self) -> dict[str, object]:
        """The machine-readable product-surface manifest this profile's image ships."""
        canonical = CANONICAL_PROFILES[self.surface_profile]
        return {
            "schema": "ucnb.product-surface/v1",
            "profile": self.surface_profile,
            "platform": self.name,
            "required": canonical["required"],
            "optional": canonical["optional"],
            "components": {
                name: {"provided": c.provided, "service": c.service, "stands_in": c.stands_in,
                       "missing": c.missing}
                for name, c in sorted(self.components.items())
            },
        }


PROFILES = ("lab", "ultracloud")


@cache
def load(name: str) -> Profile:
    """Load a profile by name; an unknown name is a parameter error listing the known ones."""
    if name not in PROFILES:
        raise ParameterError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    data = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    return Profile.model_validate(data)
