"""`ucnb hardware-smoke preflight | run | capture` through the command line (no VMs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucnb.baremetal.hardware_smoke import EXPECTED_MARKERS

from ..conftest import Cli, assert_no_secret

URL = "http://10.77.9.1:8080"


@pytest.fixture(autouse=True)
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "work"))
    monkeypatch.delenv("ULTRACLOUD_BOOTSTRAP_TOKEN", raising=False)
    monkeypatch.delenv("ULTRACLOUD_REDFISH_PASSWORD", raising=False)
    return tmp_path / "work"


def test_preflight_without_transport_is_blocked_with_the_missing_inputs(work: Path, cli: Cli) -> None:
    result = cli.invoke("hardware-smoke", "preflight", "-p", f"deployer_url={URL}")
    assert result.exit_code == 3
    latest = work / "hardware-smoke" / "latest"
    assert "status=blocked" in (latest / "status.env").read_text()
    missing = (latest / "missing-requirements.txt").read_text()
    assert "usb_device" in missing and "redfish_url" in missing
    for name in ("kernel-params.txt", "expected-markers.txt", "failure-markers.txt", "operator-handoff.md"):
        assert (latest / name).is_file()


def test_usb_run_then_capture(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              cli: Cli) -> None:
    canary = "canary-hw-token-61c0ffee"
    monkeypatch.setenv("ULTRACLOUD_BOOTSTRAP_TOKEN", canary)
    usb = tmp_path / "usb.img"
    usb.write_bytes(b"\0" * 4096)
    ready = cli.invoke("hardware-smoke", "preflight", "-p", f"deployer_url={URL}", "-p", f"usb_device={usb}")
    assert ready.exit_code == 0, ready.output
    iso = tmp_path / "given.iso"
    iso.write_bytes(b"ISO" * 1000)
    ran = cli.invoke("hardware-smoke", "run", "--iso", str(iso))
    assert ran.exit_code == 0, ran.output
    assert usb.read_bytes().startswith(b"ISO" * 1000)
    log = tmp_path / "console.log"
    log.write_text("".join(f"[ 1.0] noise\r\nULTRACLOUD_MARKER {m}.node01\r\n" for m in EXPECTED_MARKERS)
                   + f"Command line: ultracloud.bootstrap_token={canary}\n")
    captured = cli.invoke("hardware-smoke", "capture", "--serial-log", str(log))
    assert captured.exit_code == 0, captured.output
    assert_no_secret(work / "hardware-smoke", canary)
    bad = tmp_path / "bad.log"
    bad.write_text("ULTRACLOUD_MARKER pre-install.boot.node01\n"
                   "ULTRACLOUD_MARKER install.disko.failed.no-disk\n")
    assert cli.invoke("hardware-smoke", "capture", "--serial-log", str(bad)).exit_code == 1
