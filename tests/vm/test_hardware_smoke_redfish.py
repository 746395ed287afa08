"""hardware-smoke run with Redfish virtual media through a real BMC emulator (sushy-tools) over a lab
domain: the BMC inserts the ISO and powers the machine on, the installer's markers are captured."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from ucnb.baremetal import hardware_smoke as hw
from ucnb.evidence.redact import generated_secrets_file

from ..conftest import assert_no_secret
from ..lab_fixtures import OwnRuns

TOKEN = "canary-hw-run-token-4d2e9a"
PASSWORD = "canary-bmc-password-71c3"


def test_redfish_virtual_media_installs_a_lab_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      own_runs: OwnRuns) -> None:
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
    own_runs.add(bare.lab)
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
        assert_no_secret(tmp_path / "work", TOKEN, PASSWORD)
        assert json.loads((run_dir / "run.json").read_text())["transport"] == "redfish"
    finally:
        if sushy is not None:
            sushy.stop()
        bare.stop()
        # The runner's seal removes a run's generated secrets; this in-process run has no runner.
        generated_secrets_file(run.run_id).unlink(missing_ok=True)
    assert sushy is not None and sushy._proc is None
    assert sushy.pool not in {p.name() for p in bare.lab.conn.listAllStoragePools()}
