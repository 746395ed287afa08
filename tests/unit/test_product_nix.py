"""Real nix (offline) against the contract flake: every lane's plan runs, and every failure says why."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from ucnb.errors import LaneFailure
from ucnb.kernel.record import Recorder
from ucnb.markers import check_sequence
from ucnb.product import commands, contract
from ucnb.product.commands import Command, CommandResult
from ucnb.product.ingest import ingest_result

from ..contract_fixtures import copy_contract_flake

pytestmark = pytest.mark.requires("nix with a writable store")

LOCAL = {"ULTRACLOUD_LOCAL_NIX_MAX_JOBS": "1", "ULTRACLOUD_LOCAL_NIX_BUILD_CORES": "2",
         "PHOTON_CLUSTER_NIX_MAX_JOBS": "3", "PHOTON_CLUSTER_NIX_BUILD_CORES": "1"}


def every_plan() -> list[tuple[str, dict[str, object]]]:
    plans: list[tuple[str, dict[str, object]]] = []
    loaded = contract.load_contract()
    for name, entry in loaded.lanes.items():
        for action in entry.actions or [None]:
            if action == "ssh":
                continue  # interactive: planned, never run
            plans.append((name, {"action": action} if action else {}))
    plans += [(f"suite:{name}", {}) for name in loaded.suites]
    return plans


def plan_of(name: str, flake: Path, params: dict[str, object] | None = None, **kw: object) -> list[Command]:
    if name.startswith("suite:"):
        return contract.plan_suite(name[6:], flake=flake, params=params, **kw)  # type: ignore[arg-type]
    return contract.plan(name, flake=flake, params=params, **kw)  # type: ignore[arg-type]


def group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


@pytest.mark.parametrize(("name", "params"), every_plan(), ids=lambda v: v if isinstance(v, str) else
                         str(v.get("action", "")) if isinstance(v, dict) else "")
def test_every_lane_plan_runs_and_passes(name: str, params: dict[str, object], contract_flake: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_CONTRACT_HW_TRANSPORT", "redfish")
    recorder = Recorder(tmp_path / "events.jsonl")
    steps = plan_of(name, contract_flake, params, timeout_s=60)
    log = tmp_path / "logs" / "product.log"
    results = commands.run_steps(recorder, steps, log, echo=None, overrides=LOCAL)
    assert [r.exit_status for r in results] == [0] * len(steps)
    assert [row.outcome for row in recorder.rows["steps"]] == ["passed"] * len(steps)
    for result in results:
        command = result.command
        if command.proof_folder is not None:
            found = ingest_result(result, tmp_path / "proof" / "product" / command.proof_folder)
            assert found.passed, found.problems
            names = {row.file for row in found.files}
            assert set(command.expected_files) <= names
            assert "result.json" in names or not command.result_json
            markers = result.markers + [m.marker for m in found.markers]
        else:
            markers = result.markers
        if command.markers:
            checks = check_sequence(command.markers, markers)
            assert all(c.ok for c in checks), [c.expected for c in checks if not c.ok]
            assert len(recorder.rows["markers"]) >= len(command.markers)


def test_the_quickstart_records_nix_flags_keep_vm_and_the_trial_vm(contract_flake: Path,
                                                                    tmp_path: Path) -> None:
    lines: list[str] = []
    steps = contract.plan("single-node-quickstart", flake=contract_flake, params={"keep_vm": True})
    results = [commands.run(c, tmp_path / "q.log", lambda line: lines.append(line.text), overrides=LOCAL)
               for c in steps]
    nix = commands.detect_nix()
    assert results[0].argv == ["nix", "flake", "show", "--extra-experimental-features", "nix-command flakes",
                               "."]
    assert results[0].matched and results[0].nix_version == nix.version_text
    assert results[1].argv[2:8] == ["--extra-experimental-features", "nix-command flakes", "--max-jobs", "1",
                                    "--cores", "2"]
    assert (contract_flake / "result" / "README").exists()
    assert results[2].tail[-1].startswith("/nix/store/") and results[2].tail[-1].endswith(".drv")
    assert any("keeping the VM alive" in line for line in lines)
    log = (tmp_path / "q.log").read_text()
    assert log.count("$ cd ") == 4 and "ULTRACLOUD_QUICKSTART_KEEP_VM=1 nix run" in log


def test_overrides_are_exported_to_the_product(contract_flake: Path, tmp_path: Path) -> None:
    (step,) = contract.plan("durability-proof", flake=contract_flake)
    result = commands.run(step, overrides=LOCAL)
    assert result.argv[4:8] == ["--max-jobs", "3", "--cores", "1"]  # a test-cluster command: PHOTON_*
    found = ingest_result(result, tmp_path / "product")
    assert found.passed, found.problems
    env = found.environment
    assert env["local_nix_max_jobs"] == "1" and env["cluster_nix_max_jobs"] == "3"
    assert env["execution_model"] and env["vm_accelerator_mode"]
    rows = {r.file: r for r in found.files}
    assert {"result.json", "environment.txt", "deployer-post-restart-list.json"} <= set(rows)
    assert (tmp_path / "product" / "result.json").read_text().startswith('{"success": true')


def test_the_work_root_override_is_honoured(contract_flake: Path, tmp_path: Path) -> None:
    steps = contract.plan("core-control-plane-ops-proof", flake=contract_flake, work_root=tmp_path / "wr")
    result = commands.run(steps[0])
    assert (tmp_path / "wr" / "core-control-plane-ops-proof" / "latest" / "result.json").exists()
    assert not (contract_flake / "work").exists()
    assert ingest_result(result, tmp_path / "p").passed


def test_without_the_inserted_flag_nix_refuses_and_the_error_says_so(
        contract_flake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIX_CONFIG", commands.offline_nix_config(tmp_path / "cfg", experimental=False))
    (step,) = contract.plan("deployer-vm-smoke", flake=contract_flake)
    assert commands.run(step).exit_status == 0  # ucnb's flag is enough
    bare = Command(step.argv, contract_flake, needs_nix=True, nix=False)
    with pytest.raises(LaneFailure) as caught:
        commands.run(bare)
    assert "experimental Nix feature" in str(caught.value) and "nix build '.#checks" in str(caught.value)


def test_a_non_zero_exit_fails_naming_the_command(contract_flake: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_CONTRACT_FAIL", "fresh-smoke")
    (step,) = contract.plan("fresh-smoke", flake=contract_flake)
    with pytest.raises(LaneFailure) as caught:
        commands.run(step)
    message = str(caught.value)
    assert "exited 1" in message and "'./nix/test-cluster#cluster' -- fresh-smoke" in message
    assert "failing (UCNB_CONTRACT_FAIL)" in message


@pytest.mark.parametrize(("knob", "exit_status", "says"), [
    ("UCNB_CONTRACT_FAIL", 1, "the product exited 1 and result.json says success: false"),
    ("UCNB_CONTRACT_SUCCESS_FALSE", 0, "the product exited 0 but result.json says success: false"),
    ("UCNB_CONTRACT_NO_RESULT", 0, "the product exited 0 but wrote no result.json"),
])
def test_the_verdict_is_the_products(knob: str, exit_status: int, says: str, contract_flake: Path,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(knob, "rollout-soak")
    (step,) = contract.plan("rollout-soak", flake=contract_flake)
    result = commands.run(step, check=False)
    assert result.exit_status == exit_status and result.passed == (exit_status == 0)
    found = ingest_result(result, tmp_path / "product")
    assert not found.passed and any(says in p for p in found.problems), found.problems


def test_a_failed_build_and_a_failed_eval_say_why(tmp_path: Path, nix_offline: str) -> None:
    flake = copy_contract_flake(tmp_path / "flake", fail=("deployer-vm-smoke", "node02"))
    with pytest.raises(LaneFailure, match="fail/deployer-vm-smoke is present"):
        commands.run(contract.plan("deployer-vm-smoke", flake=flake)[0])
    evals = contract.plan("ha-control-plane", flake=flake)
    assert commands.run(evals[0]).passed
    with pytest.raises(LaneFailure, match="node02 fails to evaluate"):
        commands.run(evals[1])


def test_a_failure_marker_ends_the_command_at_once(contract_flake: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_CONTRACT_FAIL_MARKER", "baremetal-iso")
    recorder = Recorder()
    step = contract.plan("baremetal-iso", flake=contract_flake)[-1]
    started = time.time()
    with pytest.raises(LaneFailure) as caught:
        commands.run(step, tmp_path / "log", commands.recorder_callback(recorder, echo=None), kill_grace_s=2)
    assert time.time() - started < 10  # the program sleeps 300 s after the marker
    message = str(caught.value)
    assert "failure marker install.disko.failed.contract" in message and "about to fail" in message
    assert [r.marker for r in recorder.rows["markers"]] == ["contract-flake.start.baremetal-iso",
                                                            "pre-install.boot.contract",
                                                            "install.disko.failed.contract"]
    result = commands.run(step, check=False, kill_grace_s=2)
    assert result.exit_status is None and result.failure_marker is not None and result.pid is not None
    assert group_alive(result.pid) == []


def test_a_hanging_command_ends_at_its_timeout_with_nothing_left(contract_flake: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_CONTRACT_HANG", "fresh-matrix")
    (step,) = contract.plan("fresh-matrix", flake=contract_flake, timeout_s=1.5)
    result: CommandResult = commands.run(step, tmp_path / "log", check=False, kill_grace_s=2)
    assert result.timed_out and result.exit_status is None and 1.5 <= result.duration < 6
    assert "did not finish within its timeout of 1.5s" in (result.failure or "")
    assert "hanging (UCNB_CONTRACT_HANG)" in (result.failure or "")
    assert result.pid is not None and group_alive(result.pid) == []
    with pytest.raises(LaneFailure, match="timeout"):
        commands.run(step, check=True, kill_grace_s=2)


def test_an_interrupt_kills_the_group_and_propagates(contract_flake: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCNB_CONTRACT_HANG", "fresh-smoke")
    (step,) = contract.plan("fresh-smoke", flake=contract_flake)
    groups: set[int] = set()

    def interrupt(line: commands.Line) -> None:
        time.sleep(0.2)  # let the program start its sleep
        groups.update(os.getpgid(p.pid) for p in psutil.Process().children(recursive=True))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        commands.run(step, on_line=interrupt, kill_grace_s=2)
    assert groups and os.getpgid(0) not in groups
    assert all(group_alive(g) == [] for g in groups)
