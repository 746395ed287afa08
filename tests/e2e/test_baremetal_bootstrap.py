"""End to end: baremetal-iso's bootstrap contract through `ucnb run` (papermill) and the CLI.

TLS with the run's private CA, the binary cache and the two layouts (the default run, shared with
tests/e2e/test_baremetal.py); a CA that did not sign the deployer failing at phone-home; identity
overrides and the bundle path without a cache on a kept lab, which `hardware-smoke capture --ssh`
then checks, and fails once the node agent is stopped."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ucnb import paths
from ucnb.evidence.proof import read_environment

from ..conftest import ROOT, Cli
from ..lab_fixtures import assert_run_left_nothing
from .conftest import BOOTSTRAP_CANARY, SharedRun

UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)
LANE = "baremetal-iso"
CANARY = "canary-token-9c4e2a7b1d"


def _ucnb(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UCNB, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def _run(outputs: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    done = _ucnb("run", LANE, "--no-progress", *args, UCNB_OUTPUTS=str(outputs),
                 ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
    return done, (outputs / LANE / "latest").resolve()


def _checks(root: Path) -> dict[str, dict[str, str]]:
    with (root / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _assert_nothing_secret(root: Path, canary: str = CANARY) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert canary.encode() not in data, f"the token leaked into {path}"
            assert b"PRIVATE KEY" not in data, f"a private key reached the evidence: {path}"


@pytest.mark.runs_checked_by_module
def test_tls_binary_cache_and_two_layouts(baremetal_default: SharedRun) -> None:
    done, root = baremetal_default.done, baremetal_default.root
    assert done.returncode == 0, done.stderr[-3000:]
    checks = _checks(root)
    assert not [c for c in checks.values() if c["ok"] != "True"], checks
    # TLS: the deployer's certificate was issued by the run's CA, and both installers verified with it.
    issuer = checks["deployer certificate issuer"]
    assert issuer["observed"] == issuer["expected"] and "bootstrap CA" in issuer["observed"]
    assert json.loads((root / "result.json").read_text())["verdict"] == "passed"
    requests = [json.loads(line) for line in (root / "deployer/requests.jsonl").read_text().splitlines()]
    assert not [r for r in requests if r["method"] == "TLS"], "no handshake may fail in a good run"
    for node in ("control-plane", "worker"):
        assert checks[f"installer trusted the run CA {node}"]["observed"] == \
            checks[f"installer trusted the run CA {node}"]["expected"]
        # Systems from the binary cache, with the checksum the deployer publishes.
        assert checks[f"system source {node}"]["observed"] == "binary-cache"
        assert len(checks[f"system checksum {node}"]["observed"]) == 64
    cache = [json.loads(line) for line in (root / "binary-cache/requests.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in cache) == [
        "/bundles/baremetal-qemu-control-plane.tar.gz", "/bundles/baremetal-qemu-worker.tar.gz",
        "/systems/lab-system-1.tar.gz", "/systems/lab-system-1.tar.gz"]
    assert not [r for r in requests if r["path"].startswith("/api/v1/bundles/")], "all from the cache"
    # Two layouts, read back from the installed disks.
    gpt = json.loads((root / "disks/control-plane.json").read_text())["partitiontable"]
    dos = json.loads((root / "disks/worker.json").read_text())["partitiontable"]
    assert gpt["label"] == "gpt" and [p["name"] for p in gpt["partitions"]] == ["ESP", "root"]
    assert gpt["partitions"][1]["attrs"] == "LegacyBIOSBootable"
    assert dos["label"] == "dos" and [p.get("bootable") for p in dos["partitions"]] == [True]
    notebook = (root / "baremetal-iso.ipynb").read_text()
    assert "LegacyBIOSBootable" in notebook and "UC-ESP" in notebook   # the tables are shown per node
    _assert_nothing_secret(root, BOOTSTRAP_CANARY)


def test_a_ca_that_did_not_sign_the_deployer_fails_at_phone_home(outputs: Path, lab_host: None) -> None:
    done, root = _run(outputs, "-p", "installer_ca=other")
    assert done.returncode == 1, done.stderr[-3000:]
    assert_run_left_nothing(root)
    message = json.loads((root / "result.json").read_text())["error"]["message"]
    assert "pre-install.phone-home.failed.certificate-verification" in message
    assert "not trusted" in message   # the TLS client's own reason, on the console before the marker
    requests = [json.loads(line) for line in (root / "deployer/requests.jsonl").read_text().splitlines()]
    assert not [r for r in requests if r["path"] == "/api/v1/phone-home"], "no request may pass TLS"
    assert [r for r in requests if r["method"] == "TLS"], "the deployer saw the refused handshakes"
    assert float(read_environment(root)["wall_time_s"]) < 120, "a failure marker ends the lane at once"
    _assert_nothing_secret(root)


@pytest.mark.long(1)
def test_capture_over_ssh_on_a_kept_node_with_identity_overrides(outputs: Path, lab_host: None) -> None:
    done, root = _run(outputs, "-p", "keep_vm=true", "-p", "binary_cache=false",
                      "-p", "worker_node_id=worker-b7", "-p", "worker_hostname=worker-blue")
    lab_id = read_environment(root).get("lab_id", "")
    run_id = f"e2e-ssh-{lab_id}"
    run_dir = paths.work_root() / "hardware-smoke" / run_id
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        checks = _checks(root)
        assert checks["identity worker"]["observed"] == \
            "worker-b7 (kernel-parameter), worker-blue (kernel-parameter)"
        assert checks["identity control-plane"]["observed"] == \
            "control-plane (dmi-serial), control-plane (node-id)"
        assert checks["system source worker"]["observed"] == "deployer-bundle"   # no cache: the bundle
        assert checks["bundle source worker"]["observed"] == "deployer"
        state = json.loads((root / "deployer/state.json").read_text())["nodes"]
        assert state["worker-b7"]["phone_homes"][-1]["hostname"] == "worker-blue"
        assert not state.get("worker", {}).get("phone_homes")
        lab_state = json.loads((paths.labs_dir() / lab_id / "state.json").read_text())
        address = lab_state["nodes"]["worker"]["address"]

        pre = _ucnb("hardware-smoke", "preflight", "--run-id", run_id, "-p", "deployer_url=https://10.77.1.1:1",
                    "-p", "ssh_user=root", ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
        assert pre.returncode == 3, pre.stderr   # blocked (no USB, no BMC): capture works all the same
        passed = _ucnb("hardware-smoke", "capture", "--ssh", address, str(run_dir),
                       ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        capture = json.loads((run_dir / "capture.json").read_text())
        assert capture["node_agent"]["agent"] == "running" and capture["node_agent"]["status"] == "active"
        assert capture["ssh"] == f"root@{address}:22"
        assert all(c["ok"] for c in capture["checks"])

        stop = _ucnb("lab", "ssh", "--lab", lab_id, "worker", "sv down /run/service/node-agent", timeout=60)
        assert stop.returncode == 0, stop.stderr
        failed = _ucnb("hardware-smoke", "capture", "--ssh", address, str(run_dir),
                       ULTRACLOUD_BOOTSTRAP_TOKEN=CANARY)
        assert failed.returncode == 1
        assert "missing marker desired-system-active" in failed.stdout
        assert "node agent stopped" in failed.stdout
        for path in run_dir.rglob("*"):
            assert CANARY.encode() not in path.read_bytes(), path
    finally:
        if lab_id:
            _ucnb("lab", "clean", lab_id, timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)
    assert_run_left_nothing(root)


@pytest.mark.runs_checked_by_module   # refused before any run: there is no run of it to check
def test_plain_http_without_allow_unauthenticated_is_refused_before_any_vm(outputs: Path) -> None:
    done = _ucnb("run", LANE, "--no-progress", "-p", "tls=false", UCNB_OUTPUTS=str(outputs), timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tls: plain HTTP" in done.stderr and "allow_unauthenticated" in done.stderr
    made = [p.read_text() for p in outputs.rglob("environment.txt")]
    assert not [text for text in made if "lab_id=" in text], "bad parameters must stop before any lab"
