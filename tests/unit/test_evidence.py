"""Recorder, result building, redaction and sealing (pure: no VMs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from ucnb.errors import LaneFailure
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import MASK, Redactor
from ucnb.kernel.record import Recorder, load_events


def _recorder(root: Path, redactor: Redactor | None = None) -> Recorder:
    root.mkdir(parents=True, exist_ok=True)
    return Recorder(root / evidence.EVENTS, redactor)


def test_failed_step_names_the_step_and_its_last_observation(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("boot", "node01"):
        pass
    with pytest.raises(LaneFailure), rec.step("wait: ready", "node01"):
        raise LaneFailure("node01: timed out; last observation: exit 1")
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert result["verdict"] == "failed" and not result["success"]
    assert result["failing_step"]["name"] == "wait: ready"
    assert "last observation: exit 1" in result["failing_step"]["last_observation"]
    rows = list((tmp_path / "timeline.csv").read_text().splitlines())
    assert rows[0].startswith("index,name,node,start,end,outcome")
    assert len(rows) == 3


def test_skips_are_listed_never_counted_as_passed(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("boot"):
        pass
    rec.skip("health: iam", "no stand-in")
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert result["verdict"] == "passed"
    assert result["steps"] == {"passed": 1, "failed": 0, "skipped": 1, "running": 0, "interrupted": 0}
    assert result["skipped"] == [{"name": "health: iam", "node": "", "reason": "no stand-in",
                                  "delegated": False}]
    assert result["verdict_label"] == "passed with gaps"   # a pass that skipped something says so
    assert result["gaps"] == [{"name": "health: iam", "node": "", "reason": "no stand-in"}]


def test_the_recorder_says_when_the_run_first_waits() -> None:
    recorder = Recorder()
    with recorder.step("make the lab"), recorder.step("boot node01", "node01"):
        pass
    assert not recorder.waiting.is_set()   # the plotting stack is not imported beside the set-up
    with recorder.step("wait: SSH", "node01", kind="wait"):
        assert recorder.waiting.is_set()


def test_failed_check_fails_the_verdict(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("manifest"):
        assert not rec.check("profile", "single-node dev", "other")
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert result["verdict"] == "failed" and result["checks"]["failed"] == 1


def test_events_survive_a_cut_line_and_last_record_wins(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    with rec.step("a"):
        pass
    with (tmp_path / evidence.EVENTS).open("a") as f:
        f.write('{"table": "steps", "row": {"index": 2')  # a killed writer
    tables = load_events(tmp_path / evidence.EVENTS)
    assert [s["outcome"] for s in tables["steps"]] == ["passed"]


def test_redactor_masks_secrets_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-8d1f0c3a"
    monkeypatch.setenv("MY_TOKEN", canary)
    redactor = Redactor()
    assert redactor.add_env("MY_TOKEN") == canary
    rec = _recorder(tmp_path / "root", redactor)
    with rec.step(f"uses {canary}"):
        pass
    (tmp_path / "root" / "log.txt").write_text(f"token={canary}\n")
    changed = redactor.tree(tmp_path / "root")
    assert [p.name for p in changed] == ["log.txt"]  # the events file was redacted as written
    for path in (tmp_path / "root").rglob("*"):
        assert canary not in path.read_text()
    assert MASK in (tmp_path / "root" / "log.txt").read_text()


def test_seal_writes_self_contained_html_and_valid_checksums(tmp_path: Path) -> None:
    root = tmp_path / "outputs" / "lane" / "20260101T000000Z-abc"
    rec = _recorder(root)
    with rec.step("boot"):
        pass
    nb = new_notebook(cells=[new_code_cell("print('hi')", outputs=[
        new_output("stream", name="stdout", text="hi secret-value-123\n")])])
    nb_path = root / "lane.ipynb"
    nbformat.write(nb, nb_path)
    evidence.build_result(root, "lane", "lab", "abc")
    evidence.seal(root, nb_path, Redactor(["secret-value-123"]))
    html = (root / "lane.html").read_text()
    assert "hi " in html and "secret-value-123" not in html
    assert 'src="http' not in html and "print('hi')" not in html  # no code input, no remote scripts
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    assert evidence.verify_checksums(root) == []
    (root / "result.json").write_text(json.dumps({"tampered": True}))
    assert evidence.verify_checksums(root) == ["result.json"]
    assert (root.parent / "latest").resolve() == root.resolve()


def test_failing_step_is_the_first_failure_not_a_step_cut_short(tmp_path: Path) -> None:
    """Two nodes install in parallel; the worker fails first, the other's wait is cut short."""
    rec = _recorder(tmp_path)
    cut_short = rec.step("wait: marker", "control-plane", kind="wait")
    cut_short.__enter__()  # never exits: the run stopped while it waited
    with pytest.raises(LaneFailure), rec.step("install", "worker"), \
            rec.step("wait: marker", "worker", kind="wait"):
        raise LaneFailure("worker: failure marker install.disko.failed.target-disk-missing")
    result = evidence.build_result(tmp_path, "lane", "lab", "r1")
    assert result["failing_step"]["node"] == "worker"
    assert result["failing_step"]["name"] == "wait: marker"
    assert "target-disk-missing" in result["failing_step"]["last_observation"]
    assert cut_short is not None  # held, so the cut-short wait is not closed (and failed) early
