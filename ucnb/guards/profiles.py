"""Canonical profile eval guard: every profile's entry points evaluate before any long run.

lab (and every profile): each lane's parameter file validates against the lane's schema and its
notebook's `parameters` cell (`ucnb.runner.prepare`, the same check `ucnb run` does first), and a
parameter file naming no lane is an error. ultracloud: each lane's flake attributes
(`Lane.ultracloud_attrs`) evaluate with `nix eval`; without nix they are listed as not evaluated,
which is never a pass.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ucnb import paths
from ucnb.errors import UcnbError

PASSED, FAILED, NOT_EVALUATED, NOT_BUILT = "passed", "failed", "not-evaluated", "not-built"
NIX_MISSING = "not evaluated (nix not installed)"
NIX_TIMEOUT_S = 600


@dataclass(frozen=True)
class ProfileCheck:
    """One entry point of one profile, and whether it evaluated."""

    profile: str
    lane: str
    what: str
    status: str   # passed | failed | not-evaluated | not-built (neither a pass nor a failure)
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
            if profile not in lane.profiles:
                continue
            source = lane.parameter_file(profile)
            what = _relative(source) if source.exists() else f"{lane.name} defaults (no {_relative(source)})"
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
            if lane_obj is None or profile not in lane_obj.profiles:
                reason = (f"no lane {file.stem!r} in the registry" if lane_obj is None
                          else f"lane {file.stem} has no {profile!r} profile")
                checks.append(ProfileCheck(profile, file.stem, _relative(file), FAILED,
                                           f"parameter file for nothing runnable: {reason}"))
    return checks


def attr_checks(flake: str | None = None) -> list[ProfileCheck]:
    """`nix eval` of every lane's ultracloud flake attributes (flake: the lane's `flake` parameter)."""
    from ucnb import lanes
    from ucnb.runner import execute as runner

    nix = shutil.which("nix")
    checks: list[ProfileCheck] = []
    for lane in lanes.all_lanes().values():
        if "ultracloud" not in lane.profiles or not lane.ultracloud_attrs:
            continue
        try:
            _, params = runner.prepare(lane.name, "ultracloud", [], [])
            lane_flake = flake or str(getattr(params, "flake", "."))
        except UcnbError as exc:  # already a failed parameter check; the attrs cannot be located
            lane_flake = flake or "."
            reason = f"flake path unknown: {exc}"
            checks += [ProfileCheck("ultracloud", lane.name, f"{lane_flake}#{a}", FAILED, reason)
                       for a in lane.ultracloud_attrs]
            continue
        for attr in lane.ultracloud_attrs:
            what = f"nix eval {lane_flake}#{attr}"
            if nix is None:
                checks.append(ProfileCheck("ultracloud", lane.name, what, NOT_EVALUATED, NIX_MISSING))
                continue
            checks.append(_nix_eval(nix, lane.name, lane_flake, attr, what))
    return checks


def _nix_eval(nix: str, lane: str, flake: str, attr: str, what: str) -> ProfileCheck:
    try:
        done = subprocess.run([nix, "eval", "--raw", f"{flake}#{attr}"], capture_output=True, text=True,
                              cwd=paths.project_root(), timeout=NIX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return ProfileCheck("ultracloud", lane, what, FAILED, f"did not finish in {NIX_TIMEOUT_S}s")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return ProfileCheck("ultracloud", lane, what, FAILED, tail[0])
    return ProfileCheck("ultracloud", lane, what, PASSED, done.stdout.strip()[:200])


def check_profiles(flake: str | None = None) -> list[ProfileCheck]:
    """Every check of the guard: parameter files first, then the ultracloud attributes."""
    return parameter_checks() + attr_checks(flake)


def summary(checks: list[ProfileCheck]) -> str:
    counts = Counter(c.status for c in checks)
    text = (f"{counts[PASSED]} evaluated, {counts[FAILED]} failed, "
            f"{counts[NOT_EVALUATED]} not evaluated")
    return text + (f", {counts[NOT_BUILT]} lanes not built" if counts[NOT_BUILT] else "")
