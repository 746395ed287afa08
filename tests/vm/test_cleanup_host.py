"""`ucnb lab clean` on a real libvirt host, with planted state files and libvirt objects of other
owners: it refuses what it cannot trust, touches nothing outside its work root, never signals a
process that merely reuses a recorded pid, leaves running and kept labs alone, and removes (and
says) what dead runs left. Runs in a private work root: other labs on the host are never seen."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from ucnb.host import netns
from ucnb.host.procs import ProcessId
from ucnb.lab import domain as domain_mod
from ucnb.lab import leases, registry

from ..conftest import ROOT, Cli, dead_process

UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)


def _state(work: Path, lab_id: str, owner: ProcessId | None, subnet: int, keep: bool = False) -> None:
    folder = work / "labs" / lab_id
    folder.mkdir(parents=True)
    registry.LabState(lab_id, f"run-{lab_id}", owner, subnet, [f"ucnb-{lab_id}"], [f"ucnb-{lab_id}-node01"],
                      keep=keep).save(folder)
    (folder / "node01-system.qcow2").write_bytes(b"disk")


def _domain(conn: libvirt.virConnect, lab_id: str, labs: str | None, owner: ProcessId,
            log: Path) -> str:
    """A small running domain (firmware with nothing to boot), tagged as ucnb tags lab domains."""
    metadata = {"lab": lab_id, "run": "", "node": "node01", "owner": str(owner)}
    if labs is not None:
        metadata["labs"] = labs
    spec = domain_mod.NodeSpec(name="node01", memory_mib=32, vcpus=1, kernel=None, initrd=None, cmdline="",
                               disks=(), nics=(), serial_log=log, metadata=metadata if labs else {})
    xml = domain_mod.domain_xml(lab_id, spec)
    if labs is None:   # a ucnb-named domain without ucnb's metadata: not ours to judge
        xml = xml.replace(xml[xml.index("<metadata>"):xml.index("</metadata>") + len("</metadata>")], "")
    return str(conn.createXML(xml, 0).name())


@pytest.fixture()
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_host: None) -> Iterator[dict[str, Any]]:
    work = tmp_path / "work"
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(work))
    conn = registry.connect()
    made: dict[str, list[str]] = {"domains": [], "networks": [], "bridges": []}
    yield {"work": work, "conn": conn, "made": made}
    for name in made["domains"]:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).destroy()
    for name in made["networks"]:
        with contextlib.suppress(libvirt.libvirtError):
            conn.networkLookupByName(name).destroy()
    for name in made["bridges"]:
        netns.remove_bridge(name)


def _clean(work: Path, *args: str) -> list[str]:
    done = subprocess.run([*UCNB, "lab", "clean", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ULTRACLOUD_WORK_ROOT": str(work)})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_planted_state_and_foreign_objects_are_refused_and_dead_runs_cleaned(host: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    work, conn, made = host["work"], host["conn"], host["made"]
    labs = work / "labs"
    labs.mkdir(parents=True)
    # What a planted lab_id would point at: must survive.
    (work / "x").mkdir()
    (work / "x" / "keep.txt").write_text("keep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    for name, lab_id in (("p1", "../x"), ("p2", "/"), ("p3", ""), ("p4", "../../outside")):
        (labs / name).mkdir()
        (labs / name / "state.json").write_text(json.dumps(
            {"lab_id": lab_id, "run_id": "r", "owner_pid": 1, "subnet": 3, "network": "ucnb-" + lab_id,
             "domains": [], "nodes": {}}))
    (labs / "p5").mkdir()
    (labs / "p5" / "state.json").write_text('{"lab_id": "p5", "run_id": "r", "owner')   # cut by kill -9

    # A process started after a lab's state was written, reusing its owner's pid: never signalled.
    unrelated = subprocess.Popen(["sleep", "120"])
    now = ProcessId.of(unrelated.pid)
    assert now is not None
    tag = secrets.token_hex(3)
    reused, dead, live, kept, stopped = (f"{k}{tag}" for k in ("reused", "dead", "live", "kept", "stop"))
    owner_b = subprocess.Popen(["sleep", "120"])   # a live owner that an explicit clean stops
    try:
        with registry.host_lock():
            subnet = max(set(range(200, 250)) - registry.used_subnets(conn))
            netns.add_bridge(f"ucnb{subnet}n0", f"10.77.{subnet}.1/24")   # as a lab makes its network
            made["bridges"].append(f"ucnb{subnet}n0")
            conn.networkCreateXML(domain_mod.network_xml(f"ucnb-{dead}", f"ucnb{subnet}n0"))
            made["networks"].append(f"ucnb-{dead}")
            orphan_bridge = max(set(range(200, 250)) - registry.used_subnets(conn))
            # A bridge whose network was never made (its lab killed in between).
            netns.add_bridge(f"ucnb{orphan_bridge}n1", f"10.78.{orphan_bridge}.1/24")
            made["bridges"].append(f"ucnb{orphan_bridge}n1")
            _state(work, dead, dead_process(), subnet)
        _state(work, reused, ProcessId(now.pid, now.start - 1, now.boot), 201)
        _state(work, live, ProcessId.current(), 202)
        _state(work, kept, dead_process(), 203, keep=True)
        _state(work, stopped, ProcessId.of(owner_b.pid), 204)
        (labs / f"empty{tag}").mkdir()

        orphan, foreign, untagged = f"orph{tag}", f"forn{tag}", f"untg{tag}"
        made["domains"] += [_domain(conn, orphan, str(labs), dead_process(), tmp_path / "o.log"),
                            _domain(conn, foreign, "/somebody/else/work/labs", dead_process(),
                                    tmp_path / "f.log"),
                            _domain(conn, untagged, None, dead_process(), tmp_path / "u.log")]
        (work / "secrets").mkdir(mode=0o700)
        (work / "secrets" / "deadrun1").write_text("uc-generated-secret-of-a-dead-run\n")
        (work / "secrets" / "liverun1").write_text("uc-generated-secret-of-a-live-run\n")
        live_lease = leases.take("secrets", paths=[work / "secrets" / "liverun1"])
        stale = work / "cache" / ".ucnb-tmp-image-build-0123456789ab"
        stale.mkdir(parents=True)
        stale_lease = leases.take("temp-image-build", paths=[stale])
        stale_lease.owner = dead_process()
        stale_lease.save()

        out = _clean(work)
        text = "\n".join(out)
        # Refused, reported, and nothing they point at touched.
        assert sum(1 for line in out if line.startswith("skipped ")) == 5, text
        assert (work / "x" / "keep.txt").exists() and (outside / "keep.txt").exists()
        assert all((labs / p).exists() for p in ("p1", "p2", "p3", "p4", "p5"))
        # The unrelated process lives; the lab whose recorded owner it is not was cleaned.
        assert unrelated.poll() is None
        assert not (labs / reused).exists() and f"removed files {labs / reused}" in out
        # The dead run's lab: its network (named by its state) and files.
        assert f"removed network ucnb-{dead}" in out and not (labs / dead).exists()
        with pytest.raises(libvirt.libvirtError):
            conn.networkLookupByName(f"ucnb-{dead}")
        assert f"ucnb{subnet}n0" not in netns.bridges()   # its bridge with it
        assert f"removed bridge ucnb{orphan_bridge}n1" in out
        assert f"ucnb{orphan_bridge}n1" not in netns.bridges()
        # A run in progress and a kept lab are left alone (and said so).
        assert (labs / live).exists() and f"left lab {live} alone" in text
        assert (labs / kept).exists() and (labs / stopped).exists()
        # libvirt objects: only ours by metadata, of this work root, with a dead owner.
        assert f"removed domain ucnb-{orphan}-node01" in out
        names = {d.name() for d in conn.listAllDomains()}
        assert f"ucnb-{foreign}-node01" in names and f"ucnb-{untagged}-node01" in names
        assert f"ucnb-{orphan}-node01" not in names
        # Leftovers of dead runs, and nothing a live lease holds.
        assert not (work / "secrets" / "deadrun1").exists() and (work / "secrets" / "liverun1").exists()
        assert not stale.exists() and not (labs / f"empty{tag}").exists()
        assert live_lease.file.exists() and not stale_lease.file.exists()

        out = _clean(work, "--all")   # kept labs too; still never a live one
        assert not (labs / kept).exists() and (labs / live).exists() and (labs / stopped).exists()
        out = _clean(work, stopped)   # a lab named: its (verified) owner is stopped first
        assert f"removed process {owner_b.pid} (owner of lab {stopped})" in out
        assert owner_b.wait(timeout=10) == -9 and not (labs / stopped).exists()
        assert unrelated.poll() is None
        live_lease.release()
    finally:
        unrelated.kill()
        owner_b.kill()
        unrelated.wait()
        owner_b.wait()


def test_a_subnet_another_work_root_uses_is_never_allocated(host: dict[str, Any]) -> None:
    """Labs of another checkout or user have no state here: their libvirt networks (bridge and
    address) still mark the subnet taken, and their lab ids as in use."""
    conn, made = host["conn"], host["made"]
    tag = secrets.token_hex(3)
    with registry.host_lock():
        free = sorted(set(range(200, 250)) - registry.used_subnets(conn))
        bridge_only, address_only = free[-1], free[-2]
        netns.add_bridge(f"ucnb{bridge_only}n0", "10.99.0.1/24")   # another work root's lab
        made["bridges"].append(f"ucnb{bridge_only}n0")
        conn.networkCreateXML(domain_mod.network_xml(f"ucnb-othr{tag}", f"ucnb{bridge_only}n0"))
        # Another user's own libvirt network on a lab address (no bridge of ours).
        conn.networkCreateXML(f"<network><name>ucnb-othr{tag}-1</name><bridge name='uc{tag}x'/>"
                              f"<dns enable='no'/><ip address='10.78.{address_only}.1' prefix='24'/>"
                              "</network>")
        made["networks"] += [f"ucnb-othr{tag}", f"ucnb-othr{tag}-1"]
        used = registry.used_subnets(conn)
    assert {bridge_only, address_only} <= used
    assert registry.names_taken(conn, f"othr{tag}") and not registry.names_taken(conn, f"free{tag}")
