"""Hardening, the pure parts (no root, no libvirt): processes by pid and start time, strict lab
state and lease files, the namespace guard for every client, secrets kept off disk and out of
reprs, the one-time media URL, hardware-smoke preflight with nothing set, early parameter checks,
the work root resolved once, and the runner's interrupt hooks."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ucnb import lanes
from ucnb.errors import LabNamespaceError, ParameterError
from ucnb.host import netns
from ucnb.host.procs import ProcessId
from ucnb.lab import leases
from ucnb.lab.registry import LabState, scan

from ..conftest import Cli, dead_process

TOKEN40 = "uc-0123456789abcdefghijklmnopqrstuvwxyzAB"


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "work"
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(root))
    for name in ("UCNB_RUN_ID", "UCNB_PROOF_ROOT", "UCNB_RUNNER"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


# -- processes -------------------------------------------------------------------------------------
def test_a_reused_pid_is_not_the_recorded_process_and_is_never_signalled(
        sleeper: subprocess.Popen[bytes]) -> None:
    now = ProcessId.of(sleeper.pid)
    assert now is not None and now.alive()
    earlier = ProcessId(sleeper.pid, now.start - 1, now.boot)   # what a state file of a dead owner says
    assert not earlier.alive()
    assert not earlier.signal(signal.SIGKILL)
    assert sleeper.poll() is None, "an unrelated process with a reused pid was signalled"
    assert ProcessId.parse(str(now)) == now and ProcessId.parse("12:x:y") is None
    assert now.signal(signal.SIGKILL)
    sleeper.wait()
    assert not now.alive()


def test_process_records_are_parsed_strictly() -> None:
    for bad in ({"pid": "1", "start": 2, "boot": "b"}, {"pid": 0, "start": 2, "boot": "b"}, [1, 2], None,
                {"pid": 5, "start": 2, "boot": "b", "extra": 1}):
        with pytest.raises(ValueError):
            ProcessId.from_json(bad)


# -- lab state files -------------------------------------------------------------------------------
def _state(lab_id: str, owner: ProcessId | None = None) -> dict[str, Any]:
    return {"lab_id": lab_id, "run_id": "r1", "owner": owner.to_json() if owner else None, "owner_pid": 0,
            "subnet": 7, "networks": [f"ucnb-{lab_id}"], "domains": [f"ucnb-{lab_id}-node01"],
            "keep": False, "nodes": {}, "created": 1.0}


@pytest.mark.parametrize("planted", ["../x", "/", "", "other1", None])
def test_a_state_file_naming_another_lab_id_is_refused(work: Path, planted: str | None) -> None:
    folder = work / "labs" / "lab0001"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({**_state("lab0001"), "lab_id": planted}))
    with pytest.raises(ValueError, match="lab_id"):
        LabState.load(folder)
    found = scan()
    assert found.labs == [] and "lab0001" in found.unreadable
    assert found.problems and "skipped" in found.problems[0]


def test_truncated_and_foreign_state_files_are_reported_and_skipped(work: Path) -> None:
    labs = work / "labs"
    good, cut, odd, link = labs / "good1", labs / "cut1", labs / "odd1", labs / "link1"
    for folder in (good, cut, odd):
        folder.mkdir(parents=True)
    (good / "state.json").write_text(json.dumps(_state("good1")))
    (cut / "state.json").write_text(json.dumps(_state("cut1"))[:40])   # cut short by kill -9
    (odd / "state.json").write_text(json.dumps({**_state("odd1"), "networks": ["default"]}))
    link.symlink_to(work.parent)
    found = scan()
    assert [s.lab_id for s in found.labs] == ["good1"]
    assert found.unreadable == {"cut1", "odd1", "link1"}
    assert len(found.problems) == 3


def test_lab_state_is_written_atomically_and_privately(work: Path) -> None:
    folder = work / "labs" / "abc123"
    folder.mkdir(parents=True)
    state = LabState("abc123", "r1", ProcessId.current(), 9, ["ucnb-abc123", "ucnb-abc123-1"],
                     ["ucnb-abc123-node01"], supervisor=ProcessId.supervisor())
    state.save(folder)
    assert (folder / "state.json").stat().st_mode & 0o777 == 0o600
    assert not [p for p in folder.iterdir() if p.name != "state.json"], "no temporary file left"
    loaded = LabState.load(folder)
    assert loaded.owner == state.owner and loaded.networks == state.networks and loaded.owner_alive()


def test_a_lab_whose_owner_or_supervisor_is_gone_is_abandoned(work: Path) -> None:
    me, dead = ProcessId.current(), dead_process()
    assert LabState("a1", "r", me, 1, [], []).owner_alive()
    assert not LabState("a1", "r", dead, 1, [], []).owner_alive()
    assert not LabState("a1", "r", me, 1, [], [], supervisor=dead).owner_alive()


# -- leases --------------------------------------------------------------------------------------
def test_a_temp_dir_is_leased_private_and_removed(work: Path) -> None:
    with leases.temp_dir(work / "cache", "unit") as tmp:
        assert tmp.is_dir() and tmp.stat().st_mode & 0o777 == 0o700
        (held,), _ = leases.all_leases()
        assert held.paths == [str(tmp)] and not held.abandoned()
    assert not tmp.exists() and leases.all_leases() == ([], [])


def test_an_abandoned_lease_is_reclaimed_inside_the_work_root_only(work: Path,
                                                                  sleeper: subprocess.Popen[bytes]) -> None:
    inside = work / "tmp" / "left-behind"
    inside.mkdir(parents=True)
    (inside / "big.iso").write_bytes(b"x")
    outside = work.parent / "outside"
    outside.mkdir()
    lease = leases.take("unit", paths=[inside])
    lease.owner = dead_process()
    # A process record for a pid now reused by an unrelated process (the sleeper).
    now = ProcessId.of(sleeper.pid)
    assert now is not None
    lease.processes = [ProcessId(sleeper.pid, now.start + 7, now.boot)]
    lease.save()
    planted = leases.leases_dir() / "unit-0123456789ab.json"
    planted.write_text(json.dumps({**json.loads(lease.file.read_text()), "paths": [str(outside)]}))
    truncated = leases.leases_dir() / "unit-ba9876543210.json"
    truncated.write_text(lease.file.read_text()[:30])
    held, problems = leases.all_leases()
    assert [h.name for h in held] == [lease.name] and len(problems) == 2
    assert held[0].abandoned()
    removed = leases.reclaim(held[0])
    assert removed == [f"unit {inside}"] and not inside.exists()
    assert outside.exists() and sleeper.poll() is None
    assert not lease.file.exists() and planted.exists()
    with pytest.raises(ValueError):
        leases.take("unit", paths=[outside])


# -- secrets -----------------------------------------------------------------------------------------
def test_generated_secrets_are_written_only_for_a_runner(work: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ucnb.evidence.redact import generated_secrets_file
    from ucnb.kernel.run import Run

    lane = lanes.get("single-node-quickstart")
    plain = Run(lane, lane.validate({}), "plainrun", tmp_path / "plain")
    token = plain.generate_secret()
    assert not generated_secrets_file("plainrun").exists(), "a plain run leaves no secrets file"
    assert plain.redactor.text(f"x{token}x") == "x[REDACTED]x"
    monkeypatch.setenv("UCNB_RUNNER", "1")
    ran = Run(lane, lane.validate({}), "runnerrun", tmp_path / "runner")
    token = ran.generate_secret()
    path = generated_secrets_file("runnerrun")
    assert path.read_text() == token + "\n" and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_short_secret_is_a_parameter_error_naming_the_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    from ucnb.runner.execute import secrets_redactor

    lane = lanes.get("baremetal-iso")
    monkeypatch.setenv("MY_INSTALLER_TOKEN", "short")
    with pytest.raises(ParameterError, match=r"installer_token_env: .*MY_INSTALLER_TOKEN has 5 characters"):
        secrets_redactor(lane, {"bootstrap_token_env": "NOT_SET_ANYWHERE",
                                "installer_token_env": "MY_INSTALLER_TOKEN"})
    monkeypatch.setenv("MY_INSTALLER_TOKEN", TOKEN40)
    assert secrets_redactor(lane, {"installer_token_env": "MY_INSTALLER_TOKEN"}).text(TOKEN40) == "[REDACTED]"


def test_the_bare_metal_lab_repr_holds_no_token() -> None:
    from ucnb.baremetal.harness import BareMetalLab

    bare = BareMetalLab(None, None, None, None, None, {}, TOKEN40, TOKEN40[::-1])  # type: ignore[arg-type]
    assert TOKEN40 not in repr(bare) and TOKEN40[::-1] not in repr(bare)


def test_only_lab_bridges_are_ever_made_or_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bridges are ours by name (`ucnb<subnet>n<i>`): any other name is refused before `ip` runs,
    and a listing keeps only ours."""
    calls: list[list[str]] = []
    listing = ('[{"ifname": "ucnb7n0"}, {"ifname": "docker0"}, {"ifname": "ucnb12n1"}, '
               '{"ifname": "ucnb7n0x"}, {"ifname": "br-ucnb1n0"}]')

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, listing if "-j" in argv else "", "")

    monkeypatch.setattr(netns.subprocess, "run", run)
    monkeypatch.setattr(netns, "exists", lambda: True)
    for name in ("docker0", "virbr0", "ucnb7n0x", "eth0"):
        with pytest.raises(ValueError, match="not a lab bridge"):
            netns.add_bridge(name, "10.77.7.1/24")
        netns.remove_bridge(name)
    assert calls == []
    assert netns.bridges() == ["ucnb12n1", "ucnb7n0"]
    netns.remove_bridge("ucnb7n0")
    assert calls[-1] == ["ip", "-n", netns.NAME, "link", "del", "ucnb7n0"]


# -- one guard for every connection ---------------------------------------------------------------
def test_every_client_of_a_lab_address_is_refused_outside_the_namespace(monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    from ucnb.baremetal.harness import BareMetalLab
    from ucnb.reference.redfish import RedfishClient

    monkeypatch.setattr(netns, "inside", lambda: False)
    assert netns.is_lab_address("10.77.3.11") and netns.is_lab_address("10.78.250.1")
    assert not netns.is_lab_address("127.0.0.1") and not netns.is_lab_address("10.79.0.1")
    with pytest.raises(LabNamespaceError):
        netns.urlopen("http://10.77.3.1:8088/api/v1/nodes", timeout=1)
    with pytest.raises(LabNamespaceError):
        RedfishClient("http://10.77.3.1:8000/redfish/v1", "admin", TOKEN40).get("/redfish/v1/Systems")

    class Deployer:
        url = "http://10.77.3.1:8088"

    bare = BareMetalLab(None, None, Deployer(), None, None, {}, TOKEN40, TOKEN40)  # type: ignore[arg-type]
    with pytest.raises(LabNamespaceError):
        bare.admin("GET", "/api/v1/nodes/worker")
    from ucnb.lab.ssh import GuestShell

    shell = GuestShell.__new__(GuestShell)
    shell.address = "10.77.3.11"
    with pytest.raises(LabNamespaceError):
        shell.connect(timeout=1)


# -- the hardware-smoke media URL -------------------------------------------------------------------
class _FakeBmc(http.server.BaseHTTPRequestHandler):
    """Enough Redfish for redfish_present; InsertMedia fetches the image as sushy-tools does."""

    fetched: ClassVar[list[tuple[str, int, bytes]]] = []

    def _json(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/redfish/v1/Systems":
            self._json({"Members": [{"@odata.id": "/redfish/v1/Systems/s1"}]})
        else:
            self._json({"PowerState": "Off"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("InsertMedia"):
            url = body["Image"]
            wrong = url.rsplit("/", 2)[0] + "/" + url.rsplit("/", 1)[1]   # without the random segment
            for attempt in (url, wrong):
                try:
                    with urllib.request.urlopen(attempt, timeout=5) as answer:
                        self.fetched.append((attempt, answer.status, answer.read()))
                except urllib.error.HTTPError as exc:
                    self.fetched.append((attempt, exc.code, b""))
        self._json({})

    def log_message(self, *_: Any) -> None:
        return None


def test_the_media_is_served_once_at_a_random_path_and_masked_in_run_json(work: Path, tmp_path: Path) -> None:
    from ucnb.baremetal import hardware_smoke as hw

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeBmc)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    iso = tmp_path / "media.iso"
    iso.write_bytes(b"ISO" * 100)
    try:
        params = hw.load_params({"deployer_url": "http://10.0.0.5:8088", "transport": "redfish",
                                 "redfish_url": f"http://127.0.0.1:{server.server_address[1]}/redfish/v1",
                                 "redfish_username": "admin"})
        env = {"ULTRACLOUD_BOOTSTRAP_TOKEN": TOKEN40, hw.REDFISH_PASSWORD_ENV: "bmc-password-1"}
        run_dir = hw.preflight(work, params, environ=env)
        done = hw.run(run_dir, iso=iso, environ=env)
    finally:
        server.shutdown()
    (good, good_status, content), (_, wrong_status, _) = _FakeBmc.fetched[-2:]
    assert (good_status, content, wrong_status) == (200, iso.read_bytes(), 404)
    secret = good.rsplit("/", 2)[1]
    assert len(secret) >= 24 and good.startswith("http://127.0.0.1:")   # on the route to the BMC
    written = (run_dir / "run.json").read_text()
    assert secret not in written and "bmc-password-1" not in written and "[REDACTED]" in written
    assert done["redfish"]["reset"] == "On"


# -- hardware-smoke preflight with nothing set ----------------------------------------------------
def test_preflight_with_nothing_set_is_blocked_listing_every_missing_input(
        work: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    for name in ("ULTRACLOUD_BOOTSTRAP_TOKEN", "ULTRACLOUD_REDFISH_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    result = cli.invoke("hardware-smoke", "preflight")
    assert result.exit_code == 3, result.output
    latest = work / "hardware-smoke" / "latest"
    assert "status=blocked" in (latest / "status.env").read_text()
    missing = (latest / "missing-requirements.txt").read_text().splitlines()
    assert [m.split(":")[0] for m in missing] == ["deployer_url", "usb_device", "redfish_url",
                                                  "redfish_username", "redfish password", "bootstrap token"]
    assert "missing_count=6" in (latest / "status.env").read_text()


def test_secrets_too_short_to_mask_block_the_run_before_anything_is_presented(work: Path) -> None:
    from ucnb.baremetal import hardware_smoke as hw

    params = hw.load_params({"deployer_url": "http://10.0.0.5:8088", "transport": "redfish",
                             "redfish_url": "https://bmc.example/redfish/v1", "redfish_username": "root"})
    env = {"ULTRACLOUD_BOOTSTRAP_TOKEN": "tok", hw.REDFISH_PASSWORD_ENV: "calvin"}
    run_dir = hw.preflight(work, params, environ=env)
    missing = (run_dir / "missing-requirements.txt").read_text()
    assert "ULTRACLOUD_REDFISH_PASSWORD has 6 characters" in missing
    assert "ULTRACLOUD_BOOTSTRAP_TOKEN has 3 characters" in missing
    with pytest.raises(ParameterError, match="blocked"):
        hw.run(run_dir, iso=run_dir / "none.iso", environ=env)


# -- parameters checked before any VM exists -------------------------------------------------------
@pytest.mark.parametrize("lane, values, named", [
    ("fresh-smoke", {"faults": [{"kind": "power_loss", "target": "node99"}]}, "faults[1].target"),
    ("fresh-smoke", {"faults": [{"kind": "service_restart", "target": "node04", "service": "flaredb"}]},
     "faults[1].service"),
    ("fresh-smoke", {"faults": [{"kind": "service_restart", "target": "one", "service": "nosuch"}]},
     "faults[1].service"),
    ("fresh-smoke", {"faults": [{"kind": "power_loss", "target": "leader", "hold_s": -1}]}, "hold_s"),
    ("fresh-smoke", {"faults": [{"kind": "meteor", "target": "leader"}]}, "kind"),
    ("fresh-smoke", {"faults": [{"kind": "link_down", "target": "one", "nic": 5}]}, "nic"),
    ("fresh-smoke", {"voters": ["node01", "node02", "node09"]}, "voters"),
    ("fresh-smoke", {"client": "node09"}, "client"),
    ("fresh-smoke", {"nodes": ["node01", "node02", "node03", "node04", "node07"]}, "nodes"),
    ("chainfire-live-membership-proof", {"temporary": "node01"}, "temporary"),
    ("baremetal-iso", {"disk_size": "512M;reboot"}, "disk_size"),
    ("baremetal-iso", {"worker_disk_serial": "x y"}, "worker_disk_serial"),
    ("deployer-vm-smoke", {"disk_size": "-o x"}, "disk_size"),
    ("single-node-quickstart", {"stop_services": ["iam"]}, "stop_services"),
    ("single-node-quickstart", {"memory_mib": -5}, "memory_mib"),
])
def test_bad_values_are_refused_by_the_schema_naming_the_parameter(lane: str, values: dict[str, Any],
                                                                     named: str) -> None:
    with pytest.raises(ParameterError) as info:
        lanes.get(lane).validate(values)
    assert named in str(info.value)


def test_values_reaching_argv_and_guest_commands_are_checked_where_they_are_used() -> None:
    from ucnb.lab.lab import DiskConfig
    from ucnb.reference.cluster import parse_cluster

    with pytest.raises(ParameterError, match="disk"):
        DiskConfig("uc-root", "1T; reboot")
    with pytest.raises(ParameterError, match="disk"):
        DiskConfig("-o x", "2G")
    plan = {"nixos_configuration": "n", "disko_config_path": "d.nix"}
    for bad in ("/dev/disk/by-id/x; rm -rf /", "/dev/disk/by-id/", "/dev/sda", "/dev/disk/by-id/$(id)"):
        with pytest.raises(ParameterError, match="target_disk_by_id"):
            parse_cluster({"node_classes": {"c": {"install_plan": {**plan, "target_disk_by_id": bad}}}})
    good = parse_cluster({"node_classes": {"c": {"install_plan": {
        **plan, "target_disk_by_id": "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0M1234-part1"}}}})
    assert good.node_classes["c"].install_plan.target_disk_by_id.endswith("-part1")


# -- the work root, resolved once ------------------------------------------------------------------
def test_a_relative_work_root_is_resolved_once_and_exported(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ucnb import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", "relative/work")
    assert paths.pin_work_root() == tmp_path / "relative/work"
    monkeypatch.chdir("/")
    assert os.environ["ULTRACLOUD_WORK_ROOT"] == str(tmp_path / "relative/work")
    assert paths.work_root() == tmp_path / "relative/work", "a later directory change moves nothing"


# -- the runner's interrupt hooks --------------------------------------------------------------------
def test_after_a_signal_no_further_cell_starts_and_the_kernel_is_interrupted(
        sleeper: subprocess.Popen[bytes]) -> None:
    from ucnb.runner.interrupt import InterruptedBeforeCell, Interruption

    interruption = Interruption()
    with interruption.handling():
        interruption.kernel_started(sleeper.pid)
        interruption.before_cell()
        assert interruption.cell_running
        os.kill(os.getpid(), signal.SIGTERM)   # handled: this process goes on
        assert interruption.requested and interruption.signals == [signal.SIGTERM]
        assert sleeper.wait(timeout=5) == -signal.SIGINT, "the running cell's kernel got SIGINT"
        interruption.after_cell()
        with pytest.raises(InterruptedBeforeCell):
            interruption.before_cell()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert "SIGTERM" in interruption.describe()


# -- suite roots and consoles, redacted like lane roots ----------------------------------------------
def test_a_suite_redacts_what_a_lane_reports_in_its_files_and_console(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane outcome quoting its token unredacted (as a runner-side error message would): the
    suite's junit.xml, suite.json, JUnit copy and console summary (wrapped at 40 columns) hold none of it."""
    import io

    from rich.console import Console

    from ucnb.evidence.redact import Redactor
    from ucnb.runner import execute, suites

    monkeypatch.setenv("UCNB_OUTPUTS", str(tmp_path / "outputs"))

    def fake_run_lane(name: str, profile: str, **kw: Any) -> execute.RunOutcome:
        root = kw["parent"] / f"20260101T000000Z-{'ab' * 4}"
        (root / "logs").mkdir(parents=True)
        (root / "events.jsonl").write_text("")
        message = f"the deployer refused token {TOKEN40}"
        result = {"verdict": "failed", "accelerator": None, "steps": {"passed": 0, "skipped": 0},
                  "failing_step": {"name": "phone-home", "node": "worker", "last_observation": message},
                  "error": {"message": message}}
        return execute.RunOutcome(1, root, result, Redactor([TOKEN40]))

    monkeypatch.setattr(execute, "run_lane", fake_run_lane)
    spec = suites.SuiteSpec(description="x", profile="ultracloud",
                            steps=(suites.SuiteStep(lane="single-node-quickstart"),))
    err, out = io.StringIO(), io.StringIO()
    outcome = suites.run(suites.plan("x", suites={"x": spec}), junit_file=tmp_path / "ci" / "junit.xml",
                         console=Console(file=err, width=200), out=Console(file=out, width=200))
    assert outcome.verdict == "failed"
    for path in (outcome.root / "junit.xml", outcome.root / "suite.json", tmp_path / "ci" / "junit.xml"):
        assert TOKEN40 not in path.read_text() and "REDACTED" in path.read_text()
    assert TOKEN40 not in err.getvalue() + out.getvalue() and "REDACTED" in out.getvalue()


def test_the_runner_console_masks_a_token_cut_by_a_line_wrap() -> None:
    import io

    from rich.console import Console

    from ucnb.evidence.redact import Redactor
    from ucnb.runner.execute import redacted_console

    buffer = io.StringIO()
    console = redacted_console(Console(file=buffer, width=30, soft_wrap=False), Redactor([TOKEN40]))
    console.print(f"phone-home refused: bad token {TOKEN40} from worker")   # wrapped inside the token
    shown = buffer.getvalue()
    assert "\n" in shown.strip() and "REDACTED" in shown
    pieces = {TOKEN40[i:i + 6] for i in range(len(TOKEN40) - 5)}
    assert not [p for p in pieces if p in shown], shown


def test_concurrent_builds_of_one_cache_key_publish_one_complete_result(tmp_path: Path) -> None:
    """Content-addressed caches: each build renames its finished staging folder into place; the
    loser of a race keeps the winner's (same inputs) and never leaves a half folder."""
    from concurrent.futures import ThreadPoolExecutor

    from ucnb.files import publish_dir as _publish

    target = tmp_path / "cache" / "key"
    target.parent.mkdir()
    stagings = []
    for i in range(8):
        staging = tmp_path / f"staging{i}"
        staging.mkdir()
        (staging / "payload").write_text(f"build {i}")
        (staging / "build.json").write_text("{}")
        stagings.append(staging)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda s: _publish(s, target, "build.json"), stagings))
    assert (target / "build.json").exists() and (target / "payload").read_text().startswith("build ")
    assert sorted(p.name for p in target.iterdir()) == ["build.json", "payload"]
    (target / "build.json").unlink()   # an incomplete folder (from older code) is replaced
    late = tmp_path / "late"
    late.mkdir()
    (late / "build.json").write_text("{}")
    _publish(late, target, "build.json")
    assert (target / "build.json").exists()


def test_a_kernel_that_swallows_the_interrupt_is_killed_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell that catches KeyboardInterrupt (or sits in C code) cannot hold the run: SIGINT is
    resent, then the kernel is killed; papermill is given up on if it never notices."""
    import sys
    import time

    from ucnb.runner import interrupt

    monkeypatch.setattr(interrupt, "GRACE_S", 0.6)
    monkeypatch.setattr(interrupt, "RESEND_S", 0.1)
    monkeypatch.setattr(interrupt, "GIVE_UP_S", 0.2)
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                                 "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    interruption = interrupt.Interruption()
    try:
        with interruption.handling():
            interruption.kernel_started(stubborn.pid)
            interruption.before_cell()
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while stubborn.poll() is None and time.monotonic() < deadline:
                interruption.tick()
                time.sleep(0.05)
        assert stubborn.returncode == -signal.SIGKILL and "killed" in interruption.describe()
        time.sleep(0.3)
        assert interruption.stuck()
    finally:
        stubborn.kill()
        stubborn.wait()
