"""Units of the reference installer: kernel parameters, the ISO's boot config, guest shell helpers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ucnb.baremetal import harness
from ucnb.installer import build as installer

COMMON = installer.GUEST_DIR / "common.sh"
PLAN = """{
 "bundle_sha256": "abc123",
 "bundle_url": "http://10.77.1.1:8080/api/v1/bundles/baremetal-qemu-worker",
 "desired_system": {
  "generation": 2,
  "health_check_command": "test \\"$(cat /x)\\" = ok",
  "target_system": "lab-system-1"
 },
 "install_plan": {
  "target_disk_by_id": "/dev/disk/by-id/virtio-uc-worker-root"
 },
 "missing_value": null
}
"""


def test_kernel_params_in_the_seed_order_with_optional_ones_only_when_set() -> None:
    params = installer.installer_kernel_params("http://10.77.1.1:9/", "tok-12345678", address="10.77.1.11/24",
                                               node_id="worker", hostname="worker")
    assert params == ["ultracloud.deployer_url=http://10.77.1.1:9",
                      "ultracloud.bootstrap_token=tok-12345678", "ultracloud.node_id=worker",
                      "ultracloud.hostname=worker", "ultracloud.ip=10.77.1.11/24"]
    full = installer.installer_kernel_params("http://d:1", None, ca_cert_url="https://d/ca.crt",
                                             binary_cache_url="http://cache:8090")
    assert full == ["ultracloud.deployer_url=http://d:1", "ultracloud.ca_cert_url=https://d/ca.crt",
                    "ultracloud.binary_cache_url=http://cache:8090"]
    with pytest.raises(ValueError, match="whitespace"):
        installer.installer_kernel_params("http://d:1", "a token")


def _sh(script: str, cwd: Path) -> str:  # the guest's shell (busybox-static, installed by setup)
    return subprocess.run(["busybox", "sh", "-c", f". {COMMON}; {script}"], cwd=cwd, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.requires("busybox")
def test_json_get_reads_the_deployer_answers(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text(PLAN)
    get = {k: _sh(f"json_get {k} plan.json", tmp_path).rstrip("\n") for k in (
        "bundle_url", "generation", "health_check_command", "target_disk_by_id", "missing_value", "absent")}
    assert get == {"bundle_url": "http://10.77.1.1:8080/api/v1/bundles/baremetal-qemu-worker",
                   "generation": "2", "health_check_command": 'test "$(cat /x)" = ok',
                   "target_disk_by_id": "/dev/disk/by-id/virtio-uc-worker-root", "missing_value": "",
                   "absent": ""}


@pytest.mark.parametrize(("stderr", "reason"), [
    ("wget: server returned error: HTTP/1.1 401 Unauthorized", "unauthorized"),
    ("wget: server returned error: HTTP/1.1 404 Not Found", "not-found"),
    ("wget: server returned error: HTTP/1.1 500 Internal", "http-500"),
    ("wget: can't connect to remote host (10.77.1.1): Connection refused", "connection-refused"),
    ("wget: bad address", "unreachable"),
])
@pytest.mark.requires("busybox")
def test_http_reason_names_the_refusal(tmp_path: Path, stderr: str, reason: str) -> None:
    (tmp_path / "err").write_text(stderr + "\n")
    assert _sh("http_reason err", tmp_path).strip() == reason


def test_failure_reasons_make_failure_markers() -> None:
    from ucnb.markers import is_failure

    text = (installer.GUEST_DIR / "installer-init").read_text()
    assert 'marker "$1.failed.$2"' in text
    assert is_failure("pre-install.phone-home.failed.unauthorized")
    assert not is_failure("desired-system-rolled-back.worker.generation-2")  # an expected outcome


@pytest.mark.requires("xorriso", str(installer.ISOLINUX_BIN))
def test_iso_carries_the_kernel_params_and_is_private(tmp_path: Path) -> None:
    art = installer.InstallerArtifacts("k", tmp_path / "art")
    (art.isolinux).mkdir(parents=True)
    for f in (art.isolinux / "isolinux.bin", art.isolinux / "ldlinux.c32"):
        f.write_bytes(installer.ISOLINUX_BIN.read_bytes() if f.name == "isolinux.bin" else b"x")
    art.kernel.write_bytes(b"kernel")
    art.installer_initrd.write_bytes(b"initrd")
    params = ["ultracloud.deployer_url=http://d:1", "ultracloud.bootstrap_token=t0k3n-abc"]
    iso = installer.build_iso(art, params, tmp_path / "node.iso")
    assert iso.stat().st_mode & 0o777 == 0o600
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/isolinux/isolinux.cfg",
                    str(tmp_path / "cfg")], capture_output=True, check=True)
    cfg = (tmp_path / "cfg").read_text()
    assert "APPEND console=ttyS0 loglevel=4" in cfg and "ultracloud.bootstrap_token=t0k3n-abc" in cfg


def test_target_system_activation_records_the_live_system(tmp_path: Path) -> None:
    root = installer.write_target_system(tmp_path, "lab-system-9")
    assert "echo lab-system-9 > /run/ultracloud/active-system" in (root / "activate").read_text()
    check = installer.active_system_check("lab-system-9")
    assert check == "grep -qx lab-system-9 /run/ultracloud/active-system"


def test_cluster_file_selectors_are_the_seed_ones() -> None:
    from ucnb.reference.cluster import load_cluster

    cluster = load_cluster(harness.CLUSTER_FILE)
    selectors = {n: c.install_plan.target_disk_by_id for n, c in cluster.node_classes.items()}
    assert selectors == {"control-plane": "/dev/disk/by-id/virtio-uc-control-root",
                         "worker": "/dev/disk/by-id/virtio-uc-worker-root"}
