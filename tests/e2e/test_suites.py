"""The portable suite for real (guards, the quickstart, every portable lane) with its JUnit and
report, and a kept lab (the quickstart's, shared with tests/e2e/test_quickstart.py) reattached from
a new process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from junitparser import JUnitXml

from ucnb.evidence import index
from ucnb.lab.registry import list_labs

from .conftest import SharedRun


@pytest.mark.runs_checked_by_module   # portable_suite checks its runs left nothing
@pytest.mark.long(1)
def test_portable_suite_passes_for_real_with_parseable_junit(portable_suite: SharedRun) -> None:
    cli, done, root, junit_file = (portable_suite.cli, portable_suite.done, portable_suite.root,
                                   portable_suite.junit)
    outputs = cli.outputs
    assert done.returncode == 0, done.stdout + done.stderr
    assert root.parent == outputs / "suites" / "portable" and "suite portable: PASSED" in done.stdout
    summary = json.loads((root / "suite.json").read_text())
    assert summary["verdict"] == "passed"
    lane = next(e for e in summary["entries"] if e["name"] == "single-node-quickstart")
    proof_root = root / lane["proof_root"]
    assert json.loads((proof_root / "result.json").read_text())["verdict"] == "passed"
    assert cli("verify", str(proof_root)).returncode == 0
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    assert junit_file is not None
    xml = JUnitXml.fromfile(str(junit_file))
    by_name = {s.name: s for s in xml}
    assert {"guard: profiles", "guard: surface", "single-node-quickstart"} <= set(by_name)
    quickstart = by_name["single-node-quickstart"]
    assert quickstart.failures == 0 and quickstart.skipped >= 3  # iam, plasmavmc, prismnet
    assert any("boot [node01]" in case.name and case.is_passed for case in quickstart)
    entries = index.load(outputs)
    assert sorted((e.kind, e.lane, e.verdict) for e in entries) == [
        ("lane", "deployer-vm-smoke", "passed"), ("lane", "single-node-quickstart", "passed"),
        ("suite", "portable", "passed")]
    assert all(e.path(outputs).is_dir() for e in entries)
    assert next(e for e in entries if e.kind == "lane").suite == f"portable/{root.name}"
    # The report of this run, as a reviewer's browser shows it (the PNG stays with the suite root).
    page = cli("report", "--output", str(root / "report.html"), "--screenshot", str(root / "report.png"),
               timeout=180)
    assert page.returncode == 0, page.stderr
    html = (root / "report.html").read_text()
    assert f'href="{lane["proof_root"]}/single-node-quickstart.html"' in html
    png = (root / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


@pytest.mark.runs_checked_by_module   # kept_quickstart cleans the lab and checks nothing is left
def test_a_kept_lab_is_reattached_from_a_new_process(kept_quickstart: SharedRun) -> None:
    cli, done, lab_id = kept_quickstart.cli, kept_quickstart.done, kept_quickstart.lab_id
    assert done.returncode == 0, done.stderr
    shown = cli("lab", "attach", lab_id, "--probe", timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"lab = ucnb.attach('{lab_id}')" in shown.stdout and "running" in shown.stdout
    script = (f"import ucnb\nlab = ucnb.attach({lab_id!r})\nnode = lab['node01']\n"
              f"print(node.run('hostname', check=True).stdout.strip(), node.running(), "
              f"len(node.spec.nics), node.spec.memory_mib)\n")
    attached = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=cli.env(), timeout=120)
    assert attached.stdout.split() == ["node01", "True", "1", "256"], attached.stderr
    assert lab_id in {s.lab_id for s in list_labs()}, "an attached lab outlives the process"
