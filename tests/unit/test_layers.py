"""The test layers themselves: every test in a layer folder, one way to call the CLI, the unit layer
cut off from the lab host, the leftover check matching only its own, and the documented commands."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ucnb.files import update_kv

from ..conftest import LAYERS, ROOT, TESTS, Cli
from ..lab_fixtures import OwnRuns, shared_run

LAB_FIXTURES = {"lab_host", "lab_image", "accelerator", "own_runs"}


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "contract-flake" not in p.parts)


def _test_functions(path: Path) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def test_every_test_module_is_in_a_layer_folder_and_every_layer_has_tests() -> None:
    outside = [p for p in _test_modules() if p.relative_to(TESTS).parts[0] not in LAYERS]
    assert outside == [], "move them to tests/unit, tests/vm or tests/e2e"
    for layer in LAYERS:
        assert (TESTS / layer / "conftest.py").is_file(), layer
        count = sum(len(_test_functions(p)) for p in (TESTS / layer).glob("test_*.py"))
        assert count > 0, f"tests/{layer} has no tests: `pytest tests/{layer}` would collect nothing"


def test_the_cli_is_called_only_through_the_cli_fixture() -> None:
    own_ways = re.compile(r"\.venv/bin|ucnb\.cli\.main|CliRunner\(|-m\", \"ucnb\.cli")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _test_modules() if p != Path(__file__)
             for n, line in enumerate(p.read_text().splitlines(), 1) if own_ways.search(line)]
    assert found == [], "use the `cli` fixture (tests/conftest.py)"


def test_unit_tests_request_no_lab_fixture() -> None:
    requested = [f"{p.name}::{f.name}" for p in (TESTS / "unit").glob("test_*.py") for f in _test_functions(p)
                 if LAB_FIXTURES & {a.arg for a in f.args.args}]
    assert requested == [], "a test that needs the lab host belongs in tests/vm or tests/e2e"


def test_a_unit_test_reaches_neither_libvirt_nor_the_lab_host(tmp_path: Path, cli: Cli) -> None:
    from ucnb import paths
    from ucnb.host import daemons, netns
    from ucnb.lab.registry import connect

    for reach in (connect, netns.enter, daemons.up):
        with pytest.raises(AssertionError, match="belongs in tests/vm"):
            reach()
    assert paths.work_root() == tmp_path / "work"
    child = subprocess.run([sys.executable, "-c", "from ucnb.lab.registry import connect; connect()"],
                           capture_output=True, text=True, env=cli.env(), timeout=60)
    assert child.returncode != 0 and "cannot reach libvirtd" in child.stderr, child.stderr[-500:]


def test_the_leftover_check_finds_its_runs_and_matches_only_its_own_processes(tmp_path: Path) -> None:
    root = tmp_path / "outputs" / "lane" / "20260101T000000Z-r1"
    root.mkdir(parents=True)
    update_kv(root / "environment.txt", {"run_id": "r1", "lab_id": "ab12cd34"})
    runs = OwnRuns(tmp_path).discover()
    assert (runs.run_ids, runs.lab_ids) == ({"r1"}, {"ab12cd34"})
    pattern = runs._process_pattern()
    mine = [f"UCNB_OUTPUTS={tmp_path}/outputs", "UCNB_RUN_ID=r1\0X=1", "-name guest=ucnb-ab12cd34-node01",
            "/work/labs/ab12cd34/node01-system.qcow2", f"--state-dir\0{tmp_path}\0"]
    others = [f"UCNB_OUTPUTS={tmp_path}1/outputs", "UCNB_RUN_ID=r10\0", "guest=ucnb-ab12cd345-node01",
              "/work/labs/ab12cd3/x"]
    assert [s for s in mine if not pattern.search(s.encode())] == []
    assert [s for s in others if pattern.search(s.encode())] == []


def test_make_test_runs_the_layers_the_readme_names_fastest_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest: lint\n", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"pytest -q (tests/\w+)", recipe) == [f"tests/{layer}" for layer in LAYERS]
    development = (ROOT / "README.md").read_text().split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    assert all(f"pytest tests/{layer}" in development for layer in LAYERS)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


class _Item:
    """Just enough of a collected test for the layer hook: its id, path, fixtures and markers."""

    def __init__(self, name: str, fixtures: dict[str, Any], long: float | None = None,
                 cluster: bool = False) -> None:
        from _pytest.nodeid import NodeId

        self._id, self.path = NodeId.parse(f"tests/e2e/test_x.py::{name}"), TESTS / "e2e" / "test_x.py"
        defs = {fixture: [SimpleNamespace(baseid="tests/e2e/test_x.py", func=func)]
                for fixture, func in fixtures.items()}
        self._fixtureinfo = SimpleNamespace(name2fixturedefs=defs)
        self.marks = [pytest.mark.long(long).mark] if long is not None else []
        self.marks += [pytest.mark.cluster.mark] if cluster else []

    @property
    def nodeid(self) -> str:
        return str(self._id)

    def add_marker(self, mark: str | pytest.MarkDecorator) -> None:
        self.marks.append(getattr(pytest.mark, mark).mark if isinstance(mark, str) else mark.mark)

    def iter_markers(self, name: str) -> list[Any]:
        return [m for m in self.marks if m.name == name]

    def get_closest_marker(self, name: str) -> Any:
        return next(iter(self.iter_markers(name)), None)

    def groups(self) -> list[str]:
        return [m.args[0] for m in self.iter_markers("xdist_group")]


@pytest.mark.parametrize("worker", [False, True], ids=["no xdist", "xdist loadgroup worker"])
def test_a_shared_run_is_one_xdist_group_and_long_tests_start_first(worker: bool) -> None:
    from .. import conftest

    def run() -> None: ...
    def other_run() -> None: ...
    def tmp() -> None: ...
    shared_run()(run)
    shared_run("session")(other_run)
    items = [_Item("a", {"run": run, "tmp": tmp}), _Item("b", {"tmp": tmp}, long=1),
             _Item("c", {"run": run}), _Item("d", {"other_run": other_run}, long=3)]
    config = SimpleNamespace(option=SimpleNamespace(loadgroup=True) if worker else SimpleNamespace())
    conftest.pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]
    assert [i.nodeid.split("::")[1][0] for i in items] == ["d", "b", "a", "c"]  # longest first, then as found
    assert {i.nodeid.split("::")[1][0]: i.groups() for i in items} == {
        "a": ["test_x.run"], "c": ["test_x.run"], "d": ["test_x.other_run"], "b": []}
    assert all(i.get_closest_marker("e2e") for i in items)   # and the layer's marker, as before
    # what xdist's scheduler reads: the group after `@` in the id (a worker's only), one unit per group
    suffixes = {i.nodeid.split("::")[1][0]: i.nodeid.partition("@")[2] for i in items}
    assert suffixes == ({"a": "test_x.run", "c": "test_x.run", "d": "test_x.other_run", "b": ""} if worker
                        else dict.fromkeys("abcd", ""))


def test_cluster_tests_fill_one_slot_per_two_cores_longest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from .. import conftest

    monkeypatch.delenv("UCNB_TEST_CLUSTER_SLOTS", raising=False)
    monkeypatch.setattr(conftest.os, "cpu_count", lambda: 4)   # two slots
    items = [_Item(n, {}, long=m, cluster=True) for n, m in (("a", 1), ("b", 3), ("c", 1.5), ("d", 1.5))]
    items.append(_Item("e", {}))
    conftest.pytest_collection_modifyitems(SimpleNamespace(option=SimpleNamespace()), items)  # type: ignore[arg-type]
    slots = {i.nodeid.split("::")[1]: i.groups() for i in items}
    # b (3) alone in one slot; c and d (1.5 each) in the other, then a (1) with b: 4 and 3 minutes
    assert slots == {"b": ["cluster-slot-0"], "c": ["cluster-slot-1"], "d": ["cluster-slot-1"],
                     "a": ["cluster-slot-0"], "e": []}
