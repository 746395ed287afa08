"""Bad input is refused with a message naming what was wrong, before any VM exists."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ucnb import lanes
from ucnb.errors import ParameterError
from ucnb.runner import execute as runner
from ucnb.runner import params

from ..conftest import ROOT, Cli

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
    assert set(declared) == {"lane_name", *lane.parameters.model_fields}
    defaults = {"lane_name": lane.name, **lane.parameters().model_dump(mode="json")}
    for name, info in declared.items():
        assert ast.literal_eval(info["default"]) == defaults[name], name


def _code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_cells_hold_calls_not_control_flow(path: Path) -> None:
    for source in _code_cells(path):
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, ast.If | ast.For | ast.While | ast.Try | ast.With | ast.IfExp
                                  | ast.comprehension), (path.name, source)


def test_the_deployer_notebooks_differ_only_in_prose_and_defaults() -> None:
    smoke, rollback = (_code_cells(ROOT / "notebooks" / f"deployer-vm-{n}.ipynb")
                       for n in ("smoke", "rollback"))
    assert smoke[1:] == rollback[1:]  # every cell but the parameters cell is the same code
    names = [[line.split(" = ")[0] for line in cells[0].splitlines()[1:]] for cells in (smoke, rollback)]
    assert names[0] == names[1]  # the same parameters, in the same order; only values differ


def test_a_notebook_refuses_another_lanes_name() -> None:
    with pytest.raises(ParameterError, match="not 'fresh-smoke'"):
        LANE.validate({"lane_name": "fresh-smoke"})


@pytest.mark.parametrize("profile_file", sorted((ROOT / "parameters").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_parameter_file_validates(profile_file: Path) -> None:
    lane = lanes.get(profile_file.stem)
    if lane.unavailable(profile_file.parent.name):  # a lane the lab cannot run: the file says why
        assert params.read_yaml_mapping(profile_file) == {}
        assert lane.lab_unavailable in " ".join(profile_file.read_text().replace("#", " ").split())
        with pytest.raises(ParameterError, match=r"profile: lane .* is not runnable on the lab profile"):
            params.resolve(lane, profile_file.parent.name)
        return
    params.resolve(lane, profile_file.parent.name)


@pytest.mark.parametrize("lane", [lane for lane in lanes.all_lanes().values() if lane.lab_unavailable],
                         ids=lambda lane: lane.name)
def test_a_lane_the_lab_cannot_run_is_refused_on_it_with_the_reason_before_anything_starts(
        lane: lanes.Lane) -> None:
    assert lane.profiles == ("ultracloud",)
    for attempt in (lambda: runner.prepare(lane.name, "lab", [], []),
                    lambda: lane.validate({"profile": "lab"})):  # the notebook's own start_run
        with pytest.raises(ParameterError) as caught:
            attempt()
        assert str(caught.value).startswith("profile: ") and lane.lab_unavailable in str(caught.value)
        assert "--profile ultracloud" in str(caught.value)
    assert lane.parameters().profile == "ultracloud"  # the notebook's defaults run the product


def test_notebooks_are_committed_without_outputs() -> None:
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        params_cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params_cells) == 1, path
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path


def test_cli_bad_input_exit_code_before_any_domain(cli: Cli) -> None:
    """Refused before libvirt is reached: the unit layer's libvirt address has nothing behind it."""
    out = cli("run", "single-node-quickstart", "-p", "bogus=1", timeout=60)
    assert out.returncode == 2
    assert "bogus" in out.stderr
