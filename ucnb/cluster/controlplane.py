"""The control plane of a cluster lab: the KV role's members, their bootstrap and their views.

Lanes use it to form the cluster, find the leader, tabulate membership and check that local
(serializable) reads on every member return the expected data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pandas as pd

from ucnb.cluster.kv import KV, KVUnavailable, Member
from ucnb.errors import LaneFailure, ParameterError
from ucnb.kernel.record import Recorder
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import Lab, Node, NodeConfig
from ucnb.lazy import lazy_module
from ucnb.profiles import Profile

if TYPE_CHECKING:
    import pandas as pd
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

CHECK_PREFIX = "check/"  # keys the lanes write and expect on every member, read in one range
VIEW_TIMEOUT_S = 60.0    # how long a view of the cluster (its member list) is asked for again


def cluster_node_configs(profile: Profile, names: list[str] | None = None) -> list[NodeConfig]:
    """Node configs from the profile's cluster file (product shape) and its per-class services."""
    cluster = profile.cluster()
    configs = []
    for name in names or list(cluster.nodes):
        if name not in cluster.nodes:
            raise ParameterError(f"nodes: {name!r} is not in the {profile.name} cluster file "
                                 f"(it has {', '.join(cluster.nodes)})")
        services = profile.node_classes[cluster.resolved(name).node_class]
        configs.append(NodeConfig(name, services=tuple(services.services), held=tuple(services.held),
                                  memory_mib=services.memory_mib, networks=2))
    return configs


class ControlPlane:
    """The KV members of a lab (initially `voters`), driven through the KV role."""

    def __init__(self, lab: Lab, profile: Profile, recorder: Recorder, voters: list[str], token: str):
        self.lab, self.profile, self.recorder, self.token = lab, profile, recorder, token
        self.kv = KV(profile.role("kv"), lab)
        self.members: list[str] = list(voters)   # names of current members (voters and learners)
        self.expected: dict[str, str] = {}       # keys every member must serve

    # -- bootstrap -------------------------------------------------------------------------
    def bootstrap(self, timeout: float = 60.0) -> None:
        """Write each voter's settings, start them together, wait until each is healthy.

        Each voter is configured and started on its own thread, so they start within one SSH call
        of each other (one after the other, 1-8 s apart on a loaded host, the first waited
        alone for a quorum), and waited for at once."""
        cluster = {n: self.kv.peer_url(n) for n in self.members}
        start = self.profile.service_manager.start.format(service=self.kv.role.service)

        def start_one(name: str) -> None:
            self.kv.configure(self.lab[name], self.kv.config(name, cluster, "new", self.token))
            self.lab[name].run(start, timeout=15, check=True)

        self._each_member(start_one)
        self._each_member(lambda name: self.wait_healthy(name, timeout))

    def restore(self, snapshot: str, token: str, timeout: float = 60.0) -> None:
        """Restore every member from `snapshot` (a file at that path on each) into a NEW cluster:
        each member stopped and its data replaced (in parallel), given the new `token`'s settings;
        then all started together, and each waited for until healthy. Nothing of the old cluster
        remains."""
        stop = self.profile.service_manager.stop.format(service=self.kv.role.service)
        start = self.profile.service_manager.start.format(service=self.kv.role.service)
        cluster = {n: self.kv.peer_url(n) for n in self.members}

        def restore_one(name: str) -> None:
            node = self.lab[name]
            node.run(stop, timeout=45, check=True)
            self.kv.snapshot_restore(node, name, cluster, token, snapshot)
            self.kv.configure(node, self.kv.config(name, cluster, "new", token))

        self._each_member(restore_one)
        self.token = token
        for name in self.members:
            self.lab[name].run(start, timeout=15, check=True)
        self._each_member(lambda name: self.wait_healthy(name, timeout))

    def _each_member(self, action: Callable[[str], None]) -> None:
        """`action` on every member at once (each on its own node); the first error is raised."""
        with ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            for future in [pool.submit(action, n) for n in self.members]:
                future.result()

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        wait_until(lambda: self.kv.health(self.lab[name], name), timeout=timeout,
                   what="KV member healthy", node=name, recorder=self.recorder)

    # -- views -----------------------------------------------------------------------------
    def live_members(self, exclude: tuple[str, ...] = ()) -> list[str]:
        return [m for m in self.members if m not in exclude and self.lab[m].running()]

    def operator(self, exclude: tuple[str, ...] = ()) -> Node:
        """A live member to run client commands on."""
        for name in self.live_members(exclude):
            return self.lab[name]
        raise LaneFailure("no live member left to operate the cluster from")

    def member_list(self, exclude: tuple[str, ...] = (), timeout: float = VIEW_TIMEOUT_S) -> list[Member]:
        """The member list, asked again while no live member answers (a starved guest misses a
        call's deadline now and then, an election is under way)."""
        return wait_until(lambda: self.kv.members(self.operator(exclude), self.live_members(exclude)),
                          timeout=timeout, what="the member list", recorder=self.recorder)

    def find(self, name: str) -> Member | None:
        """The member `name` (by name, or by peer URL while it has not started), or None."""
        url = self.kv.peer_url(name)
        return next((m for m in self.member_list() if m.name == name or url in m.peer_urls), None)

    def member(self, name: str) -> Member:
        found = self.find(name)
        if found is None:
            raise LaneFailure(f"{name} is not a member")
        return found

    def leader(self, exclude: tuple[str, ...] = ()) -> str | None:
        return self.kv.leader(self.operator(exclude), self.live_members(exclude))

    def wait_leader(self, exclude: tuple[str, ...] = (), not_: str | None = None,
                    timeout: float = 30.0) -> str:
        """Wait until the live members agree on a leader (other than `not_`)."""
        def probe() -> str | None:
            leader = self.leader(exclude)
            return leader if leader and leader != not_ else None
        what = "an agreed leader" + (f" other than {not_}" if not_ else "")
        leader = wait_until(probe, timeout=timeout, what=what, recorder=self.recorder)
        assert leader is not None  # wait_until returns only a truthy probe result
        return leader

    def membership(self, transition: str) -> pd.DataFrame:
        """id, name, voter/learner, leader, raft index of every member, after `transition`."""
        op = self.operator()
        statuses = {s.member_id: s for s in self.kv.status(op, self.live_members())}
        leaders = {s.leader for s in statuses.values()}
        rows: list[dict[str, Any]] = []
        for m in self.member_list():
            status = statuses.get(m.id)
            rows.append({"transition": transition, "id": m.hex_id, "name": m.name or "(not started)",
                         "role": "learner" if m.is_learner else "voter",
                         "leader": m.id in leaders and len(leaders) == 1,
                         "raft_index": status.raft_index if status else None})
        return pd.DataFrame(rows)

    # -- data checks -----------------------------------------------------------------------
    def write(self, key: str, value: str, via: list[str] | None = None, timeout: float = 30.0) -> None:
        """An acknowledged write the members must serve from now on (under CHECK_PREFIX).

        A write that times out (an election under way) is retried: putting the same value again
        is idempotent, and the wait fails with the last refusal if none is acknowledged.
        """
        endpoints = via or self.live_members()
        full = CHECK_PREFIX + key
        wait_until(lambda: self.kv.put_value(self.operator(), endpoints, full, value), timeout=timeout,
                   what=f"write {key} through {','.join(endpoints)} acknowledged", interval=0.5,
                   recorder=self.recorder)
        self.expected[full] = value

    def read_check(self, transition: str, members: list[str] | None = None, timeout: float = 20.0,
                   prefix: str = CHECK_PREFIX, expected: dict[str, str] | None = None,
                   exact: bool = False) -> pd.DataFrame:
        """Local serializable reads on each member return every expected key (waiting for a
        member to catch up, within `timeout`). Defaults: the keys the lanes wrote under
        CHECK_PREFIX; `exact`: the member's keys under `prefix` are exactly `expected`."""
        wanted = self.expected if expected is None else expected
        rows = []
        for name in members or self.members:
            node = self.lab[name]
            start = time.monotonic()

            def served(name: str = name, node: Node = node) -> bool:
                local = self.kv.read_prefix(node, name, prefix, serializable=True)
                missing = [k for k, v in wanted.items() if local.get(k) != v]
                extra = [k for k in local if k not in wanted] if exact else []
                if missing or extra:
                    raise KVUnavailable(f"{name} does not serve {len(missing)} keys as expected yet"
                                        f"{f' and has {len(extra)} unexpected' if extra else ''}: "
                                        f"{(missing + extra)[:3]}")
                return True

            try:
                wait_until(served, timeout=timeout, what=f"local reads of {len(wanted)} keys",
                           node=name, recorder=self.recorder)
                ok, detail = True, f"{len(wanted)} keys"
            except LaneFailure as exc:
                ok, detail = False, str(exc)
            self.recorder.check(f"{transition}: serializable reads on {name}",
                                "exactly the expected keys" if exact else "all expected keys",
                                detail, ok=ok, node=name)
            rows.append({"transition": transition, "member": name, "keys": len(wanted),
                         "ok": ok, "caught_up_s": round(time.monotonic() - start, 2)})
        table = pd.DataFrame(rows)
        if not table["ok"].all():
            bad = ", ".join(table.loc[~table["ok"], "member"])
            raise LaneFailure(f"after {transition}: local reads missing expected data on {bad}")
        return table
