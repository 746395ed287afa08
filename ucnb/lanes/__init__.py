"""The lane catalogue: each lane's notebook, parameter schema, profiles and secrets.

A lane's parameter schema is a pydantic model here; its notebook's `parameters` cell holds the
same names with the lab defaults (a test keeps the two in step).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ucnb import paths
from ucnb.errors import ParameterError


class LaneParameters(BaseModel):
    """Common to every lane. Unknown names and wrong types are errors (before any VM exists)."""

    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)

    profile: Literal["lab", "ultracloud"] = "lab"
    # ultracloud: the UltraCloud flake the product's commands run from (a path that must exist).
    flake: str = "."
    keep_vm: bool = False


class TokenParameters(LaneParameters):
    """Lanes that hand a bootstrap token to the system under test: the NAME of the variable
    holding it (never its value)."""

    bootstrap_token_env: str = Field("ULTRACLOUD_BOOTSTRAP_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class WarmStartParameters(LaneParameters):
    """Lanes whose lab can start from a saved just-booted state (`ucnb.lab.warm`): `restore`
    resumes the snapshot of these exact inputs, or boots cold and saves it when there is none."""

    boot_mode: Literal["cold", "restore"] = "cold"


@dataclass(frozen=True)
class Lane:
    """One proof lane: its notebook, parameter schema and what each profile does with it.

    On `ultracloud` the run executes the product's own commands for the lane (the contract's, as
    data in the ultracloud profile) and every lab-only step skips itself; `lab_unavailable` is
    the reason the embedded lab cannot run the lane at all (then only `ultracloud` can).
    """

    name: str
    title: str
    parameters: type[LaneParameters]
    aliases: tuple[str, ...] = ()
    # parameter names whose value is the NAME of an environment variable holding a secret
    secret_env_parameters: tuple[str, ...] = ()
    lab_unavailable: str = ""
    cell_timeout_s: int = 900
    # Runs without KVM (TCG-safe): the `portable` suite picks up every lane that says so.
    portable: bool = False

    @property
    def profiles(self) -> tuple[str, ...]:
        return ("ultracloud",) if self.lab_unavailable else ("lab", "ultracloud")

    def unavailable(self, profile: str) -> str:
        """Why this lane cannot run on `profile` ("" when it can)."""
        if profile in self.profiles:
            return ""
        if profile == "lab" and self.lab_unavailable:
            return f"lane {self.name} is not runnable on the lab profile: {self.lab_unavailable}"
        return f"lane {self.name} has no {profile!r} profile (it has: {', '.join(self.profiles)})"

    def check_profile(self, profile: str) -> None:
        """Refuse a profile that cannot run this lane, before anything starts: a bad value of the
        `profile` parameter (exit 2), since no host could run the lane on it."""
        reason = self.unavailable(profile)
        if reason:
            hint = (f"; run it on the product: ucnb run {self.name} --profile ultracloud -p flake=PATH"
                    if "ultracloud" in self.profiles else "")
            raise ParameterError(f"profile: {reason}{hint}")

    @property
    def notebook(self) -> Path:
        return paths.project_root() / "notebooks" / f"{self.name}.ipynb"

    def parameter_file(self, profile: str) -> Path:
        return paths.project_root() / "parameters" / profile / f"{self.name}.yaml"

    def validate(self, values: dict[str, Any]) -> LaneParameters:
        """Validate parameter values, naming every wrong one.

        `lane_name` names the notebook's own lane (lanes that share a notebook shape differ in it):
        it must be this lane, and is not a parameter of the schema."""
        values = dict(values)
        named = values.pop("lane_name", self.name)
        if named not in (self.name, *self.aliases):
            raise ParameterError(f"lane_name: this is lane {self.name}, not {named!r}")
        try:
            params = self.parameters.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(parameters)'}: "
                f"{'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in exc.errors())
            known = ", ".join(self.parameters.model_fields)
            raise ParameterError(f"bad parameters for lane {self.name}: {problems} "
                                 f"(known parameters: {known})") from None
        self.check_profile(params.profile)
        return params


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
