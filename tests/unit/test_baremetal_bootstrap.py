"""Units of the bare-metal bootstrap: the per-run CA, the deployer over HTTPS (loopback), the
installer's TLS client (GNU wget + common.sh) against it, disk layouts, the binary cache, the SSH
capture's verdict, and the lane's bootstrap parameters. No VMs; servers on 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ucnb.baremetal import ssh_capture
from ucnb.baremetal.gateway import BootstrapOptions
from ucnb.baremetal.hardware_smoke import load_params, preflight, read_status
from ucnb.errors import ParameterError
from ucnb.installer import build as installer
from ucnb.installer.layout import Layout, disko_script, load_layout, sfdisk_script
from ucnb.lab.ssh import CommandResult
from ucnb.reference import pki
from ucnb.reference.cache import BinaryCache
from ucnb.reference.deployer import REQUEST_LOG, STATE_FILE, Deployer, TlsFiles

TOKEN = "canary-bootstrap-3b9d7e1f42"
UNBOUND = ("10.77.250.1", 0)   # a lab-range address the tests never bind nor reach
LAYOUTS = Path(installer.__file__).resolve().parents[1] / "baremetal" / "layouts"
CLUSTER = """\
ultracloud:
  cluster:
    node_classes:
      worker:
        install_plan:
          nixos_configuration: baremetal-qemu-worker
          disko_config_path: layouts/worker.yaml
          target_disk_by_id: /dev/disk/by-id/virtio-uc-worker-root
        desired_system: {target_system: lab-system-1}
    nodes:
      worker: {class: worker}
"""


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run's CA with a deployer certificate for 127.0.0.1, and an unrelated CA."""
    base = tmp_path_factory.mktemp("pki")
    ca, key = pki.make_ca(base / "run", "ucnb run test bootstrap CA")
    server = pki.issue_server_cert(base / "run", ca, key, common_name="deployer", addresses=["127.0.0.1"])
    other, _ = pki.make_ca(base / "other", "an unrelated CA")
    return {"ca": ca, "key": key, "server": server, "other": other}


@pytest.fixture
def deployer(tmp_path: Path, cas: dict[str, Any]) -> Any:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    installer.write_target_system(tmp_path / "bundles", "lab-system-1")
    tls = TlsFiles(cas["server"].cert_file, cas["server"].key_file)
    with Deployer(tmp_path / "state", tmp_path / "cluster.yaml", bootstrap_token=TOKEN, tls=tls) as running:
        yield running


def _phone_home(url: str, cafile: Path, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url + "/api/v1/phone-home", data=json.dumps(body).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_the_ca_signs_the_deployer_and_keeps_its_keys_private(cas: dict[str, Any]) -> None:
    described = pki.describe(cas["server"].cert_file)
    assert described["issuer"] == pki.describe(cas["ca"])["subject"]
    assert described["issuer"] == "CN=ucnb run test bootstrap CA,O=ucnb lab"
    assert described["subject_alt_names"] == "127.0.0.1"
    for key in (cas["key"], cas["server"].key_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PRIVATE KEY" not in cas["ca"].read_bytes() + cas["server"].cert_file.read_bytes()


def test_deployer_over_https_records_identity_ca_and_checksums(deployer: Deployer,
                                                               cas: dict[str, Any]) -> None:
    assert deployer.url.startswith("https://127.0.0.1:")
    ca_sha = hashlib.sha256(cas["ca"].read_bytes()).hexdigest()
    plan = _phone_home(deployer.url, cas["ca"], {
        "node_id": "worker", "hostname": "worker", "node_id_source": "dmi-serial",
        "hostname_source": "node-id", "ca_cert_sha256": ca_sha})
    assert plan["bundle_url"].startswith(deployer.url + "/api/v1/bundles/")   # https, as reached
    archive = deployer.app.bundles.archive("lab-system-1")
    assert archive is not None and plan["desired_system"]["target_sha256"] == archive[1]
    home = json.loads((deployer.state_dir / STATE_FILE).read_text())["nodes"]["worker"]["phone_homes"][-1]
    assert (home["node_id_source"], home["hostname_source"], home["ca_cert_sha256"]) == (
        "dmi-serial", "node-id", ca_sha)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _phone_home(deployer.url, cas["other"], {"node_id": "worker", "hostname": "worker"})


def test_plain_http_off_loopback_needs_allow_unauthenticated(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    # Refused before any socket exists (10.77.250.1 is never bound nor reached).
    with pytest.raises(ParameterError, match="in the clear"):
        Deployer(tmp_path / "state", tmp_path / "cluster.yaml", bind=UNBOUND, bootstrap_token=TOKEN)
    Deployer(tmp_path / "state", tmp_path / "cluster.yaml", bind=UNBOUND, allow_unauthenticated=True)


def _fetch(tmp_path: Path, url: str, cafile: Path | None) -> tuple[int, str, str]:
    """common.sh's fetch through the host's GNU wget (the binary the installer image carries)."""
    script = (f". {installer.GUEST_DIR / 'common.sh'}; CA_FILE={cafile or ''}; "
              f"if fetch out.json {url}/healthz; then echo ok; else http_reason out.json.err; "
              "tls_detail out.json.err; fi")
    done = subprocess.run(["busybox", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = [*done.stdout.splitlines(), "", ""]
    return done.returncode, lines[0], lines[1]


@pytest.mark.skipif(not installer.GNU_WGET.exists(), reason="GNU wget is not installed (make setup)")
def test_the_installer_client_verifies_with_the_given_ca_only(tmp_path: Path, deployer: Deployer,
                                                              cas: dict[str, Any]) -> None:
    assert _fetch(tmp_path, deployer.url, cas["ca"])[1] == "ok"
    _, reason, detail = _fetch(tmp_path, deployer.url, cas["other"])
    assert reason == "certificate-verification" and "not trusted" in detail
    assert _fetch(tmp_path, deployer.url, None)[1] == "certificate-verification"   # no CA: nothing trusted
    log = [json.loads(line) for line in (deployer.state_dir / REQUEST_LOG).read_text().splitlines()]
    assert [r["path"] for r in log if r["method"] == "GET"] == ["/healthz"]
    assert len([r for r in log if r["method"] == "TLS" and r["error"].startswith("tls: ")]) == 2


def test_layout_files_compile_to_the_tables_sfdisk_reads_back(tmp_path: Path) -> None:
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk is not installed (make setup)")
    tables = {}
    for name in ("control-plane", "worker"):
        layout = load_layout(LAYOUTS / f"{name}.yaml")
        image = tmp_path / f"{name}.img"
        image.write_bytes(b"")
        subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
        subprocess.run(["sfdisk", "--quiet", str(image)], input=sfdisk_script(layout), text=True, check=True)
        tables[name] = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True,
                                                 text=True, check=True).stdout)["partitiontable"]
    gpt, dos = tables["control-plane"], tables["worker"]
    assert gpt["label"] == "gpt" and [p.get("name") for p in gpt["partitions"]] == ["ESP", "root"]
    assert gpt["partitions"][0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert gpt["partitions"][0]["size"] * 512 == 32 << 20
    assert gpt["partitions"][1].get("attrs") == "LegacyBIOSBootable"
    assert dos["label"] == "dos" and len(dos["partitions"]) == 1 and dos["partitions"][0]["bootable"]
    script = disko_script(load_layout(LAYOUTS / "control-plane.yaml"), "control-plane.yaml")
    assert "/usr/sbin/mkfs.fat -n UC-ESP" in script and "/usr/sbin/mke2fs -q -F -t ext4 -L ucroot" in script
    assert "ROOT_PART=2" in script and "1 /boot/efi vfat" in script
    subprocess.run(["busybox", "sh", "-n", "-c", script], check=True)   # it parses


def _layout(partitions: dict[str, Any], table: str = "gpt") -> dict[str, Any]:
    return {"disko": {"devices": {"disk": {"main": {"type": "disk", "content": {
        "type": table, "partitions": partitions}}}}}}


ROOT = {"size": "100%", "bootable": True,
        "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/"}}


@pytest.mark.parametrize(("layout", "message"), [
    (_layout({"root": {**ROOT, "bootable": False}}), "must be bootable"),
    (_layout({"a": ROOT, "b": ROOT}), "exactly one partition must be mounted at /"),
    (_layout({"root": {**ROOT, "content": {**ROOT["content"], "format": "vfat"}}}), "ext4 or ext2"),
    (_layout({"root": {**ROOT, "type": "8300"}}, "msdos"), "GPT's"),
    (_layout({"root": {**ROOT, "size": "lots"}}), "size"),
    (_layout({"root": {**ROOT, "extra": 1}}), "unknown key"),
])
def test_bad_layouts_are_refused_naming_the_problem(tmp_path: Path, layout: dict[str, Any],
                                                    message: str) -> None:
    path = tmp_path / "layout.yaml"
    path.write_text(json.dumps(layout))
    with pytest.raises(ParameterError, match=message):
        load_layout(path)
    assert isinstance(Layout.model_validate(_layout({"root": ROOT})), Layout)


def test_binary_cache_serves_published_systems(tmp_path: Path) -> None:
    archive = tmp_path / "lab-system-1.tar.gz"
    archive.write_bytes(b"prebuilt system bytes")
    cache = BinaryCache(tmp_path / "cache", ("127.0.0.1", 0), tmp_path / "requests.jsonl").start()
    try:
        entry = cache.publish("lab-system-1", archive)
        assert entry["sha256"] == hashlib.sha256(b"prebuilt system bytes").hexdigest()
        with urllib.request.urlopen(cache.url + "/systems/lab-system-1.tar.gz", timeout=10) as response:
            assert response.read() == b"prebuilt system bytes"
        with urllib.request.urlopen(cache.url + "/nix-cache-info", timeout=10) as response:
            assert b"StoreDir" in response.read()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(cache.url + "/systems/", timeout=10)   # no listings
    finally:
        cache.stop()
    assert [(r["path"], r["status"]) for r in cache.requests()] == [
        ("/systems/lab-system-1.tar.gz", 200), ("/nix-cache-info", 200), ("/systems/", 404)]
    with pytest.raises(ValueError):
        cache.publish("../evil", archive)


MARKER_LOG = "".join(f"2026-12-01T00:00:0{i}Z ULTRACLOUD_MARKER {m}.node01\n" for i, m in enumerate([
    "pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
    "install.disko.complete", "install.nixos-install.complete", "reboot", "post-install.boot",
    "desired-system-active"]))


class FakeShell:
    """Stands in for the SSH connection: answers the two capture commands."""

    _user, address = "root", "10.77.1.12"

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        if "markers" in command:
            out = MARKER_LOG + f"Command line: ultracloud.bootstrap_token={TOKEN}\n"
        else:
            out = f"agent={self.agent}\ngeneration=1\nstatus=active\nsystem=lab-system-1\n"
        return CommandResult("node01", command, 0, out, "", 0.1)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("agent", ["running", "stopped"])
def test_ssh_capture_needs_a_running_agent_for_desired_system_active(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str) -> None:
    monkeypatch.setenv("ULTRACLOUD_BOOTSTRAP_TOKEN", TOKEN)
    run_dir = preflight(tmp_path, load_params({"deployer_url": "https://10.77.1.1:9"}), run_id="ssh1")
    monkeypatch.setattr(ssh_capture, "open_shell", lambda *a, **k: FakeShell(agent))
    result = ssh_capture.capture_ssh(run_dir, "10.77.1.12")
    status = read_status(run_dir)
    if agent == "running":
        assert result.passed and status["status"] == "passed"
    else:
        assert (result.status, result.first_missing) == ("failed", "desired-system-active")
        assert "node agent stopped" in status["reason"]
    document = json.loads((run_dir / "capture.json").read_text())
    assert document["ssh"] == "root@10.77.1.12:22" and document["node_agent"]["agent"] == agent
    for path in run_dir.iterdir():
        assert TOKEN not in path.read_text(), path
    assert "ultracloud.bootstrap_token=[REDACTED]" in (run_dir / "ssh-capture.log").read_text()


def test_ssh_capture_refuses_unknown_hosts_and_stray_lab_addresses(tmp_path: Path) -> None:
    params = load_params({"deployer_url": "https://10.77.1.1:9"})
    with pytest.raises(ParameterError, match="no live lab"):
        ssh_capture.open_shell("10.77.254.99", params)
    with pytest.raises(ParameterError, match="ssh_known_hosts"):
        ssh_capture.open_shell("192.0.2.10", params)


def test_bootstrap_parameters_are_checked_before_any_vm() -> None:
    from ucnb.lanes import get

    lane = get("baremetal-iso")
    with pytest.raises(ParameterError, match="tls"):
        lane.validate({"tls": False})
    with pytest.raises(ParameterError, match="installer_ca"):
        lane.validate({"tls": False, "allow_unauthenticated": True})
    assert lane.validate({"tls": False, "allow_unauthenticated": True, "installer_ca": "none"})
    with pytest.raises(ParameterError, match="worker_node_id"):
        lane.validate({"worker_node_id": "bad id; rm -rf /"})
    with pytest.raises(ParameterError, match="allow_unauthenticated"):
        BootstrapOptions(tls=False)


def test_a_machine_with_a_dmi_serial_reports_it_through_smbios(tmp_path: Path) -> None:
    from ucnb.lab.domain import NodeSpec, domain_xml

    spec = NodeSpec(name="worker", memory_mib=256, vcpus=1, kernel=None, initrd=None, cmdline="", disks=(),
                    nics=(), serial_log=tmp_path / "serial.log", dmi_serial="worker")
    xml = domain_xml("lab1", spec)
    assert "<sysinfo type='smbios'><system><entry name='serial'>worker</entry></system></sysinfo>" in xml
    assert "<smbios mode='sysinfo'/>" in xml
    assert "sysinfo" not in domain_xml("lab1", dataclasses.replace(spec, dmi_serial=""))
