"""Environment overrides: precedence, CPU-derived defaults and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucnb.errors import ParameterError
from ucnb.overrides import OVERRIDES, WORK_ROOT_VAR, Overrides, host_cpus, resolve, resolve_overrides

ULTRA_JOBS, ULTRA_CORES, PHOTON_JOBS, PHOTON_CORES = OVERRIDES


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*OVERRIDES, WORK_ROOT_VAR):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("cpus", "jobs", "cores"),
                         [(1, 1, 1), (2, 1, 2), (8, 2, 4), (12, 3, 4), (64, 16, 4)])
def test_defaults_from_cpu_count(cpus: int, jobs: int, cores: int) -> None:
    resolved = resolve(cpus=cpus)
    assert (resolved.max_jobs, resolved.build_cores) == (jobs, cores)
    assert {source for _, source in sources(resolved).values()} == {f"default from {cpus} CPUs"}


def test_host_cpus_is_positive() -> None:
    assert host_cpus() >= 1
    assert resolve().max_jobs >= 1


def sources(resolved: Overrides) -> dict[str, tuple[str, str]]:
    return {r.name: (r.value, r.source) for r in resolved.variables}


def test_each_scope_its_own_name_first_then_its_equivalent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PHOTON_JOBS, "3")
    monkeypatch.setenv(PHOTON_CORES, "5")
    resolved = resolve(cpus=8)
    assert (resolved.max_jobs, resolved.build_cores) == (3, 5)  # the local scope takes the equivalent
    assert sources(resolved)[ULTRA_JOBS] == ("3", PHOTON_JOBS)
    monkeypatch.setenv(ULTRA_JOBS, "6")
    monkeypatch.setenv(ULTRA_CORES, "7")
    resolved = resolve(cpus=8)
    assert sources(resolved) == {ULTRA_JOBS: ("6", ULTRA_JOBS), ULTRA_CORES: ("7", ULTRA_CORES),
                                 PHOTON_JOBS: ("3", PHOTON_JOBS), PHOTON_CORES: ("5", PHOTON_CORES)}
    assert resolved.exported() == {ULTRA_JOBS: "6", ULTRA_CORES: "7", PHOTON_JOBS: "3", PHOTON_CORES: "5"}


def test_explicit_values_win_and_unknown_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PHOTON_JOBS, "4")
    assert resolve(cpus=16, explicit={PHOTON_JOBS: 9}).exported()[PHOTON_JOBS] == "9"
    assert resolve_overrides(environ={}, cpus=16) == {ULTRA_JOBS: "4", ULTRA_CORES: "4",
                                                      PHOTON_JOBS: "4", PHOTON_CORES: "4"}
    with pytest.raises(ParameterError, match="unknown NIX_MAX_JOBS"):
        resolve(explicit={"NIX_MAX_JOBS": 1})


def test_explicit_jobs_get_matching_default_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_JOBS, "4")
    resolved = resolve(cpus=16)
    assert (resolved.max_jobs, resolved.build_cores) == (4, 4)
    assert sources(resolved)[ULTRA_CORES][1] == "default from 16 CPUs"


def test_empty_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_JOBS, "")
    monkeypatch.setenv(PHOTON_JOBS, "2")
    assert sources(resolve(cpus=8))[ULTRA_JOBS][1] == PHOTON_JOBS


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


def test_environment_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ULTRA_CORES, "3")
    resolved = resolve(cpus=8)
    lines = resolved.environment_lines()
    assert "local_nix_max_jobs=2" in lines
    assert "local_nix_max_jobs_source=default from 8 CPUs" in lines
    assert f"local_nix_build_cores_source={ULTRA_CORES}" in lines
    assert f"cluster_nix_build_cores_source={ULTRA_CORES}" in lines  # the equivalent serves both
    assert "work_root_source=default ./work" in lines
