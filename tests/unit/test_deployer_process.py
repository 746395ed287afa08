"""The reference deployer as its own process, on loopback: a pre-registration survives a restart
of the process, and replaying the same request changes nothing."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ucnb.reference.deployer_process import DeployerProcess

from .test_deployer import ADMIN, CLUSTER, TOKEN


def _call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN}"})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def deployer(tmp_path: Path) -> Iterator[DeployerProcess]:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    process = DeployerProcess(tmp_path / "state", cluster, host="127.0.0.1", bootstrap_token=TOKEN,
                              admin_token=ADMIN, bundle_dir=tmp_path / "bundles",
                              log=tmp_path / "deployer.log")
    yield process
    process.stop()


def test_a_pre_registration_survives_a_process_restart_and_replays_idempotently(
        deployer: DeployerProcess, tmp_path: Path) -> None:
    body = {"node_id": "node07", "hostname": "node07", "class": "worker"}
    deployer.start()
    first_pid = deployer.pid
    status, created = _call(deployer.url, "POST", "/api/v1/admin/nodes/pre-register", body)
    assert status == 201 and created["node_id"] == "node07"

    deployer.restart()
    assert deployer.pid != first_pid and deployer.starts == 2
    status, listed = _call(deployer.url, "GET", "/api/v1/admin/nodes")
    entry = next(n for n in listed["nodes"] if n["node_id"] == "node07")
    assert entry["source"] == "pre-registered" and entry["registration"] == created

    status, replayed = _call(deployer.url, "POST", "/api/v1/admin/nodes/pre-register", body)
    assert (status, replayed) == (200, created)   # the same resource, nothing written
    _, after = _call(deployer.url, "GET", "/api/v1/admin/nodes")
    assert [n["node_id"] for n in after["nodes"]].count("node07") == 1
    assert len(after["nodes"]) == len(listed["nodes"])
    # the tokens travelled by environment, never argv or the state
    assert ADMIN not in (tmp_path / "state" / "state.json").read_text()


def test_stop_is_idempotent_and_a_dead_start_says_why(tmp_path: Path) -> None:
    process = DeployerProcess(tmp_path / "state", tmp_path / "missing.yaml", host="127.0.0.1",
                              bootstrap_token=TOKEN, admin_token=ADMIN, bundle_dir=tmp_path / "b",
                              log=tmp_path / "deployer.log")
    from ucnb.errors import InfrastructureError

    with pytest.raises(InfrastructureError, match="did not start"):
        process.start(timeout=20)
    assert process.pid is None and process.stop() is None
