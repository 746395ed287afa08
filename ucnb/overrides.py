"""Environment overrides the product's wrappers honour (seed: "Hardware Bring-Up Pack").

The wrappers keep Nix builders local and derive max-jobs and per-build cores from the host CPU
count unless `ULTRACLOUD_LOCAL_NIX_MAX_JOBS` / `ULTRACLOUD_LOCAL_NIX_BUILD_CORES` (or the older
`PHOTON_CLUSTER_NIX_*` names) say otherwise; runtime state goes under `ULTRACLOUD_WORK_ROOT`.
`resolve()` gives each value with where it came from, for `environment.txt`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ucnb import paths
from ucnb.errors import ParameterError

WORK_ROOT_VAR = "ULTRACLOUD_WORK_ROOT"
# First name wins: the ULTRACLOUD_* spelling over the legacy PHOTON_CLUSTER_* one.
MAX_JOBS_VARS = ("ULTRACLOUD_LOCAL_NIX_MAX_JOBS", "PHOTON_CLUSTER_NIX_MAX_JOBS")
BUILD_CORES_VARS = ("ULTRACLOUD_LOCAL_NIX_BUILD_CORES", "PHOTON_CLUSTER_NIX_BUILD_CORES")

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
    nix_max_jobs: Resolved
    nix_build_cores: Resolved

    @property
    def max_jobs(self) -> int:
        """Nix `--max-jobs`."""
        return int(self.nix_max_jobs.value)

    @property
    def build_cores(self) -> int:
        """Nix `--cores` (per build)."""
        return int(self.nix_build_cores.value)

    def all(self) -> tuple[Resolved, ...]:
        """The settings in environment.txt order."""
        return (self.work_root, self.nix_max_jobs, self.nix_build_cores)

    def environment_lines(self) -> list[str]:
        """`name=value` plus `name_source=...` lines, the `key=value` style of environment.txt."""
        return [line for r in self.all() for line in (f"{r.name}={r.value}", f"{r.name}_source={r.source}")]

    def nix_args(self) -> list[str]:
        """Arguments that keep builds on this host with the resolved parallelism."""
        return ["--option", "builders", "",
                "--max-jobs", str(self.max_jobs), "--cores", str(self.build_cores)]


def host_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine total, under cgroups/taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _from_env(names: tuple[str, ...]) -> tuple[int, str] | None:
    """The first set (non-empty) variable of `names` as a positive integer, with its name."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ParameterError(f"{name}={raw!r} is not an integer") from None
        if value < 1:
            raise ParameterError(f"{name}={value} must be at least 1")
        return value, name
    return None


def resolve(cpus: int | None = None) -> Overrides:
    """Resolve the overrides from the environment, defaulting from `cpus` (default: `host_cpus()`).

    Defaults split the CPUs between parallel builds and cores per build: max-jobs is
    cpus // CORES_PER_JOB (at least 1) and cores is cpus // max-jobs, so jobs x cores ~ cpus.
    An explicit max-jobs alone still gets matching cores.
    """
    cpus = cpus or host_cpus()
    default = f"default from {cpus} CPUs"

    jobs, jobs_source = _from_env(MAX_JOBS_VARS) or (max(1, cpus // CORES_PER_JOB), default)
    cores, cores_source = _from_env(BUILD_CORES_VARS) or (max(1, cpus // jobs), default)

    root_source = WORK_ROOT_VAR if os.environ.get(WORK_ROOT_VAR) else "default ./work"
    return Overrides(
        work_root=Resolved("work_root", str(paths.work_root()), root_source),
        nix_max_jobs=Resolved("local_nix_max_jobs", str(jobs), jobs_source),
        nix_build_cores=Resolved("local_nix_build_cores", str(cores), cores_source),
    )
