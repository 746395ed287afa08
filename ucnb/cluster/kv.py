"""The KV role (ChainFire; etcd on the lab) driven through its client in the guests.

Commands come from the profile's `roles.kv.ctl` template; replies are the etcd v3 JSON shapes.
Every call runs on a chosen node over SSH, so it travels the lab network like a real client.
"""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import dataclass
from typing import Any

from ucnb.errors import ParameterError, Transient
from ucnb.lab.lab import Lab, Node
from ucnb.lab.ssh import CommandResult, GuestShell
from ucnb.profiles import Role

CLIENT_PORT, PEER_PORT = 2379, 2380
# What a client prints when a request could not leave for a member (the light client's words).
UNREACHABLE = ("Connection refused", "No route to host", "Network is unreachable")


class KVUnavailable(Transient):
    """A member did not answer (yet): an observation for a wait; outside one, a lane failure."""


@dataclass(frozen=True)
class Member:
    id: int                 # etcd prints decimal ids; commands want hex
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: int
    leader: int
    raft_index: int
    raft_term: int
    is_learner: bool


class KV:
    """A client of the KV role for one lab; `peers` maps member names to their nodes."""

    def __init__(self, role: Role, lab: Lab, raft_network: int = 1) -> None:
        if not role.provided or role.ctl is None:
            raise ParameterError(f"the KV role is not provided: {role.missing}")
        self.role, self.lab, self.raft_network = role, lab, raft_network
        self._index = {name: i for i, name in enumerate(lab.nodes, start=1)}

    # -- addresses -------------------------------------------------------------------------
    def client_url(self, name: str) -> str:
        return f"http://{self.lab.address(self._index[name])}:{CLIENT_PORT}"

    def peer_url(self, name: str) -> str:
        return f"http://{self.lab.address(self._index[name], self.raft_network)}:{PEER_PORT}"

    def ctl(self, via: Node, endpoints: list[str], args: str, timeout: float = 5.0) -> CommandResult:
        """Run the role's client on `via` against the named members' client URLs."""
        urls = ",".join(self.client_url(e) for e in endpoints)
        command = self.role.ctl.format(endpoints=urls, timeout=int(timeout))  # type: ignore[union-attr]
        return via.run(f"{command} {args}", timeout=timeout + 5)

    def request(self, via: Node | GuestShell, endpoints: list[str], path: str, body: dict[str, Any],
                timeout: float = 5.0) -> CommandResult:
        """One call to the role's JSON API (etcd's v3 gateway: `/v3/kv/put`, `/v3/kv/range`) with
        its light client on `via`. Endpoints are tried in order only while one cannot be reached
        (connection refused, no route: the request never left), never after anything else, so a
        write that may have been applied is not sent twice."""
        if self.role.http is None:
            raise ParameterError("the KV role has no light client (`http`) in this profile")
        attempts = [self.role.http.format(timeout=int(timeout), body=shlex.quote(json.dumps(body)),
                                          url=shlex.quote(self.client_url(e) + path)) for e in endpoints]
        unreachable = "|".join(f"*{shlex.quote(e)}*" for e in UNREACHABLE)
        script = ("for attempt in " + " ".join(shlex.quote(a) for a in attempts) + "; do "
                  'out=$(eval "$attempt" 2>&1) && { printf "%s\n" "$out"; exit 0; }; '
                  f'case "$out" in {unreachable}) continue ;; esac; break; done; '
                  'printf "%s\n" "$out" >&2; exit 1')
        return via.run(script, timeout=timeout * len(endpoints) + 5)

    def put_value(self, via: Node | GuestShell, endpoints: list[str], key: str, value: str,
                  timeout: float = 5.0) -> CommandResult:
        """A put through the light client (the workload's writes)."""
        return self.request(via, endpoints, "/v3/kv/put", {"key": _b64e(key), "value": _b64e(value)}, timeout)

    def read_value(self, via: Node | GuestShell, endpoints: list[str], key: str, serializable: bool = False,
                   timeout: float = 5.0) -> CommandResult:
        """A read through the light client (its value: `value_of`); linearizable unless
        `serializable`."""
        body: dict[str, Any] = {"key": _b64e(key)}
        if serializable:
            body["serializable"] = True
        return self.request(via, endpoints, "/v3/kv/range", body, timeout)

    # -- configuration ---------------------------------------------------------------------
    def config(self, name: str, cluster: dict[str, str], state: str, token: str) -> str:
        """The member's settings file: read by its service at every start (so a power-cycled
        member rejoins by itself). Pre-vote keeps a cut-off member from deposing the leader."""
        initial = ",".join(f"{n}={url}" for n, url in cluster.items())
        return "\n".join([
            f"ETCD_NAME={name}",
            f"ETCD_INITIAL_CLUSTER={initial}",
            f"ETCD_INITIAL_CLUSTER_STATE={state}",
            f"ETCD_INITIAL_CLUSTER_TOKEN={token}",
            f"ETCD_LISTEN_PEER_URLS={self.peer_url(name)}",
            f"ETCD_INITIAL_ADVERTISE_PEER_URLS={self.peer_url(name)}",
            f"ETCD_ADVERTISE_CLIENT_URLS={self.client_url(name)}",
            "ETCD_PRE_VOTE=true",
        ]) + "\n"

    def configure(self, node: Node, config: str, wipe: bool = False) -> None:
        """Write a member's settings (optionally wiping its data first, as a re-add needs)."""
        path = self.role.config_file
        wipe_cmd = "rm -rf /lab/var/chainfire && " if wipe else ""
        node.run(f"{wipe_cmd}mkdir -p $(dirname {path}) && cat > {path} && sync", stdin=config,
                 timeout=15, check=True)

    # -- operations ------------------------------------------------------------------------
    def put(self, via: Node, endpoints: list[str], key: str, value: str,
            timeout: float = 5.0) -> CommandResult:
        return self.ctl(via, endpoints, f"put {shlex.quote(key)} {shlex.quote(value)}", timeout)

    def read(self, via: Node, endpoints: list[str], key: str, serializable: bool = False,
             timeout: float = 5.0) -> CommandResult:
        """One read as a client call (its value: `value_of`); linearizable unless `serializable`
        (then answered locally by the member that takes it)."""
        consistency = "s" if serializable else "l"
        return self.ctl(via, endpoints, f"get {shlex.quote(key)} --consistency={consistency} -w json",
                        timeout)

    def get(self, via: Node, endpoint: str, key: str, serializable: bool = True) -> str | None:
        """A single read of one member; serializable reads are answered locally by that member."""
        result = self.read(via, [endpoint], key, serializable)
        if not result.ok:
            raise KVUnavailable(f"{endpoint}: get {key} failed: {result}")
        return value_of(result)

    def read_prefix(self, via: Node, endpoint: str, prefix: str, serializable: bool = False
                    ) -> dict[str, str]:
        consistency = "s" if serializable else "l"
        result = self.ctl(via, [endpoint], f"get {shlex.quote(prefix)} --prefix "
                                           f"--consistency={consistency} -w json", timeout=15)
        if not result.ok:
            raise KVUnavailable(f"{endpoint}: reading prefix {prefix} failed: {result}")
        return {_b64(kv["key"]): _b64(kv["value"]) for kv in json.loads(result.stdout).get("kvs") or []}

    def members(self, via: Node, endpoints: list[str]) -> list[Member]:
        result = self.ctl(via, endpoints, "member list -w json")
        if not result.ok:
            raise KVUnavailable(f"{via.name}: member list failed: {result}")
        return [Member(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])),
                       tuple(m.get("clientURLs", [])), bool(m.get("isLearner", False)))
                for m in json.loads(result.stdout)["members"]]

    def status(self, via: Node, endpoints: list[str]) -> list[EndpointStatus]:
        """Status of every reachable endpoint (unreachable ones are left out)."""
        result = self.ctl(via, endpoints, "endpoint status -w json")
        try:
            rows: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            rows = []
        return [EndpointStatus(r["Endpoint"], int(r["Status"]["header"]["member_id"]),
                               int(r["Status"]["leader"]), int(r["Status"]["raftIndex"]),
                               int(r["Status"]["raftTerm"]), bool(r["Status"].get("isLearner", False)))
                for r in rows]

    def leader(self, via: Node, endpoints: list[str]) -> str | None:
        """The leader's name as the reachable members agree on it (None: no agreed leader)."""
        statuses = self.status(via, endpoints)
        leaders = {s.leader for s in statuses}
        if len(leaders) != 1 or 0 in leaders:
            return None
        names = {m.id: m.name for m in self.members(via, [self._name_of(s.endpoint) for s in statuses])}
        return names.get(leaders.pop())

    def _name_of(self, url: str) -> str:
        return next(n for n in self.lab.nodes if self.client_url(n) == url)

    def add_learner(self, via: Node, endpoints: list[str], name: str) -> CommandResult:
        return self.ctl(via, endpoints, f"member add {name} --peer-urls={self.peer_url(name)} --learner")

    def add_voter(self, via: Node, endpoints: list[str], name: str) -> CommandResult:
        return self.ctl(via, endpoints, f"member add {name} --peer-urls={self.peer_url(name)}")

    def promote(self, via: Node, endpoints: list[str], member: Member) -> CommandResult:
        return self.ctl(via, endpoints, f"member promote {member.hex_id}")

    def move_leader(self, via: Node, leader: str, member: Member) -> CommandResult:
        """Leadership transfer must be asked of the current leader."""
        return self.ctl(via, [leader], f"move-leader {member.hex_id}")

    def remove(self, via: Node, endpoints: list[str], member: Member) -> CommandResult:
        return self.ctl(via, endpoints, f"member remove {member.hex_id}")

    def health(self, via: Node, endpoint: str) -> CommandResult:
        return self.ctl(via, [endpoint], "endpoint health", timeout=5)


def value_of(result: CommandResult) -> str | None:
    """The value a successful `read` returned (None: the key is absent); ValueError when the
    reply is not etcd's JSON."""
    try:
        kvs = json.loads(result.stdout).get("kvs") or []
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"not a get reply: {result.stdout[:200]!r}") from exc
    return _b64(kvs[0]["value"]) if kvs else None


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()


def _b64e(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
