"""Environment overrides the product's wrappers honour (seed: "Hardware Bring-Up Pack").

The wrappers keep Nix builders local and derive max-jobs and per-build cores from the host CPU
count unless `ULTRACLOUD_LOCAL_NIX_MAX_JOBS` / `ULTRACLOUD_LOCAL_NIX_BUILD_CORES` (the flake's own
builds) or `PHOTON_CLUSTER_NIX_MAX_JOBS` / `PHOTON_CLUSTER_NIX_BUILD_CORES` (the
`./nix/test-cluster` harness) say otherwise; runtime state goes under `ULTRACLOUD_WORK_ROOT`.

One implementation for both users: `environment.txt` (each value with where it came from) and the
product-command layer (`exported()`: the four variables, exported to every product command and
turned into `--max-jobs`/`--cores` of `nix build`/`nix run`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ucnb import paths
from ucnb.errors import ParameterError

WORK_ROOT_VAR = "ULTRACLOUD_WORK_ROOT"
LOCAL_OVERRIDES = ("ULTRACLOUD_LOCAL_NIX_MAX_JOBS", "ULTRACLOUD_LOCAL_NIX_BUILD_CORES")
CLUSTER_OVERRIDES = ("PHOTON_CLUSTER_NIX_MAX_JOBS", "PHOTON_CLUSTER_NIX_BUILD_CORES")
OVERRIDES = LOCAL_OVERRIDES + CLUSTER_OVERRIDES
# Each variable's equivalent: LANES.md calls the PHOTON_CLUSTER_* names the equivalents of the
# ULTRACLOUD_LOCAL_* ones, so a value set under either name serves both scopes unless the other
# scope sets its own.
EQUIVALENT = dict(zip(OVERRIDES, CLUSTER_OVERRIDES + LOCAL_OVERRIDES, strict=True))
# environment.txt keys, in its key=value style.
KEYS = {"ULTRACLOUD_LOCAL_NIX_MAX_JOBS": "local_nix_max_jobs",
        "ULTRACLOUD_LOCAL_NIX_BUILD_CORES": "local_nix_build_cores",
        "PHOTON_CLUSTER_NIX_MAX_JOBS": "cluster_nix_max_jobs",
        "PHOTON_CLUSTER_NIX_BUILD_CORES": "cluster_nix_build_cores"}

# Cores one derivation build gets by default: parallel builds beat wide ones up to about here.
CORES_PER_JOB = 4


@dataclass(frozen=True)
class Resolved:
    """One resolved setting and where it came from (a variable name, or how it was defaulted)."""

    name: str
    value: str
    source: str


@dataclass(frozen=True)
class Overrides:
    """Everything the wrappers take from the environment."""

    work_root: Resolved
    variables: tuple[Resolved, ...]     # one per OVERRIDES name, in that order (name = the variable)

    def value(self, variable: str) -> str:
        return next(r.value for r in self.variables if r.name == variable)

    @property
    def max_jobs(self) -> int:
        """Nix `--max-jobs` of the flake's own builds."""
        return int(self.value(LOCAL_OVERRIDES[0]))

    @property
    def build_cores(self) -> int:
        """Nix `--cores` (per build) of the flake's own builds."""
        return int(self.value(LOCAL_OVERRIDES[1]))

    def exported(self) -> dict[str, str]:
        """The four variables as the product's commands get them."""
        return {r.name: r.value for r in self.variables}

    def environment_lines(self) -> list[str]:
        """`key=value` plus `key_source=...` lines, the style of environment.txt."""
        rows = [Resolved("work_root", self.work_root.value, self.work_root.source),
                *(Resolved(KEYS[r.name], r.value, r.source) for r in self.variables)]
        return [line for r in rows for line in (f"{r.name}={r.value}", f"{r.name}_source={r.source}")]


def host_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine total, under cgroups/taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ParameterError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ParameterError(f"{name}={value} must be at least 1")
    return value


def _given(name: str, explicit: Mapping[str, str | int], environ: Mapping[str, str]
           ) -> tuple[int, str] | None:
    """The variable's value (explicit, else the environment, else its equivalent's), with its source."""
    if name in explicit:
        return _positive(name, str(explicit[name])), f"{name} (given)"
    for candidate in (name, EQUIVALENT[name]):
        raw = environ.get(candidate, "").strip()
        if raw:  # an empty value counts as unset
            return _positive(candidate, raw), candidate
    return None


def resolve(cpus: int | None = None, explicit: Mapping[str, str | int] | None = None,
            environ: Mapping[str, str] | None = None) -> Overrides:
    """Resolve the overrides: `explicit` values, else the environment (a variable, else its
    equivalent), else defaults from `cpus` (default: `host_cpus()`).

    Defaults split the CPUs between parallel builds and cores per build: max-jobs is
    cpus // CORES_PER_JOB (at least 1) and cores is cpus // max-jobs, so jobs x cores ~ cpus.
    An explicit max-jobs alone still gets matching cores.
    """
    environ = os.environ if environ is None else environ
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(OVERRIDES))
    if unknown:
        raise ParameterError(f"overrides: unknown {', '.join(unknown)} (known: {', '.join(OVERRIDES)})")
    cpus = cpus or host_cpus()
    default = f"default from {cpus} CPUs"
    variables: list[Resolved] = []
    for jobs_var, cores_var in (LOCAL_OVERRIDES, CLUSTER_OVERRIDES):
        jobs, jobs_source = _given(jobs_var, explicit, environ) or (max(1, cpus // CORES_PER_JOB), default)
        cores, cores_source = _given(cores_var, explicit, environ) or (max(1, cpus // jobs), default)
        variables += [Resolved(jobs_var, str(jobs), jobs_source),
                      Resolved(cores_var, str(cores), cores_source)]
    # ucnb's own work root (paths.work_root) always comes from the process environment.
    root_source = WORK_ROOT_VAR if os.environ.get(WORK_ROOT_VAR) else "default ./work"
    return Overrides(Resolved("work_root", str(paths.work_root()), root_source), tuple(variables))


def resolve_overrides(explicit: Mapping[str, str | int] | None = None,
                      environ: Mapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """The four variables the product's commands get (see `resolve`)."""
    return resolve(cpus, explicit, environ).exported()
