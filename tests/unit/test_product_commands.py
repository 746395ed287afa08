"""The product-command layer without the product: argv only, flake validation, nix flags."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from ucnb.errors import InfrastructureError, LaneFailure, ParameterError
from ucnb.product import commands, contract
from ucnb.product.commands import Command, NixInfo

NIX_28 = NixInfo("/usr/bin/nix", "nix (Nix) 2.8.0", (2, 8, 0))
NIX_224 = NixInfo("/usr/bin/nix", "nix (Nix) 2.24.9", (2, 24, 9))
OVERRIDES = {"ULTRACLOUD_LOCAL_NIX_MAX_JOBS": "3", "ULTRACLOUD_LOCAL_NIX_BUILD_CORES": "5",
             "PHOTON_CLUSTER_NIX_MAX_JOBS": "7", "PHOTON_CLUSTER_NIX_BUILD_CORES": "11"}


@pytest.fixture()
def flake(tmp_path: Path) -> Path:
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    return tmp_path


def test_a_command_is_an_argv_list_never_a_string(flake: Path) -> None:
    with pytest.raises(ParameterError, match="argv list"):
        Command(argv="nix build .#x", cwd=flake)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        Command(argv=(), cwd=flake)
    assert Command(argv=["nix", "build"], cwd=flake).argv == ("nix", "build")  # type: ignore[arg-type]


def test_flake_must_be_an_existing_checkout_and_nothing_runs_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.chdir(tmp_path)
    for bad in (f".; touch {pwned}", f"$(touch {pwned})", "github:ultracloud/ultracloud", ""):
        with pytest.raises(ParameterError, match="flake"):
            contract.plan("single-node-quickstart", flake=bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="not a directory"):
        commands.resolve_flake(tmp_path / "file")
    with pytest.raises(ParameterError, match=r"no flake\.nix"):
        commands.resolve_flake(tmp_path)
    assert not pwned.exists()


def test_flake_path_is_resolved_and_tilde_expanded(flake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(flake.parent))
    assert commands.resolve_flake(f"~/{flake.name}") == flake.resolve()
    assert commands.resolve_flake(flake / ".." / flake.name) == flake.resolve()


def test_nix_gets_the_feature_flags_after_the_subcommand(flake: Path) -> None:
    build = Command(("nix", "build", ".#single-node-trial-vm"), flake, nix=True)
    assert build.final_argv(NIX_28, OVERRIDES) == [
        "nix", "build", "--extra-experimental-features", "nix-command flakes", "--max-jobs", "3",
        "--cores", "5", ".#single-node-trial-vm"]
    show = Command(("nix", "flake", "show", ".", "--all-systems"), flake, nix=True)
    assert show.final_argv(NIX_224, OVERRIDES) == [
        "nix", "flake", "show", "--extra-experimental-features", "nix-command flakes", ".", "--all-systems"]
    evaluate = Command(("nix", "eval", "--no-eval-cache", ".#x", "--raw"), flake, nix=True)
    assert evaluate.final_argv(NIX_28, OVERRIDES)[:4] == ["nix", "eval", "--extra-experimental-features",
                                                         "nix-command flakes"]
    assert "--max-jobs" not in evaluate.final_argv(NIX_28, OVERRIDES)
    wrapper = Command(("./nix/test-cluster/work-root-budget.sh", "status"), flake)
    assert wrapper.final_argv(NIX_28, OVERRIDES) == ["./nix/test-cluster/work-root-budget.sh", "status"]


def test_overrides_become_max_jobs_and_cores_and_are_exported(flake: Path) -> None:
    run = Command(("nix", "run", "./nix/test-cluster#cluster", "--", "fresh-smoke", "--max-jobs"), flake,
                  nix=True, cluster=True, env={"X": "1"})
    argv = run.final_argv(NIX_28, OVERRIDES)
    assert argv == ["nix", "run", "--extra-experimental-features", "nix-command flakes", "--max-jobs", "7",
                    "--cores", "11", "./nix/test-cluster#cluster", "--", "fresh-smoke", "--max-jobs"]
    env = run.environment(OVERRIDES, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", **OVERRIDES, "X": "1"}


def test_overrides_are_the_one_implementation_of_ucnb_overrides() -> None:
    from ucnb import overrides

    assert commands.resolve_overrides is overrides.resolve_overrides  # environment.txt reads the same
    values = commands.resolve_overrides(environ={}, cpus=16)
    assert (values["ULTRACLOUD_LOCAL_NIX_MAX_JOBS"], values["ULTRACLOUD_LOCAL_NIX_BUILD_CORES"]) == ("4", "4")
    assert commands.resolve_overrides(environ={}, cpus=1)["PHOTON_CLUSTER_NIX_BUILD_CORES"] == "1"
    env = {"PHOTON_CLUSTER_NIX_MAX_JOBS": "4"}
    assert commands.resolve_overrides(environ=env, cpus=16)["PHOTON_CLUSTER_NIX_MAX_JOBS"] == "4"
    assert commands.resolve_overrides({"PHOTON_CLUSTER_NIX_MAX_JOBS": 9}, environ=env)[
        "PHOTON_CLUSTER_NIX_MAX_JOBS"] == "9"
    with pytest.raises(ParameterError, match="ULTRACLOUD_LOCAL_NIX_MAX_JOBS='lots' is not an integer"):
        commands.resolve_overrides(environ={"ULTRACLOUD_LOCAL_NIX_MAX_JOBS": "lots"})
    with pytest.raises(ParameterError, match="unknown"):
        commands.resolve_overrides({"NIX_MAX_JOBS": 1})


def test_nix_28_has_no_all_systems_flag(flake: Path) -> None:
    show = Command(("nix", "flake", "show", ".", "--all-systems"), flake, nix=True)
    assert "--all-systems" not in show.final_argv(NIX_28, OVERRIDES)
    assert "--all-systems" in show.final_argv(NIX_224, OVERRIDES)
    assert "--all-systems" in show.final_argv(None, OVERRIDES)  # version unknown (a plan): as written
    run = Command(("nix", "run", ".#x", "--", "--all-systems"), flake, nix=True)
    assert run.final_argv(NIX_28, OVERRIDES)[-1] == "--all-systems"


def test_run_starts_an_argv_without_a_shell_in_its_own_session(
        flake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []
    real = subprocess.Popen

    def recording(args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        return real(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    lines: list[str] = []
    result = commands.run(Command(("/bin/echo", "a; touch nope", "$(id)"), flake, needs_nix=False),
                          tmp_path / "log", lambda line: lines.append(line.text))
    (args, kwargs), = seen
    assert args == ["/bin/echo", "a; touch nope", "$(id)"] and not kwargs.get("shell")
    assert kwargs["start_new_session"] is True and kwargs["cwd"] == flake
    assert lines == ["a; touch nope $(id)"] and result.exit_status == 0 and result.passed
    assert not (flake / "nope").exists()
    log = (tmp_path / "log").read_text()
    assert "/bin/echo 'a; touch nope' '$(id)'" in log and "exit 0" in log


def test_non_zero_exit_names_the_command_and_its_last_lines(flake: Path, tmp_path: Path) -> None:
    command = Command(("/bin/sh", "-c", "echo first; echo 'error: it broke' >&2; exit 3"), flake,
                      needs_nix=False)
    with pytest.raises(LaneFailure) as caught:
        commands.run(command, tmp_path / "log")
    message = str(caught.value)
    assert "exited 3" in message and "/bin/sh -c" in message and "error: it broke" in message
    result = commands.run(command, tmp_path / "log", check=False)
    assert result.exit_status == 3 and result.tail == ["first", "error: it broke"]


def test_expected_output_is_checked_like_the_seeds_rg(flake: Path) -> None:
    command = Command(("/bin/echo", "packages: nothing"), flake, needs_nix=False,
                      expect_output="quickstart|single-node")
    with pytest.raises(LaneFailure, match="no output line matched"):
        commands.run(command)


def test_a_missing_product_script_is_a_failure_naming_it(flake: Path) -> None:
    command = Command(("./nix/test-cluster/work-root-budget.sh", "status"), flake, needs_nix=False)
    with pytest.raises(LaneFailure, match=r"work-root-budget\.sh does not exist"):
        commands.run(command)


def test_no_nix_is_an_infrastructure_error_naming_the_install(
        flake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InfrastructureError) as caught:
        commands.run(Command(("nix", "build", ".#x"), flake, nix=True))
    assert caught.value.exit_code == 3
    assert "apt-get install" in str(caught.value) and "nix-bin" in str(caught.value)


def test_nix_version_is_detected_once_per_binary(tmp_path: Path) -> None:
    fake = tmp_path / "nix"
    counter = tmp_path / "count"
    fake.write_text(f"#!/bin/sh\necho x >> {counter}\necho 'nix (Nix) 2.8.0'\n")
    fake.chmod(0o755)
    first, second = commands.detect_nix(str(fake)), commands.detect_nix(str(fake))
    assert first == second and first.version == (2, 8, 0) and not first.has_all_systems
    assert counter.read_text().count("x") == 1
    assert first.environment()["nix_version"] == "2.8.0"


def test_offline_nix_config_reaches_for_nothing(tmp_path: Path) -> None:
    text = commands.offline_nix_config(tmp_path)
    assert "substituters =\n" in text and "sandbox = false" in text
    assert f"flake-registry = {tmp_path / 'registry.json'}" in text
    assert (tmp_path / "registry.json").read_text() == '{"flakes": [], "version": 2}'
    assert "experimental" not in commands.offline_nix_config(tmp_path, experimental=False)


def test_interactive_commands_are_planned_never_run(flake: Path) -> None:
    with pytest.raises(ParameterError, match="terminal"):
        commands.run(Command(("nix", "run", ".#x"), flake, nix=True, interactive=True))


def test_environment_inherits_os_environ(flake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_SOME_SETTING", "kept")
    env = Command(("true",), flake, env={"ULTRACLOUD_QUICKSTART_KEEP_VM": "1"}).environment(OVERRIDES)
    assert env["UCNB_SOME_SETTING"] == "kept" and env["ULTRACLOUD_QUICKSTART_KEEP_VM"] == "1"
    assert env["PATH"] == os.environ["PATH"]


def test_a_child_left_holding_the_output_is_left_alone(flake: Path, tmp_path: Path) -> None:
    """A command that exits leaving a child on its output (a kept VM) is done; the child is not killed."""
    command = Command(("/bin/sh", "-c", "sleep 30 & echo $! > child.pid; echo started"), flake,
                      needs_nix=False, timeout_s=10)
    result = commands.run(command, tmp_path / "log", exit_grace_s=0.3)
    child = int((flake / "child.pid").read_text())
    try:
        assert result.exit_status == 0 and result.lingering and result.duration < 5
        assert os.path.exists(f"/proc/{child}")
    finally:
        os.kill(child, 9)
