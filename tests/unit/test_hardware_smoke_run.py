"""hardware-smoke run with USB media (a plain file standing in for the stick): the ISO written to it,
and refused while preflight is blocked. Redfish virtual media: tests/vm/test_hardware_smoke_redfish.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucnb.baremetal import hardware_smoke as hw
from ucnb.installer import build as installer

from ..conftest import assert_no_secret

TOKEN = "canary-hw-run-token-4d2e9a"


def _fake_artifacts(tmp_path: Path) -> installer.InstallerArtifacts:
    art = installer.InstallerArtifacts("k", tmp_path / "art")
    art.isolinux.mkdir(parents=True)
    (art.isolinux / "isolinux.bin").write_bytes(installer.ISOLINUX_BIN.read_bytes())
    (art.isolinux / "ldlinux.c32").write_bytes(b"x")
    art.kernel.write_bytes(b"kernel")
    art.installer_initrd.write_bytes(b"initrd")
    return art


@pytest.mark.requires("xorriso", str(installer.ISOLINUX_BIN))
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
    assert_no_secret(tmp_path / "work", TOKEN)


@pytest.mark.requires(str(installer.ISOLINUX_BIN))
def test_run_is_refused_while_blocked(tmp_path: Path) -> None:
    from ucnb.errors import ParameterError

    run_dir = hw.preflight(tmp_path, hw.load_params({"deployer_url": "http://d:1"}), environ={})
    with pytest.raises(ParameterError, match="blocked"):
        hw.run(run_dir, artifacts=_fake_artifacts(tmp_path), environ={})
