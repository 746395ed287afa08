"""End to end: the quickstart lane through papermill, its evidence, and cleanup on every exit path."""

from __future__ import annotations

import html as html_mod
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from ..conftest import ROOT, Cli, assert_no_secret, assert_reviewable_evidence
from ..lab_fixtures import ABANDONS_LABS, OwnRuns
from .conftest import SharedRun

LANE = "single-node-quickstart"
CANARY = "canary-token-5e1f9a7c2b"
PROOF_FILES = {f"{LANE}.ipynb", f"{LANE}.html", "result.json", "parameters.yaml", "environment.txt",
               "markers.csv", "timeline.csv", "faults.csv", "checks.csv", "plots", "logs", "SHA256SUMS"}


def _page_text(root: Path) -> str:
    """The lane's HTML page as a reader sees its text (tags stripped, whitespace collapsed)."""
    body = (root / f"{LANE}.html").read_text()
    return re.sub(r"\s+", " ", html_mod.unescape(re.sub(r"<[^>]+>", " ", body[body.index("<body"):])))


def _first_screen(root: Path) -> tuple[Path, list[tuple[int, int, int]]]:
    """Headless Chromium's first 1280x800 of the page, kept in the proof root, and its colours."""
    from PIL import Image

    from ucnb.evidence.report import screenshot

    png = screenshot(root / f"{LANE}.html", root / "first-screen-1280x800.png", 1280, 800)
    with Image.open(png) as image:
        assert image.size == (1280, 800)
        return png, [c for _, c in image.convert("RGB").getcolors(1280 * 800) or []]


def _has_colour(colours: list[tuple[int, int, int]], hex_colour: str) -> bool:
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return any(all(abs(a - b) <= 6 for a, b in zip(c, want, strict=True)) for c in colours)


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
    assert "data:image/png;base64" in html  # plots inlined
    assert_no_secret(root, CANARY)
    assert_reviewable_evidence(root, secret=CANARY)  # self-contained, banner first, 0644, no canary
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "passed" and result["accelerator"] in ("kvm", "tcg")
    assert {s["name"] for s in result["skipped"]} == {"health: iam", "health: plasmavmc", "health: prismnet"}
    assert result["verdict_label"] == "passed with gaps"
    assert result["figures"]["required components exercised"] == {"value": 2, "unit": "of 5"}
    assert result["harness"]["commit"] and "harness_commit=" in (root / "environment.txt").read_text()
    assert "execution_model=papermill\n" in (root / "environment.txt").read_text()   # written by the runner
    text = _page_text(root)
    assert "/lab/etc/iam-bootstrap-token" in text  # the token was delivered (the table says where)
    assert text.index("PASSED WITH GAPS") < text.index("What this lane proves")
    assert "2 of 5 required components exercised; 3 skipped: iam (the lab has no stand-in" in text
    assert "The notebook stopped before its last cell" not in text
    # every guest command with its output; the manifest as read back; guest logs pulled in
    commands = (root / "logs" / "node01-commands.log").read_text()
    assert '"schema": "ucnb.product-surface/v1"' in commands and "  stdout:" in commands
    assert json.loads((root / "logs" / "node01-product-surface.json").read_text())["platform"] == "lab"
    assert "etcd Version" in (root / "logs" / "node01-services.log").read_text()
    assert (root / "logs" / "node01-dmesg.log").stat().st_size > 1000
    assert "ucnb.single-node-quickstart" in (root / "junit.xml").read_text()
    png, colours = _first_screen(root)
    assert _has_colour(colours, "#f2cc60"), f"{png}: no PASSED WITH GAPS banner on the first screen"
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
    # the notebook stopped in a middle cell: the page still opens with the verdict, and has the
    # timeline, the run facts and the links
    assert_reviewable_evidence(root)
    text = _page_text(root)
    assert text.index("FAILED") < text.index("failing step") < text.index("What this lane proves")
    assert "failing step wait: flaredb healthy [node01]" in text
    assert re.search(r"last observation timeout after \d+ tries; last: exit 1: .*Connection refused", text)
    assert "1 of 5 required components exercised; 3 skipped: " in text and "1 failed: flaredb" in text
    assert "The notebook stopped before its last cell" in text
    assert (root / "plots" / "timeline.png").stat().st_size > 10_000
    assert 'href="logs/node01-dmesg.log"' in (root / f"{LANE}.html").read_text()
    assert "run: /run/service/chainfire" in (root / "logs" / "node01-services.log").read_text()
    png, colours = _first_screen(root)
    assert _has_colour(colours, "#cf222e"), f"{png}: no FAILED banner on the first screen"


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


@ABANDONS_LABS
def test_kill_9_of_the_runner_then_lab_clean_leaves_nothing(cli: Cli, own_runs: OwnRuns) -> None:
    proc = _start_and_wait_for_domain(cli, own_runs)
    proc.kill()  # SIGKILL the runner alone: its kernel and VM are orphaned
    proc.wait(timeout=30)
    lab = own_runs.lab_id()
    assert own_runs.domains(), "the VM should outlive a killed runner until cleaned"
    done = cli("lab", "clean", lab, timeout=120)
    assert done.returncode == 0, done.stderr
    # own_runs checks at teardown that the kernel, the VM and the lab folder are gone


@pytest.mark.runs_checked_by_module   # kept_quickstart cleans the lab and checks nothing is left
def test_keep_vm_leaves_a_reachable_lab_until_clean(kept_quickstart: SharedRun) -> None:
    cli, done, lab = kept_quickstart.cli, kept_quickstart.done, kept_quickstart.lab_id
    assert done.returncode == 0, done.stderr
    rows = cli("lab", "status").stdout.splitlines()
    assert any(lab in row and "node01" in row and "running" in row for row in rows), rows
    nb = (kept_quickstart.root / f"{LANE}.ipynb").read_text()
    assert "ucnb lab ssh" in nb and "ucnb lab clean" in nb
    hostname = cli("lab", "ssh", "node01", "--lab", lab, "hostname", timeout=60)
    assert hostname.stdout.strip() == "node01", hostname.stderr
    assert OwnRuns(kept_quickstart.root).discover().domains(), "a kept lab outlives its run"


def test_a_stopped_chainfire_fails_its_health_probe(cli: Cli) -> None:
    """The negative control of the chainfire probe (etcd's /health): it notices etcd is down."""
    done = cli.run(LANE, "-p", "stop_services=[chainfire]", "-p", "health_timeout_s=4")
    assert done.returncode == 1, done.stderr
    result = json.loads((cli.latest(LANE) / "result.json").read_text())
    assert result["failing_step"]["name"] == "wait: chainfire healthy"
