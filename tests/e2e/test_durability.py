"""End to end: durability-proof on the lab through `ucnb run` (papermill), and a restore that
loses one key on purpose, which must fail the lane naming that key. (Bad parameters: tests/unit.)"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Cli

LANE = "durability-proof"
# What these tests prove comes after the boot, and the cluster's cold boot is fresh-smoke's and the
# membership proof's (tests/e2e/test_cluster.py): the first run here saves the just-booted cluster
# (when no snapshot of it exists yet), the second, in the same cluster slot, restores it.
WARM = ("-p", "boot_mode=restore")


def _run(cli: Cli, *args: str) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]]:
    """The lane through `ucnb run` (the e2e layer's own_runs then checks the lab and the deployer
    process are gone)."""
    done = cli.run(LANE, *WARM, *args, timeout=900)
    root = cli.latest(LANE)
    return done, root, json.loads((root / "result.json").read_text())


def _checks(root: Path) -> dict[str, dict[str, str]]:
    with (root / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {name: figure["value"] for name, figure in result["figures"].items()}


@pytest.mark.long(1.5)
@pytest.mark.cluster
def test_durability_proof_passes_with_its_evidence(cli: Cli) -> None:
    done, root, result = _run(cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["success"] is True and result["verdict"] == "passed"

    figures = _figures(result)
    assert figures["known keys restored"] == 200
    assert figures["keys restored"] == figures["keys at the snapshot revision"] >= 200
    assert figures["restore digest equal"] is True
    assert figures["rows restored"] == 500 + (500 - 500 // 7)   # the kv table and ours, gaps kept
    assert figures["row digests equal"] is True
    assert figures["replay idempotent"] is True
    assert figures["writes failed inside the fault window"] > 0
    assert figures["acknowledged disk writes lost"] == 0
    assert figures["acknowledged writes lost"] == 0

    checks = _checks(root)
    for name in ("restore: exactly one leader", "restore: the same revision on every member",
                 "restore: hashkv equal on every member", "restore: a new cluster (new cluster ID)",
                 "restore: hashkv equal to the source's at the snapshot revision",
                 "flaredb: integrity_check of the restored database",
                 "deployer: replay returns the same resource",
                 "deployer: entries for node07 after the replay",
                 "disk writes inside the window: all failed",
                 "disk writes before the window: all acknowledged",
                 "disk writes after the window: all acknowledged", "acknowledged disk writes read back"):
        assert checks[name]["ok"] == "True", (name, checks[name])
    assert checks["flaredb: integrity_check of the restored database"]["observed"] == "ok"
    assert checks["deployer: entries for node07 after the replay"]["observed"] == "1"

    # The backup artifacts: a real etcd snapshot at the recorded revision, the dump, the request.
    snapshot = root / "backup" / "chainfire-snapshot.db"
    recorded = json.loads((root / "backup" / "chainfire-snapshot-status.json").read_text())
    status = json.loads(subprocess.run(["etcdctl", "snapshot", "status", str(snapshot), "-w", "json"],
                                       capture_output=True, text=True, check=True, timeout=60).stdout)
    assert (status["revision"], status["hash"]) == (recorded["revision"], recorded["hash"])
    assert figures["snapshot revision"] == recorded["revision"]
    assert "INSERT INTO durability_rows" in (root / "backup" / "flaredb-dump.sql").read_text()
    request = json.loads((root / "backup" / "deployer-pre-register-request.json").read_text())
    assert request["body"]["node_id"] == "node07" and "never stored" in request["headers"]["Authorization"]
    post_restart = json.loads((root / "deployer-post-restart-list.json").read_text())
    assert [n["source"] for n in post_restart["nodes"] if n["node_id"] == "node07"] == ["pre-registered"]
    for path in root.rglob("*"):   # the generated admin and bootstrap tokens never reached an artifact
        if path.is_file():
            data = path.read_bytes()
            assert b"uc-admin-" not in data and b"uc-boot-" not in data, path

    # The disk fault is a row of faults.csv at least as long as the hold, and the write log agrees.
    faults = list(csv.DictReader((root / "faults.csv").open()))
    assert [f["kind"] for f in faults] == ["disk_error"]
    assert faults[0]["targets"] == "node02:virtio-ucnb-data"
    assert float(faults[0]["end"]) - float(faults[0]["start"]) >= 3.0
    writes = list(csv.DictReader((root / "storage-fault-writes.csv").open()))
    inside = [w for w in writes if w["phase"] == "inside"]
    assert inside and all(w["ok"] == "False" and w["reads_back"] == "False" for w in inside)
    assert (root / "plots" / "disk-writes.png").stat().st_size > 10_000

    skipped = {s["name"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"artifact coronafs-node04-local-state.json",
                            "artifact lightningstor-head-during-node05-outage.json"}
    assert all("no CoronaFS" in r or "no LightningStor" in r for r in skipped.values())


@pytest.mark.long(1)
@pytest.mark.cluster
def test_a_key_dropped_from_the_restore_fails_the_lane_naming_it(cli: Cli) -> None:
    done, _, result = _run(cli, "-p", "drop_key_on_restore=durability/key-0007", "-p", "key_count=20",
                           "-p", "sql_rows=20")
    assert done.returncode == 1, done.stderr[-3000:]
    assert result["success"] is False
    assert result["failing_step"]["name"] == "verify the restore"
    assert "durability/key-0007" in result["failing_step"]["last_observation"]
    assert "durability/key-0007" in result["error"]["message"]
    failed = {c["name"]: c for c in result["failed_checks"]}
    assert failed["restore: keys and values on node01"]["observed"] == "missing 1: durability/key-0007"
    assert failed["restore: known keys restored"]["observed"] == "19"
