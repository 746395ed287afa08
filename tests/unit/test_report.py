"""The evidence index and the report: units on synthetic proof roots, and the page in Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from ucnb.evidence import index, report
from ucnb.evidence import proof as evidence
from ucnb.kernel.record import field_names

LANE = "single-node-quickstart"


def _proof_root(outputs: Path, run_id: str, start: str, verdict: str, *, memory: int = 256,
                health_s: float = 1.5, flaredb: str = "passed", accel: str = "tcg",
                markers: tuple[str, ...] = ("lab.boot.node01", "lab.init.done")) -> index.IndexEntry:
    """A proof root with the files the report reads, and its index line."""
    root = evidence.new_proof_root(LANE, run_id)
    (root / "parameters.yaml").write_text(yaml.safe_dump({"profile": "lab", "memory_mib": memory,
                                                          "stop_services": []}))
    evidence.write_environment(root, {"run_id": run_id, "qemu": "QEMU 7.2", "vm_accelerator_mode": accel})
    steps = [(1, "boot", 100.0, 104.0, "passed", ""),
             (2, "health: chainfire", 104.0, 104.0 + health_s, "passed", ""),
             (3, "wait: flaredb healthy", 106.0, 110.0, flaredb, "Connection refused" if flaredb != "passed"
              else "")]
    with (root / "timeline.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, field_names("steps"))
        writer.writeheader()
        for i, name, start_t, end_t, outcome, detail in steps:
            writer.writerow({"index": i, "name": name, "node": "node01", "start": start_t, "end": end_t,
                             "outcome": outcome, "detail": detail, "kind": "step"})
    with (root / "markers.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, field_names("markers"))
        writer.writeheader()
        for n, marker in enumerate(markers, start=1):
            writer.writerow({"node": "node01", "marker": marker, "first_seen": 100 + n,
                             "since_boot": n * 1.5})
    (root / f"{LANE}.html").write_text("<html><body>run</body></html>")
    entry = index.IndexEntry(LANE, "lab", run_id, start, 12.5, verdict, accel,
                             index.relative_to_outputs(root))
    index.append(entry)
    return entry


# -- the index -------------------------------------------------------------------------------
def test_index_appends_loads_in_start_order_and_skips_torn_lines(outputs: Path) -> None:
    late = _proof_root(outputs, "bbbb0002", "2026-11-26T10:00:00Z", "failed")
    early = _proof_root(outputs, "aaaa0001", "2026-11-26T09:00:00Z", "passed")
    with index.index_path(outputs).open("a") as f:
        f.write('{"lane": "cut short\n')
    assert index.load(outputs) == [early, late]
    line = json.loads(index.index_path(outputs).read_text().splitlines()[0])
    assert set(line) >= {"lane", "profile", "run_id", "start", "duration_s", "verdict", "accelerator",
                         "proof_root"}
    assert line["proof_root"].startswith(f"{LANE}/") and not line["proof_root"].startswith("/")


def test_index_entry_from_a_result_knows_its_suite(outputs: Path) -> None:
    root = outputs / "suites" / "portable" / "20261126T000000Z-s1" / LANE / "20261126T000001Z-r1"
    result = {"lane": LANE, "profile": "lab", "run_id": "r1", "verdict": "passed", "accelerator": "kvm"}
    entry = index.entry_for_result(result, root, 0.0, 3.456)
    assert entry.suite == "portable/20261126T000000Z-s1" and entry.start == "1970-01-01T00:00:00Z"
    assert entry.duration_s == 3.46 and entry.path(outputs) == root.resolve()
    assert index.suite_of(f"{LANE}/20261126T000001Z-r1") is None


# -- the diff --------------------------------------------------------------------------------
def test_failed_run_diffs_against_the_last_good_run_of_the_lane(outputs: Path) -> None:
    _proof_root(outputs, "good0001", "2026-11-26T08:00:00Z", "passed", memory=512)
    good = _proof_root(outputs, "good0002", "2026-11-26T09:00:00Z", "passed")
    failed = _proof_root(outputs, "fail0003", "2026-11-26T10:00:00Z", "failed", memory=128, health_s=4.0,
                         flaredb="failed", accel="kvm", markers=("lab.boot.node01",))
    _proof_root(outputs, "good0004", "2026-11-26T11:00:00Z", "passed")  # later: not "last good"
    entries = index.load(outputs)
    assert report.last_good(entries, failed) == good
    diff = report.diff_runs(good.path(outputs), failed.path(outputs))
    assert diff.parameters == [report.Change("memory_mib", "256", "128")]
    assert diff.environment == [report.Change("vm_accelerator_mode", "tcg", "kvm")]  # run_id is noise
    steps = {d.step: d for d in diff.steps}
    assert steps["health: chainfire"].delta_s == pytest.approx(2.5) and not steps["health: chainfire"].changed
    assert steps["wait: flaredb healthy"].changed
    assert (steps["wait: flaredb healthy"].good_outcome, steps["wait: flaredb healthy"].failed_outcome) == (
        "passed", "failed")
    lost = next(m for m in diff.markers if m.step == "lab.init.done")
    assert (lost.good_s, lost.failed_s, lost.failed_outcome) == (3.0, None, None)


def test_first_failure_has_nothing_to_compare_with(outputs: Path) -> None:
    failed = _proof_root(outputs, "fail0001", "2026-11-26T10:00:00Z", "failed")
    assert report.last_good(index.load(outputs), failed) is None
    page = report.write_report(outputs=outputs).read_text()
    assert "no earlier passing run of this lane" in page


def test_report_is_self_contained_escaped_and_links_runs_relatively(outputs: Path, tmp_path: Path) -> None:
    _proof_root(outputs, "good0001", "2026-11-26T09:00:00Z", "passed")
    _proof_root(outputs, "fail0002", "2026-11-26T10:00:00Z", "failed", memory=128)
    index.append(index.IndexEntry("<script>x</script>", "lab", "zz", "2026-11-26T11:00:00Z", 1.0,
                                  "passed", None, "nowhere"))
    page = report.write_report(tmp_path / "site" / "index.html", outputs).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert f'href="../outputs/{LANE}/' in page and page.count('id="diff-fail0002"') == 1
    assert ">memory_mib<" in page and 'href="#diff-fail0002"' in page


# -- in a browser ----------------------------------------------------------------------------
@pytest.mark.requires("chromium")
def test_report_renders_in_headless_chromium(outputs: Path) -> None:
    _proof_root(outputs, "good0001", "2026-11-26T09:00:00Z", "passed")
    failed = _proof_root(outputs, "fail0002", "2026-11-26T10:00:00Z", "failed", memory=128, health_s=4.0,
                         flaredb="failed")
    page = report.write_report(outputs=outputs)
    png = report.screenshot(page, failed.path(outputs) / "plots" / "report.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000  # text and tables, not blank
