"""The reference deployer over real HTTP on loopback (127.0.0.1, port 0)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ucnb.errors import ParameterError
from ucnb.reference import load_cluster
from ucnb.reference.deployer import REQUEST_LOG, STATE_FILE, Deployer

from ..conftest import ROOT

TOKEN = "canary-bootstrap-7f3a9c1e5b"
ADMIN = "canary-admin-2d8e4f6a0c"

CLUSTER = """\
ultracloud:
  cluster:
    name: test
    node_classes:
      control-plane:
        install_plan:
          nixos_configuration: baremetal-qemu-control-plane
          disko_config_path: nix/disko/control-plane.nix
          target_disk_by_id: /dev/disk/by-id/virtio-uc-control-root
        desired_system:
          target_system: /systems/control-plane-1
          health_check_command: "true"
      worker:
        install_plan:
          nixos_configuration: baremetal-qemu-worker
          disko_config_path: nix/disko/worker.nix
          target_disk_by_id: /dev/disk/by-id/virtio-uc-worker-root
    nodes:
      node01: {class: control-plane}
      node02: {class: worker, hostname: worker-a}
"""


class Client:
    """A minimal JSON client over http.client: no proxies, so traffic cannot leave loopback."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        self.host, self.port = parts.hostname, parts.port or 80
        self.seen: list[bytes] = []   # every response body, for the canary test

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.seen.append(payload)
            is_json = response.getheader("Content-Type") == "application/json"
            parsed = json.loads(payload) if is_json else payload
            return response.status, parsed, dict(response.getheaders())
        finally:
            connection.close()


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    bundle = tmp_path / "bundles" / "baremetal-qemu-control-plane"
    (bundle / "etc").mkdir(parents=True)
    (bundle / "etc" / "hostname").write_text("node01\n")
    (bundle / "system").write_text("control-plane system\n")
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def deployer(state_dir: Path, cluster_file: Path) -> Iterator[Deployer]:
    with Deployer(state_dir, cluster_file, bootstrap_token=TOKEN, admin_token=ADMIN) as running:
        yield running


@pytest.fixture
def client(deployer: Deployer) -> Client:
    return Client(deployer.url)


def phone_home(client: Client, token: str | None = TOKEN, node_id: str = "node01") -> tuple[int, Any]:
    status, body, _ = client.call("POST", "/api/v1/phone-home",
                                  {"node_id": node_id, "hostname": node_id, "mac": "52:54:00:00:00:01",
                                   "disks": ["/dev/disk/by-id/virtio-uc-control-root"]}, token=token)
    return status, body


REGISTRATION = {"node_id": "node07", "hostname": "node07", "class": "worker", "mac": "52:54:00:00:00:07"}


def test_phone_home_with_token_answers_the_install_plan(client: Client) -> None:
    status, body = phone_home(client)
    assert status == 200
    assert body["install_plan"] == {"nixos_configuration": "baremetal-qemu-control-plane",
                                    "disko_config_path": "nix/disko/control-plane.nix",
                                    "target_disk_by_id": "/dev/disk/by-id/virtio-uc-control-root"}
    assert body["bundle_url"].endswith("/api/v1/bundles/baremetal-qemu-control-plane")
    assert body["desired_system"] == {"target_system": "/systems/control-plane-1",
                                      "health_check_command": "true", "generation": 1}
    assert len(body["bundle_sha256"]) == 64


@pytest.mark.parametrize("token, reason", [(None, "missing"), ("wrong-token-123", "does not match")])
def test_phone_home_without_the_right_token_is_401(client: Client, token: str | None, reason: str) -> None:
    status, body = phone_home(client, token=token)
    assert status == 401
    assert body["error"] == "unauthorized" and reason in body["reason"]


def test_unknown_node_is_404(client: Client) -> None:
    status, body = phone_home(client, node_id="node99")
    assert (status, body["error"]) == (404, "unknown-node")


def test_allow_unauthenticated(state_dir: Path, cluster_file: Path) -> None:
    with Deployer(state_dir, cluster_file, allow_unauthenticated=True) as running:
        status, body = phone_home(Client(running.url), token=None)
    assert status == 200 and body["node_id"] == "node01"
    log = [json.loads(line) for line in (state_dir / REQUEST_LOG).read_text().splitlines()]
    assert log[-1]["auth"] == "unauthenticated-allowed"


def test_a_token_is_required_unless_unauthenticated_is_allowed(state_dir: Path, cluster_file: Path) -> None:
    with pytest.raises(ParameterError, match="bootstrap token"):
        Deployer(state_dir, cluster_file)


def test_bundle_download_is_a_reproducible_tarball(client: Client) -> None:
    _, plan = phone_home(client)
    path = urlsplit(plan["bundle_url"]).path
    status, data, headers = client.call("GET", path, token=TOKEN)
    assert status == 200
    assert hashlib.sha256(data).hexdigest() == plan["bundle_sha256"] == headers["X-Bundle-SHA256"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert sorted(tar.getnames()) == ["etc", "etc/hostname", "system"]
        member = tar.extractfile("etc/hostname")
        assert member is not None and member.read() == b"node01\n"
    assert client.call("GET", path, token=TOKEN)[1] == data
    assert client.call("GET", path)[0] == 401
    assert client.call("GET", "/api/v1/bundles/..", token=TOKEN)[0] == 404
    assert client.call("GET", "/api/v1/bundles/nope", token=TOKEN)[0] == 404


def test_desired_system_fetch_publish_and_status(client: Client) -> None:
    status, desired, _ = client.call("GET", "/api/v1/nodes/node01/desired-system", token=TOKEN)
    assert status == 200 and desired["generation"] == 1
    assert client.call("POST", "/api/v1/nodes/node01/status",
                       {"generation": 1, "status": "active"}, token=TOKEN)[0] == 200

    bad = {"target_system": "/systems/control-plane-2", "health_check_command": "false"}
    assert client.call("PUT", "/api/v1/nodes/node01/desired-system", bad, token=TOKEN)[0] == 401
    status, published, _ = client.call("PUT", "/api/v1/nodes/node01/desired-system", bad, token=ADMIN)
    assert status == 200 and published["generation"] == 2
    # Publishing the same system again is not a new generation.
    assert client.call("PUT", "/api/v1/nodes/node01/desired-system", bad, token=ADMIN)[1]["generation"] == 2
    assert client.call("GET", "/api/v1/nodes/node01/desired-system", token=TOKEN)[1]["target_system"] == \
        "/systems/control-plane-2"

    for report in ({"generation": 2, "status": "activating"},
                   {"generation": 2, "status": "rolled-back", "detail": "health check exited 1"}):
        assert client.call("POST", "/api/v1/nodes/node01/status", report, token=TOKEN)[0] == 200
    assert client.call("POST", "/api/v1/nodes/node01/status", {"generation": 3, "status": "active"},
                       token=TOKEN)[0] == 409
    assert client.call("POST", "/api/v1/nodes/node01/status", {"generation": 2, "status": "broken"},
                       token=TOKEN)[0] == 400

    status, node, _ = client.call("GET", "/api/v1/nodes/node01", token=TOKEN)
    assert status == 200
    assert node["observed_status"]["status"] == "rolled-back"
    assert [(o["generation"], o["status"]) for o in node["observed_history"]] == \
        [(1, "active"), (2, "activating"), (2, "rolled-back")]


def test_node_without_a_desired_system(client: Client) -> None:
    status, body, _ = client.call("GET", "/api/v1/nodes/node02/desired-system", token=TOKEN)
    assert (status, body["error"]) == (404, "no-desired-system")


def test_pre_register_is_idempotent_and_conflicts_are_409(client: Client, state_dir: Path) -> None:
    path = "/api/v1/admin/nodes/pre-register"
    assert client.call("POST", path, REGISTRATION, token=TOKEN)[0] == 401
    status, first, _ = client.call("POST", path, REGISTRATION, token=ADMIN)
    assert status == 201
    state_before = (state_dir / STATE_FILE).read_bytes()

    status, replay, _ = client.call("POST", path, REGISTRATION, token=ADMIN)
    assert (status, replay) == (200, first)
    assert (state_dir / STATE_FILE).read_bytes() == state_before

    status, body, _ = client.call("POST", path, {**REGISTRATION, "class": "control-plane"}, token=ADMIN)
    assert (status, body["error"]) == (409, "conflict") and "class" in body["reason"]
    assert client.call("POST", path, {**REGISTRATION, "node_id": "node08", "hostname": "worker-a"},
                       token=ADMIN)[0] == 409
    assert client.call("POST", path, {**REGISTRATION, "node_id": "node01"}, token=ADMIN)[0] == 409
    assert client.call("POST", path, {**REGISTRATION, "node_id": "node09", "hostname": "node09",
                                      "class": "nope"}, token=ADMIN)[0] == 400
    assert (state_dir / STATE_FILE).read_bytes() == state_before

    listed = client.call("GET", "/api/v1/admin/nodes", token=ADMIN)[1]["nodes"]
    assert [(n["node_id"], n["source"]) for n in listed] == \
        [("node01", "cluster"), ("node02", "cluster"), ("node07", "pre-registered")]
    assert phone_home(client, node_id="node07")[0] == 200


def test_state_survives_a_restart(state_dir: Path, cluster_file: Path) -> None:
    with Deployer(state_dir, cluster_file, bootstrap_token=TOKEN, admin_token=ADMIN) as first:
        client = Client(first.url)
        _, registered, _ = client.call("POST", "/api/v1/admin/nodes/pre-register", REGISTRATION, token=ADMIN)
        phone_home(client)
        client.call("POST", "/api/v1/nodes/node01/status", {"generation": 1, "status": "active"}, token=TOKEN)

    with Deployer(state_dir, cluster_file, bootstrap_token=TOKEN, admin_token=ADMIN) as second:
        client = Client(second.url)
        status, replay, _ = client.call("POST", "/api/v1/admin/nodes/pre-register", REGISTRATION,
                                        token=ADMIN)
        assert (status, replay) == (200, registered)
        node = client.call("GET", "/api/v1/nodes/node01", token=TOKEN)[1]
        assert len(node["phone_homes"]) == 1
        assert node["observed_status"]["status"] == "active"


def test_canary_tokens_never_leak(client: Client, deployer: Deployer, state_dir: Path) -> None:
    phone_home(client)
    phone_home(client, token=ADMIN)
    phone_home(client, token=TOKEN + "x")
    phone_home(client, token=None)
    client.call("POST", "/api/v1/phone-home", {"node_id": TOKEN, "hostname": "h"}, token=TOKEN)
    client.call("POST", "/api/v1/phone-home", {"node_id": "node01", "hostname": "node01", TOKEN: 1},
                token=TOKEN)
    client.call("POST", "/api/v1/phone-home", raw=b"{" + TOKEN.encode(), token=TOKEN)
    client.call("GET", f"/api/v1/nodes/node01?token={TOKEN}", token=TOKEN)
    client.call("GET", f"/api/v1/nodes/{TOKEN}", token=TOKEN)
    client.call("POST", "/api/v1/admin/nodes/pre-register", REGISTRATION, token=TOKEN)
    client.call("POST", "/api/v1/admin/nodes/pre-register", REGISTRATION, token=ADMIN)
    client.call("GET", "/api/v1/admin/nodes", token=ADMIN)
    client.call("PUT", "/api/v1/nodes/node01/desired-system", {"target_system": "/s/2"}, token=ADMIN)
    client.call("POST", "/api/v1/nodes/node01/status",
                {"generation": 2, "status": "failed", "detail": "ok"}, token=TOKEN)

    assert len(client.seen) == 14
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert state_dir / REQUEST_LOG in files and state_dir / STATE_FILE in files
    for blob in [*client.seen, *(p.read_bytes() for p in files)]:
        assert TOKEN.encode() not in blob and ADMIN.encode() not in blob
    log = [json.loads(line) for line in (state_dir / REQUEST_LOG).read_text().splitlines()]
    assert len(log) == 14
    assert {entry["auth"] for entry in log} >= {"bootstrap", "admin", "invalid", "missing"}
    assert log[2] | {"time": None, "duration_ms": None} == {
        "time": None, "duration_ms": None, "method": "POST", "path": "/api/v1/phone-home",
        "node_id": "node01", "status": 401, "auth": "invalid", "client": "127.0.0.1",
        "error": "unauthorized"}


def test_unknown_cluster_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.replace("target_disk_by_id:", "target_disk:", 1))
    with pytest.raises(ParameterError, match=r"install_plan\.target_disk: unknown key"):
        load_cluster(path)


@pytest.mark.parametrize("change, message", [
    (("class: worker", "class: storage"), "not one of the node_classes"),
    (("/dev/disk/by-id/virtio-uc-worker-root", "/dev/vda"), "stable selector"),
    (("hostname: worker-a", "hostname: node01"), "duplicate hostname"),
])
def test_inconsistent_cluster_is_rejected(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(yaml.safe_load(CLUSTER.replace(*change))))
    with pytest.raises(ParameterError, match=message):
        load_cluster(path)


def test_cli_serves_with_the_token_from_the_environment(tmp_path: Path, cluster_file: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ucnb.reference.deployer", "--state-dir", str(tmp_path / "cli-state"),
         "--cluster", str(cluster_file), "--bind", "127.0.0.1:0"],
        env={"ULTRACLOUD_BOOTSTRAP_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced["event"] == "listening"
        client = Client(announced["url"])
        assert phone_home(client)[0] == 200
        assert phone_home(client, token="wrong-token-123")[0] == 401
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert TOKEN not in " ".join(process.args)  # type: ignore[arg-type]
