"""Scale-out for real: the portable suite with two lanes side by side has a serial run's entries,
verdicts, JUnit and evidence files; Ctrl-C of a parallel suite ends every lane with 130 and leaves
nothing; a suite fanned out as a CI matrix would run it (each job its own process and outputs
folder, all at once) merges into one passing report, JUnit and verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from junitparser import JUnitXml

from ucnb.files import read_kv
from ucnb.runner.suites import evidence_files, plan

from ..conftest import Cli
from ..lab_fixtures import runs_in
from .conftest import SharedRun

LANES = ("single-node-quickstart", "deployer-vm-smoke")


def _suite(cli: Cli, outputs: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    done = cli("suite", "portable", "--no-progress", *args, timeout=1200, UCNB_OUTPUTS=str(outputs))
    lines = done.stdout.strip().splitlines()
    assert lines and Path(lines[-1]).is_dir(), done.stdout + done.stderr
    return done, Path(lines[-1])


def _junit_cases(path: Path) -> list[tuple[str, list[tuple[str, bool, bool]]]]:
    """(testsuite, [(case, passed, skipped)]) in document order, run-specific text left out."""
    return [(s.name, [(c.name, c.is_passed, c.is_skipped) for c in s]) for s in JUnitXml.fromfile(str(path))]


@pytest.mark.long(1)   # the portable suite once, serially (its --jobs 2 run is the shared one)
def test_two_jobs_give_the_serial_runs_entries_verdicts_junit_and_evidence_files(
        cli: Cli, tmp_path: Path, portable_suite: SharedRun) -> None:
    started = time.monotonic()
    serial, serial_root = _suite(cli, tmp_path / "serial", "--jobs", "1")
    serial_s = time.monotonic() - started
    side, side_root, side_s = portable_suite.done, portable_suite.root, portable_suite.wall_s
    assert serial.returncode == 0 and side.returncode == 0, side.stdout + side.stderr
    one, two = (json.loads((r / "suite.json").read_text()) for r in (serial_root, side_root))
    assert (one["jobs"], two["jobs"]) == (1, 2)
    def shape(summary: dict[str, list[dict[str, str]]]) -> list[tuple[str, str, str]]:
        return [(e["kind"], e["name"], e["status"]) for e in summary["entries"]]

    assert shape(one) == shape(two), "the same entries, in the suite's order"
    assert [e["name"] for e in two["entries"]] == [e.name for e in plan("portable").entries]
    assert evidence_files(serial_root) == evidence_files(side_root)
    assert _junit_cases(serial_root / "junit.xml") == _junit_cases(side_root / "junit.xml")
    lanes = {e["name"]: e for e in two["entries"] if e["kind"] == "lane"}
    environments = {name: read_kv(side_root / e["proof_root"] / "environment.txt")
                    for name, e in lanes.items()}
    for name, env in environments.items():
        (other,) = set(LANES) - {name}
        assert env["suite_jobs"] == "2" and env["suite_ran_alongside"] == other, env
    assert environments[LANES[0]]["lab_id"] != environments[LANES[1]]["lab_id"]
    for e in one["entries"]:
        if e["kind"] == "lane":
            assert read_kv(serial_root / e["proof_root"] / "environment.txt")["suite_ran_alongside"] == "none"
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=side_root).returncode == 0
    for root in (serial_root, side_root):   # the suite's lanes ran under papermill, said at its root too
        assert read_kv(root / "environment.txt")["execution_model"] == "papermill"
    print(f"FIGURE portable suite: --jobs 1 {serial_s:.1f}s, --jobs 2 {side_s:.1f}s (wall, one run each, "
          f"not at the same moment; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def _active_runs() -> set[str]:
    """Run ids of the running lab domains (of anyone's)."""
    from ucnb.lab.registry import connect, tagged_domains

    return {t.run_id for t in tagged_domains(connect()) if t.running}


def test_ctrl_c_of_a_parallel_suite_ends_every_lane_with_130(cli: Cli, tmp_path: Path) -> None:
    outputs = tmp_path / "interrupted"
    proc = cli.start("suite", "portable", "--jobs", "2", "--only", ",".join(LANES), "--no-progress",
                     UCNB_OUTPUTS=str(outputs))
    try:
        deadline = time.monotonic() + 300
        while True:   # both lanes have a VM up: then Ctrl-C, as a terminal sends it
            assert proc.poll() is None, "the suite ended before both lanes had a VM"
            assert time.monotonic() < deadline, "the two lanes never ran together"
            runs = runs_in(outputs)
            if len(runs) == 2 and runs <= _active_runs():
                break
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=240) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (root,) = (outputs / "suites" / "portable").glob("2*")
    summary = json.loads((root / "suite.json").read_text())
    assert (summary["verdict"], summary["exit_code"]) == ("failed", 130)
    for entry in summary["entries"]:
        assert (entry["status"], entry["exit_code"]) == ("failed", 130), entry
        result = json.loads((root / entry["proof_root"] / "result.json").read_text())
        assert result["error"]["kind"] == "interrupted", result["error"]
        assert (root / entry["proof_root"] / f"{entry['name']}.ipynb").exists()
    # own_runs (this layer's teardown) checks that neither lane left a domain, network or process.


@pytest.mark.long(1.5)
def test_a_suite_fanned_out_as_a_ci_matrix_merges_into_one_passing_verdict(cli: Cli, tmp_path: Path) -> None:
    shown = cli("suite", "portable", "--matrix", timeout=120)
    assert shown.returncode == 0, shown.stderr
    jobs = json.loads(shown.stdout)["include"]
    assert [j["id"] for j in jobs] == ["guards", *LANES]
    folders = [tmp_path / "artifacts" / f"portable-{job['id']}" for job in jobs]
    runners = [cli.start("suite", "portable", "--only", job["only"], "--no-progress",
                         UCNB_OUTPUTS=str(folder))
               for job, folder in zip(jobs, folders, strict=True)]   # each job on its own, all at once
    assert [r.wait(timeout=1200) for r in runners] == [0] * len(jobs)
    site = tmp_path / "site"
    merged = cli("report", *map(str, folders), "--suite", "portable", "--junit", str(site / "junit.xml"),
                 "--output", str(site / "report.html"), timeout=300)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "suite portable: PASSED" in merged.stdout
    cases = _junit_cases(site / "junit.xml")
    assert [name for name, _ in cases] == ["guard: profiles", "guard: surface", *LANES]
    assert all(passed or skipped for _, suite in cases for _, passed, skipped in suite)
    html = (site / "report.html").read_text()
    assert "<h2>Suite portable: " in html
    for lane in LANES:
        assert f'/{lane}.html"' in html and 'href="../artifacts/portable-' in html
