"""Bad input is refused with a message naming what was wrong, before any VM exists."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from ucnb import lanes
from ucnb.errors import ParameterError
from ucnb.runner import execute as runner
from ucnb.runner import params

from .conftest import ROOT

LANE = lanes.get("single-node-quickstart")


@pytest.mark.parametrize(("args", "needle"), [
    (("nope", "lab", [], []), "unknown lane 'nope'"),
    (("single-node-quickstart", "moon", [], []), "unknown profile 'moon'"),
    (("single-node-quickstart", "lab", [], ["bogus=1"]), "bogus: unknown parameter"),
    (("single-node-quickstart", "lab", [], ["memory_mib=lots"]), "memory_mib"),
    (("single-node-quickstart", "lab", [], ["memory_mib=64"]), "greater than or equal to 128"),
    (("single-node-quickstart", "lab", [], ["noequals"]), "NAME=VALUE"),
])
def test_bad_input_is_a_parameter_error(args: tuple, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ParameterError, match=needle.replace("(", r"\(")):
        runner.prepare(*args)


def test_parameter_file_must_be_yaml_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [b\n")
    with pytest.raises(ParameterError, match="not valid YAML"):
        runner.prepare("single-node-quickstart", "lab", [bad], [])
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ParameterError, match="mapping"):
        runner.prepare("single-node-quickstart", "lab", [listy], [])


def test_overrides_are_typed_and_layered(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("memory_mib: 384\nkeep_vm: true\n")
    p = params.resolve(LANE, "lab", [f], ["memory_mib=512", "required_components=[chainfire]"])
    assert p.memory_mib == 512 and p.keep_vm is True  # type: ignore[attr-defined]
    assert p.required_components == ["chainfire"]  # type: ignore[attr-defined]


def test_alias_resolves() -> None:
    assert lanes.get("single-node-trial") is LANE


@pytest.mark.parametrize("lane", list(lanes.all_lanes().values()), ids=lambda lane: lane.name)
def test_notebook_parameters_cell_matches_schema(lane: lanes.Lane) -> None:
    declared = runner.notebook_parameters(lane.notebook)
    assert set(declared) == set(lane.parameters.model_fields)
    defaults = lane.parameters().model_dump(mode="json")
    for name, info in declared.items():
        assert ast.literal_eval(info["default"]) == defaults[name], name


@pytest.mark.parametrize("profile_file", sorted((ROOT / "parameters").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_parameter_file_validates(profile_file: Path) -> None:
    lane = lanes.get(profile_file.stem)
    params.resolve(lane, profile_file.parent.name)


def test_notebooks_are_committed_without_outputs() -> None:
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        params_cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params_cells) == 1, path
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path


def test_cli_bad_input_exit_code_before_any_domain() -> None:
    out = subprocess.run([str(ROOT / ".venv/bin/ucnb"), "run", "single-node-quickstart", "-p", "bogus=1"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "bogus" in out.stderr


def test_ultracloud_plan_prints_the_product_commands() -> None:
    out = subprocess.run([str(ROOT / ".venv/bin/ucnb"), "run", "single-node-trial", "-P", "ultracloud",
                          "--plan", "-p", "flake=/src/ultracloud", "-p", "keep_vm=true"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "nix build /src/ultracloud#single-node-trial-vm",
        "nix eval --no-eval-cache /src/ultracloud#nixosConfigurations.single-node-quickstart.config"
        ".system.build.toplevel.drvPath --raw",
        "ULTRACLOUD_QUICKSTART_KEEP_VM=1 nix run /src/ultracloud#single-node-quickstart",
    ]
