"""Canonical profile eval guard: every profile's entry points evaluate before any long run.

lab (and every profile): each lane's parameter file validates against the lane's schema and its
notebook's `parameters` cell (`ucnb.runner.prepare`, the same check `ucnb run` does first), and a
parameter file naming no lane is an error; a lane the lab cannot run is listed as not runnable,
with why. ultracloud: every canonical attr the contract names (`ucnb.product.contract.evaluations`:
its `nix eval` commands, and each `nix build .#ATTR` as an eval of `ATTR.drvPath`) evaluates,
through the product-command layer (nix with the feature flags). A flake path without flake.nix,
or no nix on this host, lists them as not evaluated: never a pass, never a failure.
"""

from __future__ import annotations

import shlex
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ucnb import paths
from ucnb.errors import UcnbError

PASSED, FAILED, NOT_EVALUATED, NOT_BUILT = "passed", "failed", "not-evaluated", "not-built"
NOT_RUNNABLE = "not-runnable"
NIX_MISSING = "not evaluated: no nix"
NIX_TIMEOUT_S = 600


@dataclass(frozen=True)
class ProfileCheck:
    """One entry point of one profile, and whether it evaluated."""

    profile: str
    lane: str
    what: str
    status: str   # passed | failed | not-evaluated | not-built | not-runnable (the last three: neither a
    #               pass nor a failure)
    detail: str = ""


def _relative(path: Path) -> str:
    try:
        return path.relative_to(paths.project_root()).as_posix()
    except ValueError:
        return str(path)


def parameter_checks() -> list[ProfileCheck]:
    """Every (lane, profile) a lane declares, and every parameter file, validated as `ucnb run` would."""
    from ucnb import lanes, profiles
    from ucnb.runner import execute as runner

    checks: list[ProfileCheck] = []
    registry = lanes.all_lanes()
    for profile in profiles.PROFILES:
        for lane in registry.values():
            source = lane.parameter_file(profile)
            what = _relative(source) if source.exists() else f"{lane.name} defaults (no {_relative(source)})"
            if lane.unavailable(profile):
                if profile == "lab" and lane.lab_unavailable:
                    checks.append(ProfileCheck(profile, lane.name, what, NOT_RUNNABLE, lane.lab_unavailable))
                continue
            if not source.exists() and not lane.notebook.exists():  # a lane still being written
                checks.append(ProfileCheck(profile, lane.name, what, NOT_BUILT,
                                           f"not built yet: no {_relative(lane.notebook)}"))
                continue
            try:
                runner.prepare(lane.name, profile, [], [])
                checks.append(ProfileCheck(profile, lane.name, what, PASSED))
            except UcnbError as exc:
                checks.append(ProfileCheck(profile, lane.name, what, FAILED, str(exc)))
        folder = paths.project_root() / "parameters" / profile
        for file in sorted(folder.glob("*.yaml")):
            lane_obj = registry.get(file.stem)
            if lane_obj is None or (lane_obj.unavailable(profile) and not lane_obj.lab_unavailable):
                reason = (f"no lane {file.stem!r} in the registry" if lane_obj is None
                          else lane_obj.unavailable(profile))
                checks.append(ProfileCheck(profile, file.stem, _relative(file), FAILED,
                                           f"parameter file for nothing runnable: {reason}"))
    return checks


def attr_checks(flake: str | None = None) -> list[ProfileCheck]:
    """Every canonical attr of the contract, evaluated in `flake` (default: the current directory)
    through the product-command layer; not evaluated (and why) without flake.nix or without nix."""
    from ucnb.product import commands, contract

    root = Path(flake or ".").expanduser().absolute()
    has_flake = (root / "flake.nix").is_file()
    evaluations = contract.evaluations(root, timeout_s=NIX_TIMEOUT_S, check_flake=has_flake)
    if not has_flake:
        reason = f"not evaluated: {root} has no flake.nix"
    else:
        reason = "" if shutil.which("nix") else NIX_MISSING
    checks = []
    for lane, command in evaluations:
        what = f"{root}: {shlex.join(command.argv)}"
        if reason:
            checks.append(ProfileCheck("ultracloud", lane, what, NOT_EVALUATED, reason))
            continue
        try:
            result = commands.run(command, check=False)
        except UcnbError as exc:  # nix could not be started
            checks.append(ProfileCheck("ultracloud", lane, what, FAILED, str(exc)))
            continue
        errors = [line for line in result.tail if line.startswith("error:")]
        detail = (result.tail[-1:] or [""])[0][:200] if result.passed else \
            (errors[0] if errors else (result.failure or "").splitlines()[0])
        checks.append(ProfileCheck("ultracloud", lane, what, PASSED if result.passed else FAILED, detail))
    return checks


def check_profiles(flake: str | None = None) -> list[ProfileCheck]:
    """Every check of the guard: parameter files first, then the ultracloud attributes."""
    return parameter_checks() + attr_checks(flake)


def summary(checks: list[ProfileCheck]) -> str:
    counts = Counter(c.status for c in checks)
    text = (f"{counts[PASSED]} evaluated, {counts[FAILED]} failed, "
            f"{counts[NOT_EVALUATED]} not evaluated")
    return (text + (f", {counts[NOT_RUNNABLE]} not runnable" if counts[NOT_RUNNABLE] else "")
            + (f", {counts[NOT_BUILT]} lanes not built" if counts[NOT_BUILT] else ""))
