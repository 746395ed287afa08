"""The KV role (ChainFire; etcd on the lab) driven through its client in the guests.

Commands come from the profile's `roles.kv.ctl` template; replies are the etcd v3 JSON shapes.
Every call runs on a chosen node over SSH, so it travels the lab network like a real client.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from ucnb.errors import LaneFailure, ParameterError, Transient
from ucnb.lab.lab import Lab, Node
from ucnb.lab.ssh import CommandResult, GuestShell
from ucnb.profiles import Role

CLIENT_PORT, PEER_PORT = 2379, 2380
DATA_DIR = "/lab/var/chainfire"   # a member's data (the guest's chainfire service keeps it there)
# What a client prints when a request could not leave for a member (the light client's words).
UNREACHABLE = ("Connection refused", "No route to host", "Network is unreachable")
# The client's own start-up beyond its request deadline: etcdctl, a Go program started per call,
# takes 1.6 s in an idle TCG guest and 7-10 s on two cores at load average 16-19.
CLIENT_START_S = 20.0


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
    revision: int = 0       # the store's revision as that member answered
    cluster_id: int = 0


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

    def ctl(self, via: Node, endpoints: list[str], args: str, timeout: float = 5.0,
            stdin: str | None = None) -> CommandResult:
        """Run the role's client on `via` against the named members' client URLs."""
        urls = ",".join(self.client_url(e) for e in endpoints)
        command = self.role.ctl.format(endpoints=urls, timeout=int(timeout))  # type: ignore[union-attr]
        return via.run(f"{command} {args}", timeout=timeout + CLIENT_START_S, stdin=stdin)

    def request(self, via: Node | GuestShell, endpoints: list[str], path: str, body: dict[str, Any],
                timeout: float = 5.0) -> CommandResult:
        """One call to the role's JSON API (etcd's v3 gateway: `/v3/kv/put`, `/v3/kv/range`) with
        its light client on `via`. Endpoints are tried in order only while one cannot be reached
        (connection refused, no route: the request never left), never after anything else, so a
        write that may have been applied is not sent twice."""
        attempts = [self._post(e, path, body, timeout) for e in endpoints]
        unreachable = "|".join(f"*{shlex.quote(e)}*" for e in UNREACHABLE)
        script = ("for attempt in " + " ".join(shlex.quote(a) for a in attempts) + "; do "
                  'out=$(eval "$attempt" 2>&1) && { printf "%s\n" "$out"; exit 0; }; '
                  f'case "$out" in {unreachable}) continue ;; esac; break; done; '
                  'printf "%s\n" "$out" >&2; exit 1')
        return via.run(script, timeout=timeout * len(endpoints) + 5)

    def _post(self, endpoint: str, path: str, body: dict[str, Any], timeout: float) -> str:
        """The light client's command that POSTs `body` to `path` of one member."""
        if self.role.http is None:
            raise ParameterError("the KV role has no light client (`http`) in this profile")
        return self.role.http.format(timeout=int(timeout), body=shlex.quote(json.dumps(body)),
                                     url=shlex.quote(self.client_url(endpoint) + path))

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
        wipe_cmd = f"rm -rf {DATA_DIR} && " if wipe else ""
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

    def read_prefix(self, via: Node, endpoint: str, prefix: str, serializable: bool = False,
                    revision: int | None = None) -> dict[str, str]:
        """Every key under `prefix` ("" for all) with its value; at `revision` when given (the
        store as it was then: etcd keeps old revisions until compacted)."""
        body: dict[str, Any] = {"key": _b64e(prefix or "\0"), "range_end": prefix_end(prefix)}
        if serializable:
            body["serializable"] = True
        if revision is not None:
            body["revision"] = int(revision)
        result = self.request(via, [endpoint], "/v3/kv/range", body, timeout=15)
        if not result.ok:
            raise KVUnavailable(f"{endpoint}: reading prefix {prefix} failed: {result}")
        return parse_kvs(result.stdout)

    def put_many(self, via: Node, endpoints: list[str], items: dict[str, str], timeout: float = 15.0,
                 batch: int = 100) -> list[int]:
        """Write `items` in transactions of `batch` puts (etcd allows 128 operations per txn by
        default); returns each transaction's revision. Keys and values must be plain tokens (no
        whitespace or quotes): they travel as lines of the txn's input, never through a shell."""
        bad = [k for k, v in items.items() if not (_TOKEN.fullmatch(k) and _TOKEN.fullmatch(v))]
        if bad:
            raise ParameterError(f"put_many: keys and values must match {_TOKEN.pattern}: {bad[:3]}")
        revisions, pairs = [], list(items.items())
        for start in range(0, len(pairs), batch):
            # No comparisons, the puts as the success branch, no failure branch: blank-line separated.
            lines = "".join(f"put {k} {v}\n" for k, v in pairs[start:start + batch])
            result = self.ctl(via, endpoints, "txn -w json", timeout, stdin=f"\n{lines}\n\n")
            if not result.ok:
                raise KVUnavailable(f"{via.name}: txn of puts {start + 1}..{start + batch} failed: {result}")
            revisions.append(int(json.loads(result.stdout)["header"]["revision"]))
        return revisions

    # The views below go through the light client: the lanes poll them all the time.
    def members(self, via: Node, endpoints: list[str]) -> list[Member]:
        result = self.request(via, endpoints, "/v3/cluster/member/list", {})
        if not result.ok:
            raise KVUnavailable(f"{via.name}: member list failed: {result}")
        return [Member(int(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])),
                       tuple(m.get("clientURLs", [])), bool(m.get("isLearner", False)))
                for m in json.loads(result.stdout)["members"]]

    def status(self, via: Node, endpoints: list[str], cluster: bool = False) -> list[EndpointStatus]:
        """Status of every endpoint that answers (the others are left out), all asked in one
        command; `cluster` asks every member the member list names (as etcdctl --cluster does)
        instead of `endpoints` alone."""
        if cluster:
            listed = self.members(via, endpoints)
            endpoints = [self._name_of(m.client_urls[0]) for m in listed if m.client_urls]
        timeout = 5.0
        asks = [f"printf '%s ' {shlex.quote(self.client_url(e))}; "
                f"{self._post(e, '/v3/maintenance/status', {}, timeout)}; echo" for e in endpoints]
        result = via.run("; ".join(asks), timeout=timeout * len(endpoints) + 5)
        rows = []
        for line in result.stdout.splitlines():
            url, _, reply = line.partition(" ")
            try:
                rows.append({"Endpoint": url, "Status": json.loads(reply)})
            except json.JSONDecodeError:
                continue
        return endpoint_statuses(rows)

    def hashkv(self, via: Node, endpoints: list[str], cluster: bool = False,
               revision: int | None = None) -> dict[str, int]:
        """Endpoint URL -> hash of the key-value store up to `revision` (default: the latest)."""
        args = "endpoint hashkv" + (" --cluster" if cluster else "")
        args += f" --rev={int(revision)}" if revision is not None else ""
        result = self.ctl(via, endpoints, args + " -w json", timeout=10)
        if not result.ok:
            raise KVUnavailable(f"{via.name}: endpoint hashkv failed: {result}")
        return parse_hashkv(result.stdout)

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

    def health(self, via: Node, endpoint: str, timeout: float = 5.0) -> CommandResult:
        """The member's own health endpoint: ok while it has a leader and a quorum read through it
        succeeds, what `etcdctl endpoint health` checks, in one small HTTP call."""
        if self.role.health is None:
            raise ParameterError("the KV role has no health endpoint (`health`) in this profile")
        url = shlex.quote(self.client_url(endpoint) + "/health")
        return via.run(self.role.health.format(timeout=int(timeout), url=url), timeout=timeout + 5)

    # -- backup and restore ----------------------------------------------------------------
    def snapshot_save(self, via: Node, endpoint: str, path: str) -> CommandResult:
        """A snapshot of one member's store into `path` on `via` (etcd appends its sha256)."""
        return self.ctl(via, [endpoint], f"snapshot save {shlex.quote(path)}", timeout=60)

    def snapshot_status(self, via: Node, path: str) -> dict[str, int]:
        """hash, revision, totalKey (every entry of every bucket, not only keys) and totalSize."""
        result = self.ctl(via, [via.name], f"snapshot status {shlex.quote(path)} -w json", timeout=30)
        if not result.ok:
            raise KVUnavailable(f"{via.name}: snapshot status {path} failed: {result}")
        return {k: int(v) for k, v in json.loads(result.stdout).items()}

    def snapshot_restore(self, node: Node, name: str, cluster: dict[str, str], token: str,
                         snapshot: str) -> None:
        """Replace the member's data with `snapshot` (a file on `node`, hash-checked by etcd) as a
        member of a NEW cluster: `cluster` maps names to peer URLs, `token` makes new IDs."""
        initial = ",".join(f"{n}={url}" for n, url in cluster.items())
        node.run(f"rm -rf {DATA_DIR}", timeout=30, check=True)
        result = self.ctl(node, [node.name], f"snapshot restore {shlex.quote(snapshot)} "
                          f"--name {shlex.quote(name)} --data-dir {DATA_DIR} "
                          f"--initial-cluster {shlex.quote(initial)} "
                          f"--initial-cluster-token {shlex.quote(token)} "
                          f"--initial-advertise-peer-urls {shlex.quote(cluster[name])}", timeout=60)
        if not result.ok:
            raise LaneFailure(f"{node.name}: snapshot restore failed: {result}")


_TOKEN = re.compile(r"[A-Za-z0-9._/:=+-]{1,512}")


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


def parse_kvs(text: str) -> dict[str, str]:
    """`get -w json` output: key -> value (etcd sends both base64-encoded)."""
    return {_b64(kv["key"]): _b64(kv.get("value", "")) for kv in json.loads(text).get("kvs") or []}


def parse_endpoint_status(text: str) -> list[EndpointStatus]:
    """`endpoint status -w json` output (a member that did not answer is absent; junk is none)."""
    try:
        rows: list[dict[str, Any]] = json.loads(text or "[]")
    except json.JSONDecodeError:
        rows = []
    return endpoint_statuses(rows)


def endpoint_statuses(rows: list[dict[str, Any]]) -> list[EndpointStatus]:
    """Rows of `{"Endpoint": url, "Status": reply}`, etcdctl's or the gateway's replies in that
    shape (numbers as strings, zero values left out); a reply without a header is none."""
    return [EndpointStatus(r["Endpoint"], int(s["header"]["member_id"]), int(s.get("leader", 0)),
                           int(s.get("raftIndex", 0)), int(s.get("raftTerm", 0)),
                           bool(s.get("isLearner", False)), int(s["header"].get("revision", 0)),
                           int(s["header"].get("cluster_id", 0)))
            for r in rows if "header" in (s := r["Status"])]


def prefix_end(prefix: str) -> str:
    """The range end (base64) that makes a range of every key under `prefix`, as etcd's clients
    compute it: the prefix with its last byte below 0xff incremented; "\0" (to the end) for ""."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def parse_hashkv(text: str) -> dict[str, int]:
    """`endpoint hashkv -w json` output: endpoint URL -> hash."""
    return {r["Endpoint"]: int(r["HashKV"]["hash"]) for r in json.loads(text or "[]")}


def _b64e(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
