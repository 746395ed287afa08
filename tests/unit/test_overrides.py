"""Environment overrides: precedence, CPU-derived defaults and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucnb.errors import ParameterError
from ucnb.overrides import BUILD_CORES_VARS, MAX_JOBS_VARS, WORK_ROOT_VAR, host_cpus, resolve

ULTRA_JOBS, PHOTON_JOBS = MAX_JOBS_VARS
ULTRA_CORES, PHOTON_CORES = BUILD_CORES_VARS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*MAX_JOBS_VARS, *BUILD_CORES_VARS, WORK_ROOT_VAR):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("cpus", "jobs", "cores"),
                         [(1, 1, 1), (2, 1, 2), (8, 2, 4), (12, 3, 4), (64, 16, 4)])
def test_defaults_from_cpu_count(cpus: int, jobs: int, cores: int) -> None:
    resolved = resolve(cpus=cpus)
    assert (resolved.max_jobs, resolved.build_cores) == (jobs, cores)
    assert resolved.nix_max_jobs.source == resolved.nix_build_cores.source == f"default from {cpus} CPUs"


def test_host_cpus_is_positive() -> None:
    assert host_cpus() >= 1
    assert resolve().max_jobs >= 1


def test_ultracloud_wins_over_photon_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PHOTON_JOBS, "3")
    monkeypatch.setenv(PHOTON_CORES, "5")
    resolved = resolve(cpus=8)
    assert (resolved.max_jobs, resolved.nix_max_jobs.source) == (3, PHOTON_JOBS)
    assert (resolved.build_cores, resolved.nix_build_cores.source) == (5, PHOTON_CORES)
    monkeypatch.setenv(ULTRA_JOBS, "6")
    monkeypatch.setenv(ULTRA_CORES, "7")
    resolved = resolve(cpus=8)
    assert (resolved.max_jobs, resolved.nix_max_jobs.source) == (6, ULTRA_JOBS)
    assert (resolved.build_cores, resolved.nix_build_cores.source) == (7, ULTRA_CORES)


def test_explicit_jobs_get_matching_default_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_JOBS, "4")
    resolved = resolve(cpus=16)
    assert (resolved.max_jobs, resolved.build_cores) == (4, 4)
    assert resolved.nix_build_cores.source == "default from 16 CPUs"


def test_empty_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_JOBS, "")
    monkeypatch.setenv(PHOTON_JOBS, "2")
    assert resolve(cpus=8).nix_max_jobs.source == PHOTON_JOBS


@pytest.mark.parametrize("name", [ULTRA_JOBS, PHOTON_JOBS, ULTRA_CORES, PHOTON_CORES])
@pytest.mark.parametrize("value", ["abc", "2.5", "0", "-3"])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ParameterError, match=name):
        resolve(cpus=8)


def test_work_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve(cpus=2).work_root.source == "default ./work"
    monkeypatch.setenv(WORK_ROOT_VAR, str(tmp_path))
    root = resolve(cpus=2).work_root
    assert (root.value, root.source) == (str(tmp_path.resolve()), WORK_ROOT_VAR)


def test_environment_lines_and_nix_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_CORES, "3")
    resolved = resolve(cpus=8)
    lines = resolved.environment_lines()
    assert "local_nix_max_jobs=2" in lines
    assert "local_nix_max_jobs_source=default from 8 CPUs" in lines
    assert f"local_nix_build_cores_source={ULTRA_CORES}" in lines
    assert resolved.nix_args() == ["--option", "builders", "", "--max-jobs", "2", "--cores", "3"]
