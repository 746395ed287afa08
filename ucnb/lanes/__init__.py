"""The lane catalogue: each lane's notebook, parameter schema, profiles and secrets.

A lane's parameter schema is a pydantic model here; its notebook's `parameters` cell holds the
same names with the lab defaults (a test keeps the two in step).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ucnb import paths
from ucnb.errors import ParameterError


class LaneParameters(BaseModel):
    """Common to every lane. Unknown names and wrong types are errors (before any VM exists)."""

    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


@dataclass(frozen=True)
class Lane:
    name: str
    title: str
    parameters: type[LaneParameters]
    aliases: tuple[str, ...] = ()
    # parameter name -> the secret it names (its value is an environment variable's name)
    secret_env_parameters: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ("lab", "ultracloud")
    cell_timeout_s: int = 900
    notes: dict[str, str] = field(default_factory=dict)
    # Runs without KVM (TCG-safe): the `portable` suite picks up every lane that says so.
    portable: bool = False
    # ultracloud profile: flake attributes (relative to the `flake` parameter) that must
    # evaluate before any long run; `ucnb guard profiles` evaluates them with `nix eval`.
    ultracloud_attrs: tuple[str, ...] = ()

    @property
    def notebook(self) -> Path:
        return paths.project_root() / "notebooks" / f"{self.name}.ipynb"

    def parameter_file(self, profile: str) -> Path:
        return paths.project_root() / "parameters" / profile / f"{self.name}.yaml"

    def validate(self, values: dict[str, Any]) -> LaneParameters:
        """Validate parameter values, naming every wrong one."""
        try:
            return self.parameters.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(parameters)'}: "
                f"{'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in exc.errors())
            known = ", ".join(self.parameters.model_fields)
            raise ParameterError(f"bad parameters for lane {self.name}: {problems} "
                                 f"(known parameters: {known})") from None


@functools.cache
def _registry() -> dict[str, Lane]:
    """Every module of this package that defines `LANE` is a lane."""
    found: dict[str, Lane] = {}
    for info in pkgutil.iter_modules(__path__):
        lane = getattr(importlib.import_module(f"{__name__}.{info.name}"), "LANE", None)
        if isinstance(lane, Lane):
            found[lane.name] = lane
    return dict(sorted(found.items()))


def all_lanes() -> dict[str, Lane]:
    return _registry()


def get(name: str) -> Lane:
    """Find a lane by name or alias; an unknown name is a parameter error listing the known ones."""
    # A lane lives in the module named after it: import just that one when it exists (the
    # others pull in what this run does not need); aliases and typos go through the registry.
    module = name.replace("-", "_")
    if module.isidentifier() and importlib.util.find_spec(f"{__name__}.{module}") is not None:
        lane = getattr(importlib.import_module(f"{__name__}.{module}"), "LANE", None)
        if isinstance(lane, Lane) and lane.name == name:
            return lane
    lanes = _registry()
    for lane in lanes.values():
        if name == lane.name or name in lane.aliases:
            return lane
    raise ParameterError(f"unknown lane {name!r}; known lanes: {', '.join(sorted(lanes))}")
