"""hardware-smoke run: USB media (a plain file standing in) and Redfish virtual media through a real
BMC emulator (sushy-tools) over a lab domain, then capture of the same marker sequence."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from ucnb.baremetal import hardware_smoke as hw
from ucnb.installer import build as installer

TOKEN = "canary-hw-run-token-4d2e9a"
PASSWORD = "canary-bmc-password-71c3"


def _fake_artifacts(tmp_path: Path) -> installer.InstallerArtifacts:
    art = installer.InstallerArtifacts("k", tmp_path / "art")
    art.isolinux.mkdir(parents=True)
    (art.isolinux / "isolinux.bin").write_bytes(installer.ISOLINUX_BIN.read_bytes())
    (art.isolinux / "ldlinux.c32").write_bytes(b"x")
    art.kernel.write_bytes(b"kernel")
    art.installer_initrd.write_bytes(b"initrd")
    return art


def _no_secret_under(root: Path, *secrets: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            for secret in secrets:
                assert secret.encode() not in path.read_bytes(), f"secret in {path}"


def test_run_writes_the_iso_to_file_backed_usb_media(tmp_path: Path) -> None:
    usb = tmp_path / "usb.img"
    usb.write_bytes(b"\0" * (4 << 20))
    env = {"ULTRACLOUD_BOOTSTRAP_TOKEN": TOKEN}
    run_dir = hw.preflight(tmp_path / "work", hw.load_params(
        {"deployer_url": "http://10.0.0.5:8088", "usb_device": str(usb), "node_id": "n1"}), environ=env)
    assert hw.read_status(run_dir)["status"] == "ready"
    done = hw.run(run_dir, artifacts=_fake_artifacts(tmp_path), environ=env)
    assert done["transport"] == "usb" and done["usb"]["verified"]
    assert hw.read_status(run_dir)["status"] == "media-presented"
    assert usb.read_bytes()[0x8001:0x8006] == b"CD001"  # an ISO 9660 volume at the start of the medium
    _no_secret_under(tmp_path / "work", TOKEN)


def test_run_is_refused_while_blocked(tmp_path: Path) -> None:
    from ucnb.errors import ParameterError

    run_dir = hw.preflight(tmp_path, hw.load_params({"deployer_url": "http://d:1"}), environ={})
    with pytest.raises(ParameterError, match="blocked"):
        hw.run(run_dir, artifacts=_fake_artifacts(tmp_path), environ={})


@pytest.mark.vm
def test_redfish_virtual_media_installs_a_lab_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      lab_host: None) -> None:
    import ucnb
    from ucnb.baremetal import harness
    from ucnb.lab import domain as domain_mod
    from ucnb.reference.redfish import SushyEmulator

    monkeypatch.setenv("UCNB_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("ULTRACLOUD_BOOTSTRAP_TOKEN", TOKEN)
    monkeypatch.setenv(hw.REDFISH_PASSWORD_ENV, PASSWORD)
    for name in ("UCNB_RUN_ID", "UCNB_PROOF_ROOT"):
        monkeypatch.delenv(name, raising=False)
    run = ucnb.start_run({"lane_name": "baremetal-iso", "profile": "lab"})
    bare = harness.prepare(run, [("worker", "worker", "uc-worker-root")], memory_mib=256, disk_size="512M",
                           bootstrap_token_env="ULTRACLOUD_BOOTSTRAP_TOKEN")
    sushy = None
    try:
        node = bare.nodes["worker"].node
        # A defined (persistent) machine with no media, as a BMC sees a server: the emulator edits it.
        spec = dataclasses.replace(node.spec, cdrom=None)
        uuid = bare.lab.conn.defineXML(domain_mod.domain_xml(bare.lab.lab_id, spec)).UUIDString()
        sushy = SushyEmulator(bare.lab.directory / "bmc", [uuid], "admin", PASSWORD).start()
        run_dir = hw.preflight(tmp_path / "work", hw.load_params({
            "deployer_url": bare.deployer_url, "ca_cert_url": bare.gateway.ca_cert_url,  # type: ignore[union-attr]
            "node_id": "worker", "hostname": "worker",
            "transport": "redfish", "redfish_url": sushy.url + "/redfish/v1", "redfish_username": "admin",
            "extra_kernel_params": [f"ultracloud.ip={node.address}/24"]}))
        node.watcher.start()
        node.started_at = time.time()
        done = hw.run(run_dir, artifacts=bare.artifacts)
        assert done["redfish"]["reset"] == "On"
        assert all(200 <= a["status"] < 300 for a in done["redfish"]["actions"])
        assert "InsertMedia" in json.dumps(done["redfish"]["actions"])
        for marker in hw.EXPECTED_MARKERS:
            node.wait_marker(f"{marker}.worker", 90)
        result = hw.capture(run_dir, serial_log=node.spec.serial_log, node="worker")
        assert result.passed, result
        assert hw.read_status(run_dir)["status"] == "passed"
        _no_secret_under(tmp_path / "work", TOKEN, PASSWORD)
        assert json.loads((run_dir / "run.json").read_text())["transport"] == "redfish"
    finally:
        if sushy is not None:
            sushy.stop()
        bare.stop()
    assert sushy is not None and sushy._proc is None
    assert sushy.pool not in {p.name() for p in bare.lab.conn.listAllStoragePools()}
    assert not [d for d in bare.lab.conn.listAllDomains() if d.name().startswith(f"ucnb-{bare.lab.lab_id}-")]
