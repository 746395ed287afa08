"""The ultracloud profile around the lanes, without a notebook: plans from the contract, the eval
guard through the product layer, the runner's refusals, lanes the lab cannot run, and the lab
side with no nix on PATH."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from ucnb import lanes
from ucnb.errors import InfrastructureError, ParameterError
from ucnb.guards import profiles as guard
from ucnb.product import commands, contract
from ucnb.product.commands import Command
from ucnb.product.steps import run_recorded
from ucnb.runner import execute as runner
from ucnb.runner import suites

from ..conftest import Cli
from ..contract_fixtures import contract_flake, copy_contract_flake, nix_offline, path_without_nix

__all__ = ["contract_flake", "nix_offline", "path_without_nix"]  # fixtures, imported for pytest
ROOT = Path(__file__).resolve().parents[2]
ULTRACLOUD_LANES = sorted(n for n, lane in lanes.all_lanes().items() if "ultracloud" in lane.profiles)
PRODUCT_ONLY = sorted(n for n, lane in lanes.all_lanes().items() if lane.lab_unavailable)


def command_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "cd ", "export "))]


def test_every_lane_has_the_contracts_commands() -> None:
    assert {"fresh-demo-vm-webapp", "fresh-matrix", "provider-vm-reality-proof",
            "core-control-plane-ops-proof"} <= set(PRODUCT_ONLY)
    for name in ULTRACLOUD_LANES:
        assert contract.has_lane(name), name


@pytest.mark.parametrize("lane", ULTRACLOUD_LANES)
def test_plan_prints_the_products_commands_for_every_lane(lane: str, tmp_path: Path, cli: Cli) -> None:
    missing = tmp_path / "no-checkout-here"
    done = cli.invoke("run", lane, "--profile", "ultracloud", "--plan",
                                    "-p", f"flake={missing}")
    assert done.exit_code == 0, done.output
    nix = commands.detect_nix() if commands.shutil.which("nix") else None
    planned = contract.plan(lane, flake=missing, check_flake=False)
    assert command_lines(done.output) == [c.display(nix) for c in planned]
    assert f"cd {missing}" in done.output
    assert "has no flake.nix: `ucnb run` would refuse it (exit 2)" in done.output
    assert all(f"(timeout {c.timeout_s:g}s)" in done.output for c in planned)
    assert "papermill" not in done.output


def test_lab_plan_keeps_printing_the_papermill_call(cli: Cli) -> None:
    done = cli.invoke("run", "single-node-quickstart", "--plan")
    assert done.exit_code == 0 and done.output.startswith("papermill notebooks/single-node-quickstart.ipynb")


def test_publishable_suite_plan_on_ultracloud_prints_the_contract_commands_in_order(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ULTRACLOUD_WORK_ROOT", raising=False)  # the product's own default: ./work
    done = cli.invoke("suite", "publishable", "--profile", "ultracloud", "--plan")
    assert done.exit_code == 0, done.output
    lines = command_lines(done.output.split("┘", 1)[1])  # after the table
    order = ["fresh-smoke", "fresh-demo-vm-webapp", "fresh-matrix", "chainfire-live-membership-proof"]
    assert [line.rsplit(" ", 1)[-1] for line in lines[:4]] == order
    assert all(line.startswith("nix run ") and "'./nix/test-cluster#cluster' --" in line
               for line in lines[:4])
    assert lines[4] == "./nix/test-cluster/run-publishable-kvm-suite.sh ./work/publishable-kvm-suite"
    assert "the contract's own command for suite publishable" in done.output


def test_a_lane_the_lab_cannot_run_is_not_runnable_in_a_lab_suite_with_its_reason() -> None:
    plan = suites.plan("publishable")
    entries = {e.name: e for e in plan.entries}
    for name in ("fresh-demo-vm-webapp", "fresh-matrix"):
        assert entries[name].status == suites.NOT_RUNNABLE
        assert lanes.get(name).lab_unavailable in entries[name].reason
    assert suites.lane_entry("fresh-matrix", "ultracloud").status == suites.PENDING
    assert suites.verdict_and_exit([entries["fresh-matrix"]]) == ("incomplete", 1)  # never a pass


def test_the_runner_refuses_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   path_without_nix: str) -> None:
    monkeypatch.setenv("UCNB_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(ParameterError, match=r"flake: .* does not exist"):
        runner.run_lane("fresh-smoke", "ultracloud", assignments=[f"flake={tmp_path}/; id"])
    with pytest.raises(ParameterError, match=r"has no flake\.nix"):
        runner.run_lane("fresh-smoke", "ultracloud", assignments=[f"flake={tmp_path}"])
    with pytest.raises(ParameterError, match="profile: lane fresh-matrix is not runnable on the lab profile"):
        runner.run_lane("fresh-matrix", "lab")
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    monkeypatch.setenv("PATH", path_without_nix)
    with pytest.raises(InfrastructureError, match="nix-bin") as caught:
        runner.run_lane("fresh-smoke", "ultracloud", assignments=[f"flake={tmp_path}"])
    assert caught.value.exit_code == 3
    monkeypatch.setenv(commands.TIMEOUT_CAP_VAR, "soon")
    with pytest.raises(ParameterError, match=commands.TIMEOUT_CAP_VAR):
        runner.run_lane("fresh-smoke", "ultracloud", assignments=[f"flake={tmp_path}"])
    assert not (tmp_path / "outputs").exists()


def test_a_relative_flake_is_from_where_ucnb_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, params = runner.prepare("fresh-smoke", "ultracloud", [], ["flake=checkout"])
    assert params.flake == str(tmp_path / "checkout")
    _, lab = runner.prepare("fresh-smoke", "lab", [], [])
    assert lab.flake == "."  # the lab never reads it


def test_the_cell_that_runs_the_product_may_take_its_commands_timeouts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lane = lanes.get("single-node-quickstart")
    values = {"profile": "ultracloud", "flake": "/nowhere"}
    monkeypatch.delenv(commands.TIMEOUT_CAP_VAR, raising=False)
    assert runner.cell_timeout_s(lane, values) == lane.cell_timeout_s + 600 + 14400 + 600 + 7200
    monkeypatch.setenv(commands.TIMEOUT_CAP_VAR, "5")
    assert runner.cell_timeout_s(lane, values) == lane.cell_timeout_s + 4 * 5
    assert runner.cell_timeout_s(lane, {"profile": "lab"}) == lane.cell_timeout_s


def test_the_kernel_gets_the_work_root_only_when_the_user_set_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lane = lanes.get("fresh-smoke")
    ex = runner.Execution(lane, {"profile": "ultracloud"}, "r1", tmp_path)
    monkeypatch.delenv("ULTRACLOUD_WORK_ROOT", raising=False)
    assert "ULTRACLOUD_WORK_ROOT" not in runner.kernel_environment(ex)  # the product's default holds
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "wr"))
    assert runner.kernel_environment(ex)["ULTRACLOUD_WORK_ROOT"] == str(tmp_path / "wr")


def test_timeouts_are_capped_not_raised(tmp_path: Path) -> None:
    (tmp_path / "flake.nix").write_text("{}\n")
    planned = contract.plan("single-node-quickstart", flake=tmp_path)
    assert [c.timeout_s for c in commands.cap_timeouts(planned, 700)] == [600, 700, 600, 700]
    assert commands.cap_timeouts(planned, None) == planned
    assert commands.timeout_cap({}) is None and commands.timeout_cap({commands.TIMEOUT_CAP_VAR: "2.5"}) == 2.5
    for bad in ("0", "-1", "x"):
        with pytest.raises(ParameterError, match="positive number"):
            commands.timeout_cap({commands.TIMEOUT_CAP_VAR: bad})


def test_a_process_a_killed_kernel_left_is_ended() -> None:
    run_id = f"t{os.getpid()}"
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, "UCNB_RUN_ID": run_id},
                            start_new_session=True)
    time.sleep(0.1)
    ended = commands.end_processes_of_run(run_id)
    assert proc.wait(timeout=10) == -15
    assert len(ended) == 1 and f"ended process {proc.pid} of run {run_id} (sleep 60)" in ended[0]
    assert commands.end_processes_of_run(run_id) == []


def test_the_evaluations_are_the_contracts_evals_and_builds(tmp_path: Path) -> None:
    (tmp_path / "flake.nix").write_text("{}\n")
    found = contract.evaluations(tmp_path)
    installables = [next(a for a in c.argv if "#" in a) for _, c in found]
    assert len(installables) == len(set(installables))
    assert ".#nixosConfigurations.node02.config.system.build.toplevel.drvPath" in installables
    assert ".#single-node-trial-vm.drvPath" in installables  # built by the quickstart: evaluated here
    assert ".#checks.x86_64-linux.deployer-vm-smoke.drvPath" in installables
    assert all(c.argv[:2] == ("nix", "eval") and c.nix for _, c in found)
    with pytest.raises(ParameterError, match="does not exist"):
        contract.evaluations(tmp_path / "nowhere")


def test_the_profile_guard_says_not_evaluated_on_the_ucnb_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    checks = guard.attr_checks()
    assert checks and {c.status for c in checks} == {guard.NOT_EVALUATED}
    assert all(c.detail == f"not evaluated: {ROOT} has no flake.nix" for c in checks)
    entry = suites.SuiteEntry("guard", "profiles")
    suites._guard_entry(entry, Path(os.environ.get("TMPDIR", "/tmp")) / f"guard-{os.getpid()}")
    assert entry.status == suites.PASSED, entry.reason
    not_runnable = [c for c in guard.parameter_checks() if c.status == guard.NOT_RUNNABLE]
    assert {c.lane for c in not_runnable} == set(PRODUCT_ONLY)
    assert all(c.profile == "lab" for c in not_runnable)


@pytest.mark.requires("nix with a writable store")
def test_the_profile_guard_evaluates_through_the_product_layer(contract_flake: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               path_without_nix: str) -> None:
    checks = guard.attr_checks(str(contract_flake))
    assert checks and {c.status for c in checks} == {guard.PASSED}
    assert all(c.detail.startswith("/nix/store/") and c.detail.endswith(".drv") for c in checks)
    broken = copy_contract_flake(tmp_path / "broken", fail=("node02",))
    failed = [c for c in guard.attr_checks(str(broken)) if c.status == guard.FAILED]
    assert [c.lane for c in failed] == ["ha-control-plane"] and "node02 fails to evaluate" in failed[0].detail
    monkeypatch.setenv("PATH", path_without_nix)
    checks = guard.attr_checks(str(contract_flake))
    assert {(c.status, c.detail) for c in checks} == {(guard.NOT_EVALUATED, "not evaluated: no nix")}


def test_the_lab_side_needs_no_nix(path_without_nix: str, cli: Cli) -> None:
    guarded = cli("guard", "profiles", timeout=120, PATH=path_without_nix)
    assert guarded.returncode == 0, guarded.stdout[-3000:] + guarded.stderr
    assert "0 failed" in guarded.stdout and "not evaluated" in guarded.stdout
    for args in (["run", "single-node-quickstart", "--plan"], ["suite", "portable", "--plan"],
                 ["run", "fresh-smoke", "--profile", "ultracloud", "--plan"]):
        done = cli(*args, timeout=120, PATH=path_without_nix)
        assert done.returncode == 0, (args, done.stderr)
    assert "no nix on this host: `ucnb run` would refuse to start (exit 3)" in done.stdout


@pytest.mark.requires("nix with a writable store")
def test_a_recorded_command_fails_when_the_contracts_marker_sequence_is_incomplete(
        tmp_path: Path, nix_offline: str) -> None:
    from ucnb.kernel.record import Recorder

    recorder = Recorder()
    script = "echo 'ULTRACLOUD_MARKER pre-install.boot.n1'; echo 'ULTRACLOUD_MARKER reboot.n1'"
    command = Command(("sh", "-c", script), tmp_path, name="install", needs_nix=False,
                      markers=("pre-install.boot", "install.disko.complete", "reboot"))
    outcome = run_recorded(recorder, command, tmp_path / "log", tmp_path / "product", echo=None)
    assert outcome.result.exit_status == 0
    assert outcome.failure and "not seen in order: install.disko.complete" in outcome.failure
    (step,) = recorder.rows["steps"]
    assert step.outcome == "failed" and "install.disko.complete" in step.detail
    checks = {c.name: c.ok for c in recorder.rows["checks"]}
    assert checks == {"install: exit status": True, "install: marker pre-install.boot": True,
                      "install: marker install.disko.complete": False, "install: marker reboot": True}
    assert [m.marker for m in recorder.rows["markers"]] == ["pre-install.boot.n1", "reboot.n1"]
