"""End to end: the quickstart lane through papermill, its evidence, and cleanup on every exit path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from ..conftest import ROOT, Cli, assert_no_secret
from ..lab_fixtures import OwnRuns

LANE = "single-node-quickstart"
CANARY = "canary-token-5e1f9a7c2b"
PROOF_FILES = {f"{LANE}.ipynb", f"{LANE}.html", "result.json", "parameters.yaml", "environment.txt",
               "markers.csv", "timeline.csv", "faults.csv", "checks.csv", "plots", "logs", "SHA256SUMS"}


def test_lane_passes_with_complete_redacted_evidence(cli: Cli) -> None:
    done = cli.run(LANE, ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
    assert done.returncode == 0, done.stderr
    root = cli.latest(LANE)
    assert done.stdout.strip() == str(root)
    assert {p.name for p in root.iterdir()} >= PROOF_FILES
    nb = nbformat.read(root / f"{LANE}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    html = (root / f"{LANE}.html").read_text()
    assert 'src="http' not in html and 'href="http' not in html.split("<body")[0]  # self-contained
    assert "data:image/png;base64" in html  # plots inlined
    assert_no_secret(root, CANARY)
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "passed" and result["accelerator"] in ("kvm", "tcg")
    assert {s["name"] for s in result["skipped"]} == {"health: iam", "health: plasmavmc", "health: prismnet"}
    assert any("delivered to" in json.dumps(c.get("outputs", [])) for c in nb.cells)  # the token step's table
    env = (root / "environment.txt").read_text()
    assert "vm_accelerator_mode=" in env and "vm_accelerator_reason=" in env
    verdicts = [o for c in nb.cells for o in c.get("outputs", [])
                if "application/vnd.ucnb.result+json" in o.get("data", {})]
    assert verdicts and verdicts[0]["data"]["application/vnd.ucnb.result+json"]["verdict"] == "passed"
    assert cli("verify", str(root)).returncode == 0


def test_failing_lane_exits_nonzero_and_names_the_step(cli: Cli) -> None:
    done = cli.run(LANE, "-p", "stop_services=[flaredb]", "-p", "health_timeout_s=4")
    assert done.returncode == 1, done.stderr
    root = cli.latest(LANE)
    nbformat.validate(nbformat.read(root / f"{LANE}.ipynb", as_version=4))
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "failed" and result["error"]["type"] == "LaneFailure"
    assert result["failing_step"]["name"] == "wait: flaredb healthy"
    assert "Connection refused" in result["failing_step"]["last_observation"]


def test_plain_papermill_runs_the_notebook_with_its_defaults(cli: Cli, tmp_path: Path) -> None:
    executed = tmp_path / "executed.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", "-k", "ucnb",
                           str(ROOT / "notebooks" / f"{LANE}.ipynb"), str(executed)],
                          capture_output=True, text=True, env=cli.env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    roots = list((cli.outputs / LANE).glob("2*"))
    assert len(roots) == 1
    assert json.loads((roots[0] / "result.json").read_text())["verdict"] == "passed"


def _start_and_wait_for_domain(cli: Cli, own_runs: OwnRuns) -> subprocess.Popen[str]:
    """Start the lane and return once a domain of its run exists (other labs may come and go)."""
    proc = cli.start("run", LANE, "--no-progress")
    deadline = time.monotonic() + 120
    while not own_runs.discover().domains():
        assert proc.poll() is None, "the lane ended before its VM started"
        assert time.monotonic() < deadline, "no VM of this run appeared"
        time.sleep(0.2)
    return proc


def test_ctrl_c_cleans_up_and_keeps_the_notebook(cli: Cli, own_runs: OwnRuns) -> None:
    proc = _start_and_wait_for_domain(cli, own_runs)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground group on Ctrl-C
    assert proc.wait(timeout=120) == 130
    root = cli.latest(LANE)
    assert (root / f"{LANE}.ipynb").exists()
    assert json.loads((root / "result.json").read_text())["error"]["kind"] == "interrupted"


def test_kill_9_of_the_runner_then_lab_clean_leaves_nothing(cli: Cli, own_runs: OwnRuns) -> None:
    proc = _start_and_wait_for_domain(cli, own_runs)
    proc.kill()  # SIGKILL the runner alone: its kernel and VM are orphaned
    proc.wait(timeout=30)
    lab = own_runs.lab_id()
    assert own_runs.domains(), "the VM should outlive a killed runner until cleaned"
    done = cli("lab", "clean", lab, timeout=120)
    assert done.returncode == 0, done.stderr
    # own_runs checks at teardown that the kernel, the VM and the lab folder are gone


def test_keep_vm_leaves_a_reachable_lab_until_clean(cli: Cli, own_runs: OwnRuns) -> None:
    done = cli.run(LANE, "-p", "keep_vm=true")
    assert done.returncode == 0, done.stderr
    lab = own_runs.lab_id()
    try:
        rows = cli("lab", "status").stdout.splitlines()
        assert any(lab in row and "node01" in row and "running" in row for row in rows), rows
        nb = (cli.latest(LANE) / f"{LANE}.ipynb").read_text()
        assert "ucnb lab ssh" in nb and "ucnb lab clean" in nb
        hostname = cli("lab", "ssh", "node01", "--lab", lab, "hostname", timeout=60)
        assert hostname.stdout.strip() == "node01", hostname.stderr
        assert own_runs.domains(), "a kept lab outlives its run"
    finally:
        cli("lab", "clean", lab, timeout=120)
