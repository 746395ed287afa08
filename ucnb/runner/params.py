"""Parameter resolution: profile file, then `-f` files, then `-p NAME=VALUE`, then validation.

Everything here runs before any VM exists; every error names the file or parameter at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ucnb import profiles
from ucnb.errors import ParameterError
from ucnb.lanes import Lane, LaneParameters


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping of parameter names to values."""
    if not path.is_file():
        raise ParameterError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParameterError(f"parameter file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter file {path} must hold a mapping of names to values, "
                             f"not a {type(data).__name__}")
    return data


def parse_assignment(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` with VALUE read as YAML (so `true`, `3`, `[a, b]` get their types)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ParameterError(f"-p expects NAME=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


def resolve(lane: Lane, profile: str, files: list[Path] | None = None,
            assignments: list[str] | None = None) -> LaneParameters:
    """The validated parameters of one lane run."""
    profiles.load(profile)  # unknown profile -> ParameterError
    lane.check_profile(profile)
    values: dict[str, Any] = {}
    base = lane.parameter_file(profile)
    if base.exists():
        values.update(read_yaml_mapping(base))
    for f in files or []:
        values.update(read_yaml_mapping(Path(f)))
    for assignment in assignments or []:
        name, value = parse_assignment(assignment)
        values[name] = value
    values["profile"] = profile
    params = lane.validate(values)
    if profile == "ultracloud":  # a relative flake is the user's: from where `ucnb` was started
        params.flake = str(Path(params.flake).expanduser().absolute())
    return params
