"""Integration: real guests under libvirt (TCG here), driven through the ucnb lab layer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from ucnb.errors import InfrastructureError, LaneFailure
from ucnb.host import netns
from ucnb.kernel.record import Recorder
from ucnb.lab import registry
from ucnb.lab.lab import NETWORK_PREFIXES, Lab, NodeConfig

from ..lab_fixtures import OwnRuns, shared_run


@shared_run()
def lab(lab_image: Any, accelerator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two booted guests shared by the module's tests; nothing of them left once it is done."""
    left = OwnRuns(tmp_path_factory.mktemp("lab"))
    with Lab([NodeConfig("node01", services=("chainfire",)), NodeConfig("node02")], lab_image,
             accelerator, recorder=Recorder()) as lab:
        left.add(lab)
        lab.boot()
        yield lab
    left.assert_nothing_left()


def test_boot_markers_are_timestamped_in_order(lab: Lab) -> None:
    rows = [r for r in lab.recorder.rows["markers"] if r.node == "node01"]
    names = [r.marker for r in rows]
    for expected in ("lab.boot.node01", "lab.disk.mounted", "lab.net.up", "lab.init.done"):
        assert expected in names
    assert names.index("lab.boot.node01") < names.index("lab.init.done")
    assert all(r.since_boot >= 0 for r in rows)


def test_ssh_exit_codes_streams_and_deadline(lab: Lab) -> None:
    node = lab["node01"]
    result = node.run("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result
    big = node.run("head -c 300000 /dev/zero | tr '\\0' x; head -c 200000 /dev/zero | tr '\\0' y >&2")
    assert len(big.stdout) == 300000 and len(big.stderr) == 200000  # drained together, no deadlock
    start = time.monotonic()
    slow = node.run("sleep 20", timeout=1.5)
    assert slow.exit_status is None and time.monotonic() - start < 5
    with pytest.raises(LaneFailure, match="node01: `false` failed"):
        node.run("false", check=True)


def test_disks_have_stable_selectors(lab: Lab) -> None:
    out = lab["node01"].run("readlink /dev/disk/by-id/virtio-ucnb-system", check=True).stdout
    assert out.strip().endswith("vda")


def test_guests_reach_each_other_on_the_lab_network(lab: Lab) -> None:
    assert lab["node02"].run(f"ping -c 1 -W 2 {lab['node01'].address}", timeout=10).ok


def test_a_guest_of_another_lab_is_out_of_reach(lab: Lab, lab_image: Any, accelerator: Any,
                                                own_runs: OwnRuns) -> None:
    """Labs side by side share the namespace, not a wire: with routes to each other through
    their gateways, a guest reaches the namespace's own address on the other lab's bridge, but
    not the other lab's guest (the namespace forwards nothing between bridges)."""
    here = lab["node01"]
    with Lab([NodeConfig("node01")], lab_image, accelerator) as other:
        own_runs.add(other)
        other.boot()
        there = other["node01"]
        net_here, net_there = (f"{NETWORK_PREFIXES[0]}.{x.subnet}" for x in (lab, other))
        assert there.run(f"ip route add {net_here}.0/24 via {net_there}.1", timeout=10).ok
        route_back = f"{net_there}.0/24 via {net_here}.1"
        assert here.run(f"ip route add {route_back}", timeout=10).ok
        try:
            assert there.run(f"ping -c 1 -W 2 {net_here}.1", timeout=10).ok   # the route works
            assert not there.run(f"ping -c 2 -W 2 {here.address}", timeout=15).ok
        finally:
            here.run(f"ip route del {route_back}", timeout=10)


def test_a_network_libvirt_refuses_leaves_no_bridge(lab_image: Any, accelerator: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No lab comes of it (so no own_runs): the lab's reservation is undone, its bridge too."""
    made: list[str] = []
    add = netns.add_bridge
    monkeypatch.setattr(netns, "add_bridge", lambda name, address: (made.append(name), add(name, address)))

    def refuse(self: libvirt.virConnect, xml: str) -> None:
        raise libvirt.libvirtError("refused by the test")

    monkeypatch.setattr(libvirt.virConnect, "networkCreateXML", refuse)
    with pytest.raises(InfrastructureError, match="cannot create lab network"):
        Lab([NodeConfig("node01")], lab_image, accelerator)
    assert len(made) == 1
    with registry.host_lock():   # no lab is between making its bridge and its network
        on_networks = {n.bridgeName() for n in registry.connect().listAllNetworks()}
        assert made[0] not in netns.bridges() or made[0] in on_networks   # gone (or another lab's since)


def test_link_down_cuts_the_node_off_and_up_heals(lab: Lab) -> None:
    node, peer = lab["node02"], lab["node01"]
    node.set_link(False)
    try:
        assert not peer.run(f"ping -c 1 -W 1 {node.address}", timeout=10).ok
    finally:
        node.set_link(True)
    assert peer.run(f"ping -c 1 -W 3 {node.address}", timeout=10).ok


def test_pause_and_resume(lab: Lab) -> None:
    node = lab["node02"]
    node.pause()
    try:
        assert not lab["node01"].run(f"ping -c 1 -W 1 {node.address}", timeout=10).ok
    finally:
        node.resume()
    assert node.run("true", timeout=15).ok


def test_power_loss_and_cold_start_keep_the_disk(lab: Lab) -> None:
    node = lab["node02"]
    node.run("echo survived > /lab/var/canary && sync", check=True)
    node.power_loss()
    assert not node.running()
    node.start()
    node.wait_marker("lab.init.done", 60)
    node.wait_ssh(60)
    assert node.run("cat /lab/var/canary", check=True).stdout == "survived\n"


def test_failure_marker_ends_the_wait_at_once(lab_image: Any, accelerator: Any, own_runs: OwnRuns) -> None:
    with Lab([NodeConfig("node01", services=("no-such-service",))], lab_image, accelerator) as bad:
        own_runs.add(bad)
        node = bad["node01"]
        node.start()
        start = time.monotonic()
        failure = r"failure marker 'lab\.service\.failed\.no-such-service-unknown'"
        with pytest.raises(LaneFailure, match=failure):
            node.wait_marker("lab.sshd.started", timeout=120)
        assert time.monotonic() - start < 30


def test_wait_timeout_names_node_condition_and_last_observation(lab: Lab) -> None:
    from ucnb.kernel.wait import wait_until

    with pytest.raises(LaneFailure) as info:
        wait_until(lambda: lab["node01"].run("echo not-yet; exit 1"), timeout=1, what="the moon",
                   node="node01", recorder=lab.recorder)
    assert "node01: timed out after 1s waiting for the moon" in str(info.value)
    assert "not-yet" in str(info.value)


def test_teardown_removes_everything(lab_image: Any, accelerator: Any, own_runs: OwnRuns) -> None:
    temp = Lab([NodeConfig("node01")], lab_image, accelerator)
    own_runs.add(temp)
    temp["node01"].start()
    assert own_runs.domains() == [f"ucnb-{temp.lab_id}-node01"]
    # While the lab lives the check sees each kind of thing it owns (so it cannot pass by not looking).
    assert {kind for kind, _ in own_runs.leftovers()} == {"domain", "network", "lab folder", "process"}
    temp.teardown()
    assert own_runs.settled_leftovers() == []
