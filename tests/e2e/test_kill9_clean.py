"""kill -9 of the runner in the middle of a bare-metal install and of a hardware-smoke run, then
`ucnb lab clean` with no lab named: no domain, network, storage pool, sushy-emulator process,
temporary or staging folder, secrets file or lease of that run remains (and nothing else's is
touched: only abandoned runs are cleaned)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from ..conftest import ROOT, Cli
from ..lab_fixtures import ABANDONS_LABS, kernel_processes, leftovers, settled

pytestmark = ABANDONS_LABS
UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)


def _clean() -> str:
    done = subprocess.run([*UCNB, "lab", "clean"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pools() -> set[str]:
    from ucnb.lab.registry import connect

    return {p.name() for p in connect().listAllStoragePools()}


def _run_leases(run_id: str = "", owner_pid: int | None = None) -> list[str]:
    from ucnb.lab import leases

    held, _ = leases.all_leases()
    return [h.describe() for h in held if (run_id and h.run_id == run_id) or h.owner.pid == owner_pid]


def test_kill_9_during_baremetal_iso_then_clean_leaves_nothing(outputs: Path, lab_host: None) -> None:
    from ucnb import paths
    from ucnb.lab.registry import connect, list_labs, tagged_domains

    proc = subprocess.Popen([*UCNB, "run", "baremetal-iso", "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "UCNB_OUTPUTS": str(outputs)})
    deadline = time.monotonic() + 400
    run_id = lab_id = ""
    while True:   # until both machines are installing from their ISOs
        assert proc.poll() is None, "the lane ended before its machines installed"
        assert time.monotonic() < deadline, "the machines never started"
        roots = list((outputs / "baremetal-iso").glob("2*"))
        run_id = roots[0].name.rsplit("-", 1)[1] if roots else ""
        active = [t for t in tagged_domains(connect()) if t.run_id == run_id and t.running]
        if run_id and len(active) == 2:
            lab_id = active[0].lab_id
            break
        time.sleep(0.2)
    secrets_file = paths.work_root() / "secrets" / run_id
    assert secrets_file.exists() and secrets_file.stat().st_mode & 0o777 == 0o600   # generated tokens
    assert (paths.labs_dir() / lab_id).stat().st_mode & 0o777 == 0o700
    proc.kill()   # the runner alone: its kernel, VMs, deployer thread and files are orphaned
    proc.wait(timeout=30)
    assert leftovers({run_id}, {lab_id}), "the run's lab should outlive its killed runner until cleaned"
    out = _clean()
    assert f"removed files {paths.labs_dir() / lab_id}" in out and f"removed secrets {secrets_file}" in out
    assert settled(lambda: [*leftovers({run_id}, {lab_id}), *map(str, kernel_processes({run_id}))],
                   grace_s=1) == []
    assert not secrets_file.exists() and _run_leases(run_id) == []
    assert lab_id not in {s.lab_id for s in list_labs()}


# The process whose kill -9 the test simulates: it drives a lab machine through a real BMC emulator
# (sushy-tools) with `hardware_smoke.run`, and holds inside run once the media is presented.
HELPER = r"""
import dataclasses, json, sys, time
from pathlib import Path
import ucnb
from ucnb.baremetal import harness, hardware_smoke as hw
from ucnb.lab import domain as domain_mod, leases
from ucnb.reference.redfish import SushyEmulator

ready, work = Path(sys.argv[1]), Path(sys.argv[2])
run = ucnb.start_run({"lane_name": "baremetal-iso", "profile": "lab"})
bare = harness.prepare(run, [("worker", "worker", "uc-worker-root")], memory_mib=256, disk_size="512M",
                       bootstrap_token_env="ULTRACLOUD_BOOTSTRAP_TOKEN")
node = bare.nodes["worker"].node
bare_spec = dataclasses.replace(node.spec, cdrom=None)   # a defined machine with no media, as a BMC sees it
machine = bare.lab.conn.defineXML(domain_mod.domain_xml(bare.lab.lab_id, bare_spec))
sushy = SushyEmulator(bare.lab.directory / "bmc", [machine.UUIDString()], "admin",
                      "canary-bmc-password-71c3").start()
run_dir = hw.preflight(work, hw.load_params({
    "deployer_url": bare.deployer_url, "node_id": "worker", "hostname": "worker", "transport": "redfish",
    "redfish_url": sushy.url + "/redfish/v1", "redfish_username": "admin",
    "extra_kernel_params": [f"ultracloud.ip={node.address}/24"]}))
present = hw.redfish_present

def present_and_hold(*args, **kwargs):
    done = present(*args, **kwargs)
    media = [p for lease in leases.all_leases()[0] if lease.kind == "temp-hw-media" for p in lease.paths]
    ready.write_text(json.dumps({"lab": bare.lab.lab_id, "sushy": sushy._proc.pid, "pool": sushy.pool,
                                 "media": media, "uuid": machine.UUIDString(), "reset": done["reset"]}))
    time.sleep(600)

hw.redfish_present = present_and_hold
hw.run(run_dir, artifacts=bare.artifacts)
"""


def test_kill_9_during_hardware_smoke_run_then_clean_leaves_nothing(outputs: Path, tmp_path: Path,
                                                                   lab_host: None) -> None:
    from ucnb.host.procs import ProcessId
    from ucnb.lab.registry import connect

    ready = tmp_path / "ready.json"
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs), "ULTRACLOUD_BOOTSTRAP_TOKEN": "canary-hw-token-4d2e9a",
           "ULTRACLOUD_REDFISH_PASSWORD": "canary-bmc-password-71c3"}
    for name in ("UCNB_RUN_ID", "UCNB_PROOF_ROOT", "UCNB_RUNNER"):
        env.pop(name, None)
    helper = subprocess.Popen([sys.executable, "-c", HELPER, str(ready), str(tmp_path / "hw")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while not ready.exists():
        assert helper.poll() is None, helper.stderr.read() if helper.stderr else ""
        assert time.monotonic() < deadline, "the media was never presented"
        time.sleep(0.2)
    state = json.loads(ready.read_text())
    sushy = ProcessId.of(state["sushy"])
    assert sushy is not None and state["pool"] in _pools() and state["reset"] == "On"
    assert state["media"] and all(Path(p).is_dir() for p in state["media"])
    helper.send_signal(signal.SIGKILL)   # kill -9 of the process running `hardware-smoke run`
    helper.wait(timeout=30)
    assert sushy.alive(), "the emulator (its own session) should outlive its killed parent until cleaned"
    out = _clean()
    assert f"process {state['sushy']} (sushy)" in out and f"storage pool {state['pool']}" in out
    assert settled(lambda: [what for what, here in (("the emulator", sushy.alive()),
                                                    ("its storage pool", state["pool"] in _pools())) if here],
                   grace_s=1) == []
    with pytest.raises(libvirt.libvirtError):
        connect().lookupByUUIDString(state["uuid"])   # the BMC's machine: destroyed and undefined
    assert not any(Path(p).exists() for p in state["media"]), "the token-bearing ISO's folder remains"
    assert leftovers(set(), {state["lab"]}) == [] and _run_leases(owner_pid=helper.pid) == []
