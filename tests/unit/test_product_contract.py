"""The contract as data: every command of the seed, verbatim, and nothing else unflagged."""
# ruff: noqa: E501  (the seed's command lines are copied verbatim)

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from ucnb import profiles
from ucnb.errors import ParameterError
from ucnb.product import contract
from ucnb.product.commands import Command, NixInfo

from ..contract_fixtures import CONTRACT_FLAKE

# Every command line of the seed (seed/ultracloud-testing.txt), copied verbatim.
SEED = """
nix flake show . --all-systems | rg -n "quickstart|single-node|trial|container|oci"
nix build .#single-node-trial-vm
nix eval --no-eval-cache .#nixosConfigurations.single-node-quickstart.config.system.build.toplevel.drvPath --raw
nix run .#single-node-quickstart
ULTRACLOUD_QUICKSTART_KEEP_VM=1 nix run .#single-node-quickstart
nix eval --no-eval-cache .#nixosConfigurations.node01.config.system.build.toplevel.drvPath --raw
nix eval --no-eval-cache .#nixosConfigurations.node02.config.system.build.toplevel.drvPath --raw
nix eval --no-eval-cache .#nixosConfigurations.node03.config.system.build.toplevel.drvPath --raw
nix eval --no-eval-cache .#nixosConfigurations.netboot-control-plane.config.system.build.toplevel.drvPath --raw
nix eval --no-eval-cache .#nixosConfigurations.baremetal-qemu-control-plane.config.system.build.toplevel.drvPath --raw
nix eval --no-eval-cache .#nixosConfigurations.baremetal-qemu-worker.config.system.build.toplevel.drvPath --raw
nix run ./nix/test-cluster#cluster -- baremetal-iso
nix build .#checks.x86_64-linux.baremetal-iso-e2e
./result/bin/baremetal-iso-e2e ./work/baremetal-iso-e2e/latest
nix run ./nix/test-cluster#hardware-smoke -- preflight
nix run ./nix/test-cluster#hardware-smoke -- run
nix run ./nix/test-cluster#hardware-smoke -- capture
nix build .#checks.x86_64-linux.canonical-profile-eval-guards
nix build .#checks.x86_64-linux.canonical-profile-build-guards
nix build .#checks.x86_64-linux.portable-control-plane-regressions
nix run ./nix/test-cluster#cluster -- fresh-smoke
nix run ./nix/test-cluster#cluster -- fresh-demo-vm-webapp
nix run ./nix/test-cluster#cluster -- fresh-matrix
nix run ./nix/test-cluster#cluster -- chainfire-live-membership-proof
nix run ./nix/test-cluster#cluster -- provider-vm-reality-proof
nix run ./nix/test-cluster#cluster -- rollout-soak
./nix/test-cluster/run-publishable-kvm-suite.sh ./work/publishable-kvm-suite
./nix/test-cluster/run-supported-surface-final-proof.sh ./work/final-proofs/latest
nix build .#checks.x86_64-linux.deployer-vm-smoke
./nix/test-cluster/run-core-control-plane-ops-proof.sh ./work/core-control-plane-ops-proof/latest
./nix/test-cluster/work-root-budget.sh status
./nix/test-cluster/work-root-budget.sh enforce
./nix/test-cluster/work-root-budget.sh cleanup-advice
./nix/test-cluster/work-root-budget.sh prune-proof-logs 2
nix run ./nix/test-cluster#cluster -- fresh-bench-storage
nix run ./nix/test-cluster#cluster -- status
nix run ./nix/test-cluster#cluster -- logs node01
nix run ./nix/test-cluster#cluster -- ssh node04
nix run ./nix/test-cluster#cluster -- demo-vm-webapp
nix run ./nix/test-cluster#cluster -- serve-vm-webapp
nix run ./nix/test-cluster#cluster -- matrix
nix run ./nix/test-cluster#cluster -- bench-storage
nix run ./nix/test-cluster#cluster -- stop
nix run ./nix/test-cluster#cluster -- clean
""".strip().splitlines()
SEED_FILE = Path("/work/shared/seed/ultracloud-testing.txt")
# Example parameters the seed's lines use (ssh node04, not the default node01).
EXAMPLES = {("operations", "ssh"): {"node": "node04"}}


@pytest.fixture()
def flake(tmp_path: Path) -> Path:
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    return tmp_path


def every_command(flake: Path) -> list[tuple[str, Command]]:
    """Every command of every lane (each action, keep_vm both ways) and suite."""
    found: list[tuple[str, Command]] = []
    loaded = contract.load_contract()
    for name, entry in loaded.lanes.items():
        actions = list(entry.actions) if entry.actions else [None]
        for action in actions:
            for keep in (False, True):
                params: dict[str, object] = {"action": action} if action else {}
                params.update(EXAMPLES.get((name, action or ""), {}))
                if "keep_vm" in entry.parameters:
                    params["keep_vm"] = keep
                found += [(name, c) for c in contract.plan(name, flake=flake, params=params)]
    for name in loaded.suites:
        found += [(f"suite:{name}", c) for c in contract.plan_suite(name, flake=flake)]
    return found


def as_typed(command: Command) -> str:
    env = " ".join(f"{k}={v}" for k, v in command.env.items())
    return (env + " " if env else "") + " ".join(command.argv)


def test_the_profile_still_loads_with_its_commands() -> None:
    assert profiles.load("ultracloud").commands is not None
    assert profiles.load("lab").commands is None


def test_every_contract_command_is_a_seed_line_verbatim(flake: Path) -> None:
    seed = {line.split(" | rg ")[0] for line in SEED}
    for lane, command in every_command(flake):
        if command.assumed:
            assert command.note, f"{lane}: an assumed command says why"
            continue
        assert as_typed(command) in seed, f"{lane}: {as_typed(command)!r} is not in the seed"


def test_every_seed_line_has_a_contract_command(flake: Path) -> None:
    typed = {as_typed(c) for _, c in every_command(flake)}
    for line in SEED:
        assert line.split(" | rg ")[0] in typed, f"the seed's {line!r} is not in the contract"


@pytest.mark.skipif(not SEED_FILE.exists(), reason="the seed is not on this host")
def test_the_embedded_seed_lines_are_the_seeds() -> None:
    text = SEED_FILE.read_text()
    for line in SEED:
        assert line in text, line


def test_lanes_and_suites_of_the_brief_are_there() -> None:
    loaded = contract.load_contract()
    for lane in ("single-node-quickstart", "ha-control-plane", "baremetal-iso", "baremetal-iso-e2e",
                 "hardware-smoke", "fresh-smoke", "fresh-demo-vm-webapp", "fresh-matrix",
                 "chainfire-live-membership-proof", "provider-vm-reality-proof", "rollout-soak",
                 "durability-proof", "fresh-bench-storage", "core-control-plane-ops-proof",
                 "deployer-vm-smoke", "deployer-vm-rollback", "portable-regressions", "guards",
                 "work-root-budget", "operations"):
        assert lane in loaded.lanes, lane
    assert list(loaded.suites) == ["publishable", "final-proof", "portable"]
    portable = contract.plan_suite("portable", flake=CONTRACT_FLAKE)
    assert [c.argv[-1] for c in portable] == [".#checks.x86_64-linux.canonical-profile-eval-guards",
                  ".#checks.x86_64-linux.portable-control-plane-regressions"]


def test_deployer_vm_rollback_is_flagged_assumed(flake: Path) -> None:
    (command,) = contract.plan("deployer-vm-rollback", flake=flake)
    assert command.assumed and "analogy" in command.note
    assert command.argv == ("nix", "build", ".#checks.x86_64-linux.deployer-vm-rollback")
    assert "assumed" in contract.format_plan([command])


def test_the_quickstart_plan_in_order_with_keep_vm(flake: Path) -> None:
    steps = contract.plan("single-node-trial", flake=flake, params={"keep_vm": True, "flake": "ignored"})
    assert [c.name for c in steps] == ["flake show", "build trial VM", "eval quickstart toplevel",
                                       "run quickstart launcher"]
    assert steps[-1].env == {"ULTRACLOUD_QUICKSTART_KEEP_VM": "1"} and steps[0].env == {}
    assert all(c.cwd == flake.resolve() and c.nix for c in steps)
    assert contract.plan("single-node-quickstart", flake=flake)[-1].env == {}


def test_work_root_placeholder_and_proof_folders(flake: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ULTRACLOUD_WORK_ROOT", raising=False)
    default = contract.plan("baremetal-iso-e2e", flake=flake)[1]
    assert default.argv[1] == "./work/baremetal-iso-e2e/latest" and default.work_root == flake / "work"
    assert default.proof_folder == "baremetal-iso-e2e" and default.result_json
    assert "state/environment.txt" in default.expected_files and default.markers[-1] == "desired-system-active"
    moved = contract.plan("baremetal-iso-e2e", flake=flake, work_root=tmp_path / "wr")[1]
    assert moved.argv[1] == f"{tmp_path / 'wr'}/baremetal-iso-e2e/latest"
    assert moved.env["ULTRACLOUD_WORK_ROOT"] == str(tmp_path / "wr")
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "env-wr"))
    from_env = contract.plan("rollout-soak", flake=flake)[0]
    assert from_env.work_root == tmp_path / "env-wr" and "ULTRACLOUD_WORK_ROOT" not in from_env.env


def test_parameters_are_validated_before_anything_runs(flake: Path) -> None:
    with pytest.raises(ParameterError, match="action"):
        contract.plan("hardware-smoke", flake=flake, params={"action": "flash; reboot"})
    with pytest.raises(ParameterError, match="node"):
        contract.plan("operations", flake=flake, params={"action": "logs", "node": "-oProxyCommand=x"})
    with pytest.raises(ParameterError, match="keep"):
        contract.plan("work-root-budget", flake=flake, params={"action": "prune-proof-logs", "keep": "2; rm"})
    with pytest.raises(ParameterError, match="no commands for lane"):
        contract.plan("no-such-lane", flake=flake)
    (ssh,) = contract.plan("operations", flake=flake, params={"action": "ssh", "node": "node04"})
    assert ssh.interactive and ssh.argv[-2:] == ("ssh", "node04")


def test_format_plan_is_what_a_user_types_from_the_flake_root(flake: Path) -> None:
    nix = NixInfo("/usr/bin/nix", "nix (Nix) 2.8.0", (2, 8, 0))
    steps = contract.plan("single-node-quickstart", flake=flake, params={"keep_vm": True})
    overrides = {"ULTRACLOUD_LOCAL_NIX_MAX_JOBS": "1", "ULTRACLOUD_LOCAL_NIX_BUILD_CORES": "2",
                 "PHOTON_CLUSTER_NIX_MAX_JOBS": "1", "PHOTON_CLUSTER_NIX_BUILD_CORES": "2"}
    text = contract.format_plan(steps, nix, overrides)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == f"cd {shlex.quote(str(flake.resolve()))}" and lines[1].startswith("export ")
    assert [shlex.split(line) for line in lines[2:]] == [
        [f"{k}={v}" for k, v in c.env.items()] + c.final_argv(nix, overrides)
        for c in steps]
    assert "--all-systems" not in text
    assert "--all-systems" in contract.format_plan(steps, None, overrides)


def test_a_broken_contract_is_a_parameter_error(tmp_path: Path) -> None:
    def write(commands: dict[str, object]) -> Path:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"commands": {"schema": "ucnb.product-commands/v1", "source": "t",
                                                     "lanes": commands}}))
        return path

    with pytest.raises(ParameterError, match="placeholder"):
        contract.load_contract(write({"x": {"steps": [{"name": "a", "argv": ["nix", "{nope}"]}]}}))
    with pytest.raises(ParameterError, match="note"):
        contract.load_contract(write({"x": {"steps": [{"name": "a", "argv": ["nix"], "assumed": True}]}}))
    with pytest.raises(ParameterError, match="exactly one"):
        contract.load_contract(write({"x": {}}))
    with pytest.raises(ParameterError, match="argv"):
        contract.load_contract(write({"x": {"steps": [{"name": "a", "argv": "nix build"}]}}))
    with pytest.raises(ParameterError, match="no `commands:`"):
        (tmp_path / "empty.yaml").write_text("name: x\n")
        contract.load_contract(tmp_path / "empty.yaml")
