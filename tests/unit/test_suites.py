"""Suites: loading and planning, not-built lanes, the JUnit writer, KVM refusal (the portable suite
for real: tests/e2e/test_suites.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped

from ucnb import lanes
from ucnb.errors import InfrastructureError, ParameterError
from ucnb.evidence import index, junit
from ucnb.host.accel import Accelerator
from ucnb.runner import suites

from ..conftest import ROOT, Cli


def _suites(tmp_path: Path, data: dict[str, object]) -> dict[str, suites.SuiteSpec]:
    path = tmp_path / "suites.yaml"
    path.write_text(yaml.safe_dump({"schema": "ucnb.suites/v1", "suites": data}))
    return suites.load_suites(path)


# -- loading and planning --------------------------------------------------------------------
def test_shipped_suites_load_with_the_named_lanes() -> None:
    shipped = suites.load_suites()
    assert {"publishable", "final-proof", "portable"} <= set(shipped)
    assert [s.lane for s in shipped["publishable"].steps] == [
        "fresh-smoke", "fresh-demo-vm-webapp", "fresh-matrix", "chainfire-live-membership-proof"]
    assert shipped["publishable"].require_kvm
    final = shipped["final-proof"].steps
    assert (final[0].guard, final[1].lane, final[2].suite) == ("surface", "single-node-quickstart",
                                                               "publishable")


def test_portable_plan_is_guards_then_quickstart_then_every_portable_lane() -> None:
    plan = suites.plan("portable")
    assert not plan.require_kvm and plan.profile == "lab"
    assert [(e.kind, e.name) for e in plan.entries[:3]] == [
        ("guard", "profiles"), ("guard", "surface"), ("lane", "single-node-quickstart")]
    assert plan.entries[1].path == str(ROOT)
    portable = {n for n, lane in lanes.all_lanes().items() if lane.portable}
    assert "single-node-quickstart" in portable
    assert {e.name for e in plan.entries if e.kind == "lane"} == portable  # each once


def test_final_proof_includes_publishable_and_inherits_its_kvm_requirement(tmp_path: Path) -> None:
    plan = suites.plan("final-proof", surface_path=tmp_path)
    assert plan.require_kvm
    assert plan.entries[0].path == str(tmp_path)
    assert [e.name for e in plan.entries if e.kind == "lane"] == [
        "single-node-quickstart", "fresh-smoke", "fresh-demo-vm-webapp", "fresh-matrix",
        "chainfire-live-membership-proof"]


def test_lanes_not_in_the_registry_are_not_built_and_wrong_profiles_not_runnable(tmp_path: Path) -> None:
    data = {"s": {"description": "d", "steps": [{"lane": "no-such-lane-yet"},
                                                {"lane": "single-node-quickstart"}]}}
    plan = suites.plan("s", suites=_suites(tmp_path, data))
    missing, quickstart = plan.entries
    assert (missing.status, quickstart.status) == (suites.NOT_BUILT, suites.PENDING)
    assert "not built yet" in missing.reason and "no-such-lane-yet" in missing.reason
    entry = suites.lane_entry("single-node-quickstart", "nowhere")
    assert entry.status == suites.NOT_RUNNABLE and "no 'nowhere' profile" in entry.reason


@pytest.mark.parametrize("steps, message", [
    ([{"lane": "a", "guard": "surface"}], "exactly one"),
    ([{"guard": "profiles", "path": "."}], "path"),
    ([{"guard": "nonsense"}], "guard"),
])
def test_bad_steps_are_refused(tmp_path: Path, steps: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        _suites(tmp_path, {"s": {"description": "d", "steps": steps}})


def test_unknown_and_cyclic_suites_are_parameter_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="unknown suite 'nope'"):
        suites.plan("nope")
    cyclic = _suites(tmp_path, {"a": {"description": "d", "steps": [{"suite": "b"}]},
                                "b": {"description": "d", "steps": [{"suite": "a"}]}})
    with pytest.raises(ParameterError, match="includes itself"):
        suites.plan("a", suites=cyclic)


def test_verdicts_and_exit_codes() -> None:
    ok = suites.SuiteEntry("lane", "a", suites.PASSED)
    skipped = suites.SuiteEntry("lane", "b", suites.NOT_BUILT, "not built yet")
    failed = suites.SuiteEntry("lane", "c", suites.FAILED, exit_code=3)
    assert suites.verdict_and_exit([ok]) == ("passed", 0)
    assert suites.verdict_and_exit([ok, skipped]) == ("incomplete", 1)
    assert suites.verdict_and_exit([ok, skipped], allow_incomplete=True) == ("incomplete", 0)
    assert suites.verdict_and_exit([ok, skipped, failed]) == ("failed", 3)


# -- running without VMs ---------------------------------------------------------------------
def test_a_suite_of_unbuilt_lanes_reports_them_skipped_never_passed(
        tmp_path: Path, outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"s": {"description": "d", "steps": [{"guard": "surface", "path": "ucnb"},
                                                {"lane": "fresh-demo-vm-webapp-not-here"}]}}
    plan = suites.plan("s", suites=_suites(tmp_path, data))
    monkeypatch.setattr(suites, "host_accelerator", lambda: pytest.fail("no lane runs: no probe"))
    outcome = suites.run(plan, junit_file=tmp_path / "ci" / "junit.xml")
    assert (outcome.verdict, outcome.exit_code) == ("incomplete", 1)
    assert outcome.root.parent == outputs / "suites" / "s" and (outcome.root.parent / "latest").exists()
    summary = json.loads((outcome.root / "suite.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["passed", "not-built"]
    assert (outcome.root / "guards" / "surface.txt").read_text().strip().endswith("is clean")
    assert not list(outcome.root.glob("fresh-demo*")), "no proof root, no placeholder notebook"
    xml = JUnitXml.fromfile(str(tmp_path / "ci" / "junit.xml"))
    cases = {case.name: case for suite in xml for case in suite}
    skipped = cases["fresh-demo-vm-webapp-not-here"].result
    assert len(skipped) == 1 and isinstance(skipped[0], Skipped)
    assert skipped[0].message.startswith("not-built: lane fresh-demo-vm-webapp-not-here is not built yet")
    assert cases["surface"].is_passed
    assert [e.kind for e in index.load(outputs)] == ["suite"]


def test_require_kvm_refuses_to_start_under_tcg(outputs: Path, cli: Cli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suites, "host_accelerator",
                        lambda: Accelerator("tcg", "/dev/kvm is absent"))
    with pytest.raises(InfrastructureError, match=r"requires KVM.*/dev/kvm is absent"):
        suites.run(suites.plan("portable"), kvm=True)
    for name in ("publishable", "final-proof"):  # these imply it
        result = cli.invoke("suite", name)
        assert result.exit_code == InfrastructureError.exit_code, result.output
    assert not outputs.exists(), "a refused suite leaves no dated root"


# -- the JUnit writer ------------------------------------------------------------------------
def test_junit_writer_maps_failed_and_skipped_steps(tmp_path: Path) -> None:
    rows = [
        {"index": 1, "name": "boot", "node": "node01", "start": 10.0, "end": 14.5, "outcome": "passed",
         "detail": "", "kind": "step"},
        {"index": 2, "name": "health: iam", "node": "node01", "start": 15.0, "end": 15.0,
         "outcome": "skipped", "detail": "no stand-in for IAM", "kind": "step"},
        {"index": 3, "name": "wait: flaredb <healthy> & \"ok\"", "node": "node01", "start": 15.0,
         "end": 19.0, "outcome": "failed", "detail": "Connection refused", "kind": "wait"},
        {"index": 4, "name": "manifest", "node": "node01", "start": 19.0, "end": None,
         "outcome": "running", "detail": "", "kind": "step"},
    ]
    cases = [junit.Case("lane-x", "s.lane.lane-x", "failed", 9.0, "wait: flaredb healthy")]
    cases += junit.step_cases("s.lane.lane-x", rows)
    path = junit.write(tmp_path / "j.xml", "ucnb suite s",
                       [junit.Suite("lane-x", cases, 9.0, "2026-01-01T00:00:00Z", "proof root: x"),
                        junit.Suite("lane-y", [junit.Case("lane-y", "s.lane.lane-y", "skipped", 0,
                                                          "not-built: no module")])])
    xml = JUnitXml.fromfile(str(path))
    suites_by_name = {s.name: s for s in xml}
    x = suites_by_name["lane-x"]
    assert (x.tests, x.failures, x.skipped, x.time) == (5, 3, 1, 9.0)
    results = {case.name: case.result for case in x}
    assert results["01 boot [node01]"] == [] and next(iter(x)).time == 9.0
    assert isinstance(results["02 health: iam [node01]"][0], Skipped)
    assert results["02 health: iam [node01]"][0].message == "no stand-in for IAM"
    failure = results['03 wait: flaredb <healthy> & "ok" [node01]'][0]
    assert isinstance(failure, Failure) and failure.message == "Connection refused"
    assert results["04 manifest [node01]"][0].message == "did not finish"
    assert suites_by_name["lane-y"].skipped == 1
    assert (xml.tests, xml.failures, xml.skipped) == (6, 3, 2)
