"""The verdict banner's words, from result.json as build_result writes it."""

from __future__ import annotations

import html as html_mod
import re
from pathlib import Path
from typing import Any

import pytest

from ucnb.errors import LaneFailure
from ucnb.evidence import banner
from ucnb.evidence import proof as evidence
from ucnb.files import update_kv
from ucnb.kernel.record import Recorder

COVERAGE = "required components"


def _recorder(root: Path) -> Recorder:
    root.mkdir(parents=True, exist_ok=True)
    update_kv(root / "environment.txt", {"vm_accelerator_mode": "tcg", "harness_commit": "a" * 40,
                                         "vm_accelerator_reason": "/dev/kvm present but unusable",
                                         "harness_dirty": "clean", "wall_time_s": "9.52"})
    return Recorder(root / evidence.EVENTS)


def _quickstart(rec: Recorder, flaredb_fails: bool = False) -> None:
    """The quickstart's shape: two components probed, three without a stand-in."""
    for name in ("iam", "plasmavmc", "prismnet"):
        rec.skip(f"health: {name}", f"no stand-in for {name}", "node01", covers=(COVERAGE, name))
    with rec.step("health: chainfire", "node01"):
        pass
    rec.cover(COVERAGE, "chainfire", "exercised", step="health: chainfire")
    rec.cover(COVERAGE, "flaredb", "failed", step="health: flaredb")
    if flaredb_fails:
        with pytest.raises(LaneFailure), rec.step("health: flaredb", "node01"), \
                rec.step("wait: flaredb healthy", "node01", kind="wait") as row:
            row.detail = "timeout after 6 tries; last: exit 1: wget: Connection refused"
            raise LaneFailure("node01: timed out after 4s waiting for flaredb healthy")
    else:
        with rec.step("health: flaredb", "node01"):
            pass
        rec.cover(COVERAGE, "flaredb", "exercised", step="health: flaredb")


def _text(result: dict[str, Any]) -> str:
    """What the banner shows, as a reader sees it (tags stripped)."""
    return re.sub(r"\s+", " ", html_mod.unescape(re.sub(r"<[^>]+>", " ", banner.html(result))))


def test_a_clean_pass_says_passed(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("boot", "node01"):
        pass
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert banner.label(result) == "PASSED" and result["verdict_label"] == "passed"
    assert banner.title(result) == f"lane · PASSED · {result['started_utc'][:10]}"
    text = _text(result)
    assert "1 of 1 steps ran" in text and "failing step" not in text
    assert "TCG" in text and "/dev/kvm present but unusable" in text
    assert "wall time 9.5 s" in text and "harness aaaaaaaaaaaa (clean)" in text
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)


def test_a_pass_that_skipped_required_components_says_passed_with_gaps(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    _quickstart(rec)
    rec.skip("bootstrap token", "ULTRACLOUD_BOOTSTRAP_TOKEN is not set", "node01")
    result = evidence.build_result(tmp_path, "single-node-quickstart", "lab", "r1")
    assert result["verdict"] == "passed" and result["success"]   # CI's verdict is unchanged
    assert banner.label(result) == "PASSED WITH GAPS"
    assert banner.title(result).startswith("single-node-quickstart · PASSED WITH GAPS · ")
    text = _text(result)
    assert ("2 of 5 required components exercised; 3 skipped: iam (no stand-in for iam), "
            "plasmavmc (no stand-in for plasmavmc), prismnet (no stand-in for prismnet)") in text
    # the skipped bootstrap token is a gap too, listed once (not again under the components)
    assert "also skipped bootstrap token (ULTRACLOUD_BOOTSTRAP_TOKEN is not set)" in text
    assert text.count("health: iam") == 0
    assert result["coverage"][COVERAGE]["total"] == 5


def test_a_failure_names_the_step_and_its_last_observation(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    _quickstart(rec, flaredb_fails=True)
    result = evidence.build_result(tmp_path, "single-node-quickstart", "lab", "r1",
                                   error={"type": "LaneFailure", "kind": "lane", "message": "x"})
    assert banner.label(result) == "FAILED"
    lines = dict(banner.lines(result))
    assert lines["failing step"] == "wait: flaredb healthy [node01]"
    assert lines["last observation"] == "timeout after 6 tries; last: exit 1: wget: Connection refused"
    assert "1 of 5 required components exercised; 3 skipped: " in lines["coverage"]
    assert lines["coverage"].endswith("; 1 failed: flaredb")
    text = _text(result)
    assert text.index("FAILED") < text.index("failing step") < text.index("coverage")


def test_a_long_observation_is_cut_in_the_banner_only(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with pytest.raises(LaneFailure), rec.step("install", "worker") as row:
        row.detail = "console:\n" + "x" * 5000
        raise LaneFailure("boom")
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    shown = dict(banner.lines(result))["last observation"]
    assert len(shown) < 800 and shown.endswith("(the rest in result.json)")
    assert len(result["failing_step"]["last_observation"]) > 5000


def test_a_run_that_recorded_nothing_is_incomplete_with_its_error(tmp_path: Path) -> None:
    _recorder(tmp_path)
    result = evidence.build_result(tmp_path, "lane", "lab", "r1", error={
        "type": "InfrastructureError", "kind": "infrastructure", "message": "cannot reach libvirtd"},
        exit_code=3)
    assert result["verdict"] == "failed" and banner.label(result) == "FAILED"
    error = dict(banner.lines(result))["error"]
    assert error == "infrastructure (InfrastructureError): cannot reach libvirtd"
    (tmp_path / evidence.EVENTS).unlink(missing_ok=True)
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert result["verdict"] == "incomplete" and banner.label(result) == "INCOMPLETE"
    assert dict(banner.lines(result))["why incomplete"] == "the run recorded no step"


def test_steps_the_product_covered_are_not_gaps(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("product: nix run .#single-node-quickstart"):
        pass
    rec.skip("service health", "ultracloud profile: the product's own commands covered this",
             kind="delegated")
    result = evidence.build_result(tmp_path, "lane", "ultracloud", "r1")
    assert banner.label(result) == "PASSED" and result["gaps"] == []
    assert result["skipped"][0]["delegated"] is True
    assert dict(banner.lines(result))["product covered"].startswith("1 lab steps, by its own commands")


def test_headline_figures_reach_result_json_and_the_banner(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("check acknowledged writes"):
        rec.figure("acknowledged writes", 212)
        rec.figure("acknowledged writes lost", 0)
    result = evidence.build_result(tmp_path, "fresh-smoke", "lab", "r1")
    assert result["figures"]["acknowledged writes lost"] == {"value": 0, "unit": ""}
    assert "acknowledged writes lost 0" in dict(banner.lines(result))["figures"]


def test_markdown_fallback_has_the_same_words(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    _quickstart(rec)
    result = evidence.build_result(tmp_path, "single-node-quickstart", "lab", "r1")
    text = banner.markdown(result)
    assert text.startswith("## Verdict: **PASSED WITH GAPS**")
    assert "2 of 5 required components exercised" in text
