"""hardware-smoke preflight and capture (no hardware: a regular file stands in for the USB stick)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ucnb.baremetal.hardware_smoke import (
    EXPECTED_MARKERS,
    HardwareSmokeParams,
    capture,
    kernel_params,
    load_params,
    preflight,
    read_status,
)
from ucnb.errors import LaneFailure, ParameterError

TOKEN = "canary-hw-token-93b1f0"
ENV = {"ULTRACLOUD_BOOTSTRAP_TOKEN": TOKEN}
BASE = {"deployer_url": "http://10.0.0.5:8088", "binary_cache_url": "http://10.0.0.5:8090",
        "node_id": "node01", "hostname": "node01"}


def params(**overrides: object) -> HardwareSmokeParams:
    return load_params({**BASE, **overrides})


def requirement_lines(run_dir: Path) -> list[str]:
    return [line for line in (run_dir / "missing-requirements.txt").read_text().splitlines()
            if not line.startswith("#")]


def test_preflight_without_transport_is_blocked(tmp_path: Path) -> None:
    run_dir = preflight(tmp_path, params(), run_id="r1", environ=ENV)
    assert run_dir == tmp_path / "hardware-smoke" / "r1"
    status = read_status(run_dir)
    assert (status["status"], status["transport"], status["missing_count"]) == ("blocked", "none", "4")
    assert requirement_lines(run_dir) == [
        "usb_device: no USB device given (e.g. /dev/disk/by-id/usb-<vendor>_<model>_<serial>-0:0)",
        "redfish_url: no BMC Redfish endpoint given (e.g. https://bmc.example/redfish/v1)",
        "redfish_username: no BMC user given",
        "redfish password: environment variable ULTRACLOUD_REDFISH_PASSWORD is not set",
    ]
    for name in ("kernel-params.txt", "expected-markers.txt", "failure-markers.txt", "operator-handoff.md"):
        assert (run_dir / name).is_file()
    assert (run_dir / "expected-markers.txt").read_text().split() == list(EXPECTED_MARKERS)
    assert "Blocked" in (run_dir / "operator-handoff.md").read_text()


def test_partial_redfish_and_missing_token_are_listed_exactly(tmp_path: Path) -> None:
    run_dir = preflight(tmp_path, params(transport="redfish", redfish_url="https://bmc.lab/redfish/v1"),
                        run_id="r1", environ={"ULTRACLOUD_REDFISH_PASSWORD": "pw-secret"})
    assert requirement_lines(run_dir) == [
        "redfish_username: no BMC user given",
        "bootstrap token: environment variable ULTRACLOUD_BOOTSTRAP_TOKEN is not set "
        "(or give bootstrap_token_file)",
    ]


def test_preflight_with_a_usb_image_is_ready_and_latest_moves(tmp_path: Path) -> None:
    usb = tmp_path / "usb.img"
    usb.write_bytes(b"\0" * 4096)
    first = preflight(tmp_path, params(), run_id="r1", environ=ENV)
    second = preflight(tmp_path, params(usb_device=str(usb)), run_id="r2", environ=ENV)
    latest = tmp_path / "hardware-smoke" / "latest"
    assert latest.is_symlink() and latest.readlink() == Path("r2") and latest.resolve() == second
    assert read_status(first)["status"] == "blocked"
    status = read_status(second)
    assert (status["status"], status["transport"]) == ("ready", "usb")
    assert not (second / "missing-requirements.txt").exists()
    with pytest.raises(ParameterError, match="already exists"):
        preflight(tmp_path, params(), run_id="r2", environ=ENV)


def test_kernel_params_reference_the_token_and_never_hold_it(tmp_path: Path) -> None:
    run_dir = preflight(tmp_path, params(ca_cert_url="https://10.0.0.5/ca.crt"), run_id="r1", environ=ENV)
    assert (run_dir / "kernel-params.txt").read_text().split() == [
        "ultracloud.deployer_url=http://10.0.0.5:8088",
        "ultracloud.bootstrap_token=${ULTRACLOUD_BOOTSTRAP_TOKEN}",
        "ultracloud.ca_cert_url=https://10.0.0.5/ca.crt",
        "ultracloud.binary_cache_url=http://10.0.0.5:8090",
        "ultracloud.node_id=node01",
        "ultracloud.hostname=node01",
    ]
    for path in run_dir.iterdir():
        assert TOKEN not in path.read_text()
    assert f"ultracloud.bootstrap_token={TOKEN}" in kernel_params(params(), reveal=True, environ=ENV)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    from_file = params(bootstrap_token_file=str(token_file))
    assert f"ultracloud.bootstrap_token=${{file:{token_file}}}" in kernel_params(from_file)
    unauthenticated = kernel_params(params(deployer_allows_unauthenticated=True))
    assert not any(p.startswith("ultracloud.bootstrap_token=") for p in unauthenticated)


@pytest.mark.parametrize("values, message", [
    ({"deployer_url": "10.0.0.5:8088"}, "deployer_url"),
    ({"hostname": "bad host"}, "hostname"),
    ({"usb": "/dev/sdb"}, "usb: unknown key"),
])
def test_bad_parameters(values: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        params(**values)


GOOD_LOG = "\r\n".join([
    f"[    0.000000] Command line: initrd=initrd ultracloud.bootstrap_token={TOKEN} console=ttyS0",
    "[    1.204417] virtio_blk virtio2: [vda] 41943040 512-byte logical blocks",
    "ULTRACLOUD_MARKER pre-install.boot.node01",
    "[    3.511002] e1000: eth0 NIC Link is Up 1000 Mbps",
    "<6>[    4.0] randomULTRACLOUD_MARKER pre-install.phone-home.complete.node01",
    "ULTRACLOUD_MARKER install.bundle-downloaded.node01",
    "[   20.1] EXT4-fs (vda2): mounted filesystem ULTRACLOUD_MARKER install.disko.complete.node01",
    "ULTRACLOUD_MARKER install.nixos-install.complete.node01",
    "ULTRACLOUD_MARKER reboot.node01",
    "[    0.000000] Linux version 6.1.0",
    "ULTRACLOUD_MARKER post-install.boot.node01",
    "ULTRACLOUD_MARKER desired-system-active.node01",
    "",
])


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ULTRACLOUD_BOOTSTRAP_TOKEN", TOKEN)
    return preflight(tmp_path, params(), run_id="r1")


def write_log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "console.log"
    path.write_bytes(text.encode())
    return path


def test_capture_passes_on_a_good_log(tmp_path: Path, run_dir: Path) -> None:
    result = capture(run_dir, serial_log=write_log(tmp_path, GOOD_LOG))
    assert result.passed, result
    status = read_status(run_dir)
    assert (status["status"], status["stage"], status["run_id"]) == ("passed", "capture", "r1")
    rows = list(csv.DictReader((run_dir / "markers.csv").open()))
    assert [r["expected"] for r in rows] == list(EXPECTED_MARKERS)
    assert {r["ok"] for r in rows} == {"True"} and rows[0]["node"] == "node01"
    document = json.loads((run_dir / "capture.json").read_text())
    assert document["status"] == "passed" and document["preflight_status"] == "blocked"
    for path in run_dir.iterdir():
        assert TOKEN not in path.read_text()
    assert "ultracloud.bootstrap_token=[REDACTED]" in (run_dir / "serial.log").read_text()


def test_capture_names_the_first_missing_marker(tmp_path: Path, run_dir: Path) -> None:
    log = GOOD_LOG.replace("ULTRACLOUD_MARKER install.disko.complete.node01", "disko done")
    result = capture(run_dir, serial_log=write_log(tmp_path, log))
    assert (result.status, result.first_missing, result.failure_marker) == \
        ("failed", "install.disko.complete", None)
    assert read_status(run_dir)["first_missing"] == "install.disko.complete"
    with pytest.raises(LaneFailure, match=r"install\.disko\.complete"):
        result.raise_for_failure()


def test_capture_fails_at_once_on_a_failure_marker(tmp_path: Path, run_dir: Path) -> None:
    # A retry after the failure reaches the end of the sequence; the failure still decides.
    log = GOOD_LOG.replace("ULTRACLOUD_MARKER install.bundle-downloaded.node01",
                           "ULTRACLOUD_MARKER install.disko.failed.node01 wipefs: device busy\r\n"
                           "ULTRACLOUD_MARKER install.bundle-downloaded.node01")
    result = capture(run_dir, serial_log=write_log(tmp_path, log))
    assert result.status == "failed"
    assert result.failure_marker == "install.disko.failed.node01"
    assert result.failure_line is not None and "device busy" in result.failure_line
    assert result.first_missing == "install.bundle-downloaded"
    status = read_status(run_dir)
    assert (status["status"], status["failure_marker"]) == ("failed", "install.disko.failed.node01")


def test_capture_needs_a_serial_log(run_dir: Path) -> None:
    with pytest.raises(ParameterError, match="serial_log"):
        capture(run_dir)
    with pytest.raises(ParameterError, match="cannot read"):
        capture(run_dir, serial_log=run_dir / "nope.log")
