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
import pytest

from .conftest import ROOT, SESSION_RUNS, kernel_processes, leftovers

pytestmark = pytest.mark.e2e
UCNB = str(ROOT / ".venv/bin/ucnb")
LANE = "single-node-quickstart"
CANARY = "canary-token-5e1f9a7c2b"
PROOF_FILES = {f"{LANE}.ipynb", f"{LANE}.html", "result.json", "parameters.yaml", "environment.txt",
               "markers.csv", "timeline.csv", "faults.csv", "checks.csv", "plots", "logs", "SHA256SUMS"}


def _env(outputs: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "UCNB_OUTPUTS": str(outputs), **extra}


def _run(outputs: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UCNB, "run", LANE, "--no-progress", *args], capture_output=True, text=True,
                          env=_env(outputs, **extra), timeout=600)


def _proof_root(outputs: Path) -> Path:
    return (outputs / LANE / "latest").resolve()


def test_lane_passes_with_complete_redacted_evidence(outputs: Path, no_leaks: None) -> None:
    done = _run(outputs, ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
    assert done.returncode == 0, done.stderr
    root = _proof_root(outputs)
    assert done.stdout.strip() == str(root)
    assert {p.name for p in root.iterdir()} >= PROOF_FILES
    nb = nbformat.read(root / f"{LANE}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    html = (root / f"{LANE}.html").read_text()
    assert 'src="http' not in html and 'href="http' not in html.split("<body")[0]  # self-contained
    assert "data:image/png;base64" in html  # plots inlined
    for path in root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"secret leaked into {path}"
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "passed" and result["accelerator"] in ("kvm", "tcg")
    assert {s["name"] for s in result["skipped"]} == {"health: iam", "health: plasmavmc", "health: prismnet"}
    assert any("'delivered'" in json.dumps(c.get("outputs", [])) for c in nb.cells)
    env = (root / "environment.txt").read_text()
    assert "vm_accelerator_mode=" in env and "vm_accelerator_reason=" in env
    verdicts = [o for c in nb.cells for o in c.get("outputs", [])
                if "application/vnd.ucnb.result+json" in o.get("data", {})]
    assert verdicts and verdicts[0]["data"]["application/vnd.ucnb.result+json"]["verdict"] == "passed"
    assert subprocess.run([UCNB, "verify", str(root)], capture_output=True).returncode == 0


def test_failing_lane_exits_nonzero_and_names_the_step(outputs: Path, no_leaks: None) -> None:
    done = _run(outputs, "-p", "stop_services=[flaredb]", "-p", "health_timeout_s=4")
    assert done.returncode == 1, done.stderr
    root = _proof_root(outputs)
    nbformat.validate(nbformat.read(root / f"{LANE}.ipynb", as_version=4))
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "failed" and result["error"]["type"] == "LaneFailure"
    assert result["failing_step"]["name"] == "wait: flaredb healthy"
    assert "Connection refused" in result["failing_step"]["last_observation"]


def test_plain_papermill_runs_the_notebook_with_its_defaults(outputs: Path, tmp_path: Path,
                                                              no_leaks: None) -> None:
    executed = tmp_path / "executed.ipynb"
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "papermill", "-k", "ucnb",
                           str(ROOT / "notebooks" / f"{LANE}.ipynb"), str(executed)],
                          capture_output=True, text=True, env=_env(outputs), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    roots = list((outputs / LANE).glob("2*"))
    assert len(roots) == 1
    assert json.loads((roots[0] / "result.json").read_text())["verdict"] == "passed"


def _run_id(outputs: Path) -> str:
    """The run id of the one run under `outputs` (its proof root is `<stamp>-<run id>`)."""
    (root,) = (outputs / LANE).glob("2*")
    return root.name.rsplit("-", 1)[1]


def _new_lab(outputs: Path) -> str:
    """This test's run's lab (tests look only at their own: other labs may be running)."""
    from ucnb.lab.registry import list_labs

    (lab,) = {s.lab_id for s in list_labs() if s.run_id == _run_id(outputs)}
    return lab


def _start_and_wait_for_domain(outputs: Path) -> subprocess.Popen[bytes]:
    from ucnb.lab.registry import connect, tagged_domains

    proc = subprocess.Popen([UCNB, "run", LANE, "--no-progress"], env=_env(outputs),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120

    def domain_of_this_run() -> bool:
        roots = list((outputs / LANE).glob("2*"))
        return bool(roots) and any(t.run_id == _run_id(outputs) for t in tagged_domains(connect())
                                   if t.domain.isActive())

    while not domain_of_this_run():
        assert proc.poll() is None, "the lane ended before its VM started"
        assert time.monotonic() < deadline, "no VM appeared"
        time.sleep(0.2)
    return proc


def test_ctrl_c_cleans_up_and_keeps_the_notebook(outputs: Path, no_leaks: None) -> None:
    proc = _start_and_wait_for_domain(outputs)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground group on Ctrl-C
    assert proc.wait(timeout=120) == 130
    root = _proof_root(outputs)
    assert (root / f"{LANE}.ipynb").exists()
    assert json.loads((root / "result.json").read_text())["error"]["kind"] == "interrupted"


def test_kill_9_of_the_runner_then_lab_clean_leaves_nothing(outputs: Path, no_leaks: None) -> None:
    proc = _start_and_wait_for_domain(outputs)
    proc.kill()  # SIGKILL the runner alone: its kernel and VM are orphaned
    proc.wait(timeout=30)
    lab = _new_lab(outputs)
    assert any(item.startswith("domain ") for item in leftovers({_run_id(outputs)})), \
        "the VM should outlive a killed runner until cleaned"
    done = subprocess.run([UCNB, "lab", "clean", lab], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    time.sleep(0.5)
    assert kernel_processes({_run_id(outputs)}) == []


def test_keep_vm_leaves_a_reachable_lab_until_clean(outputs: Path, no_leaks: None) -> None:
    done = _run(outputs, "-p", "keep_vm=true")
    assert done.returncode == 0, done.stderr
    lab = _new_lab(outputs)
    try:
        status = subprocess.run([UCNB, "lab", "status"], capture_output=True, text=True)
        assert "node01" in status.stdout and "running" in status.stdout
        nb = (_proof_root(outputs) / f"{LANE}.ipynb").read_text()
        assert "ucnb lab ssh" in nb and "ucnb lab clean" in nb
        hostname = subprocess.run([UCNB, "lab", "ssh", "node01", "--lab", lab, "hostname"],
                                  capture_output=True, text=True, timeout=60)
        assert hostname.stdout.strip() == "node01", hostname.stderr
    finally:
        subprocess.run([UCNB, "lab", "clean", lab], capture_output=True, timeout=120)


def test_no_leftovers_after_the_suite() -> None:
    """Runs last in this module: nothing from any lane run of this session is still around
    (other sessions' and other users' labs on the host are not this session's to judge)."""
    assert sys.platform == "linux"
    assert not leftovers(SESSION_RUNS) and kernel_processes(SESSION_RUNS) == []
