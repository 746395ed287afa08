"""durability-proof: ChainFire keys and FlareDB rows backed up and restored, the deployer's admin
pre-register request kept and replayed across a deployer restart, and disk failures under load.

Lab profile: etcd 3.4 stands in for ChainFire (`snapshot save` from one member, restored on every
member into a new cluster), sqlite3 for FlareDB (`.dump`, restored into a fresh database), the
reference deployer (a process of its own, restarted) for the deployer, and a device-mapper table
swap on a dedicated virtio data disk for the storage failures CoronaFS/LightningStor would see.
Every backup is kept in the proof root, and every restore is made from that kept copy.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import hashlib
import json
import shlex
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pandas as pd
from pydantic import Field, model_validator

from ucnb.cluster.backup import Difference, compare, kv_digest
from ucnb.cluster.kv import EndpointStatus
from ucnb.cluster.sql import Database, seed_sql
from ucnb.cluster.steps import (
    ClusterEnv,
    ClusterParameters,
    NodeName,
    acknowledged_writes,
    boot_lab,
    readiness,
    start_workload,
)
from ucnb.errors import HarnessError, LaneFailure
from ucnb.files import atomic_write_bytes, atomic_write_text
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import DiskConfig
from ucnb.lanes import Lane
from ucnb.storage.dmfault import READS_INSIDE, DiskFault, Window, Write, judge

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

T = TypeVar("T")

__all__ = ["acknowledged_writes", "boot", "contract_artifacts", "deployer_replay", "readiness", "restore",
           "seed_keys", "snapshot", "sql_backup_restore", "start_workload", "storage_fault",
           "storage_fault_plot", "verify_restore"]

KEY_PREFIX = "durability/key-"
MIN_WRITES_PER_PHASE = 3   # before, inside and after the window, however slow the host (waited for)
DATA_DISK = "ucnb-data"                      # the virtio serial of the disk faults are injected on
GUEST_BACKUP_DIR = "/lab/var/backup"
GUEST_SNAPSHOT = f"{GUEST_BACKUP_DIR}/chainfire-snapshot.db"      # saved by the snapshot member
GUEST_RESTORE_FROM = f"{GUEST_BACKUP_DIR}/chainfire-restore.db"   # the kept copy, pushed to each member
GUEST_SQL_RESTORED = f"{GUEST_BACKUP_DIR}/flaredb-restored.db"
# Artifacts in the proof root: the backups, and the one file the contract names that the lab makes.
SNAPSHOT_FILE = "backup/chainfire-snapshot.db"
SNAPSHOT_STATUS_FILE = "backup/chainfire-snapshot-status.json"
SQL_DUMP_FILE = "backup/flaredb-dump.sql"
PREREGISTER_FILE = "backup/deployer-pre-register-request.json"
POST_RESTART_LIST_FILE = "deployer-post-restart-list.json"
DISK_WRITES_FILE = "storage-fault-writes.csv"
LAB_ARTIFACTS = (SNAPSHOT_FILE, SNAPSHOT_STATUS_FILE, SQL_DUMP_FILE, PREREGISTER_FILE, DISK_WRITES_FILE)
PREREGISTER_PATH = "/api/v1/admin/nodes/pre-register"
NODES_PATH = "/api/v1/admin/nodes"
TOKEN_PLACEHOLDER = "Bearer <admin token: never stored; supplied from memory at replay>"
# Files the product's contract names for this lane that the lab cannot make, and why.
NOT_ON_LAB = {
    "coronafs-node04-local-state.json": "the lab has no CoronaFS stand-in (no node-local volume state to "
                                        "capture); the storage-failure step injects disk faults on a "
                                        "virtio data disk instead (storage-fault-writes.csv, faults.csv)",
    "lightningstor-head-during-node05-outage.json": "the lab has no LightningStor stand-in (no object HEAD "
                                                    "to take during a node outage); see the storage-failure "
                                                    "step for what the lab injects",
}


def known_keys(count: int) -> dict[str, str]:
    """The key set written before the snapshot: `durability/key-0001`… with values that differ."""
    return {f"{KEY_PREFIX}{i:04d}": f"value-{i:04d}-{hashlib.sha256(str(i).encode()).hexdigest()[:12]}"
            for i in range(1, count + 1)}


class Parameters(ClusterParameters):
    nodes: list[NodeName] = Field(default_factory=lambda: ["node01", "node02", "node03"], min_length=1)
    client: NodeName = "node03"
    key_count: int = Field(200, ge=1, le=5000)
    snapshot_member: NodeName = "node01"
    restore_timeout_s: float = Field(60.0, gt=0, le=3600)
    # Test only: delete this known key from the restored cluster; the lane must fail naming it.
    drop_key_on_restore: str = Field("", pattern=r"^(durability/key-[0-9]{4})?$")
    sql_node: NodeName = "node01"
    sql_rows: int = Field(500, ge=1, le=100_000)
    preregister_node: NodeName = "node07"
    fault_node: NodeName = "node02"
    disk_fault: Literal["error", "flakey"] = "error"
    data_disk_size: str = Field("256M", pattern=r"^[1-9][0-9]{0,4}[MG]$")
    disk_write_pause_s: float = Field(0.05, ge=0, le=5)
    fault_lead_s: float = Field(2.0, ge=0.5, le=600)
    fault_hold_s: float = Field(3.0, ge=0.5, le=600)

    @model_validator(mode="after")
    def _durability(self) -> Parameters:
        problems = []
        if self.snapshot_member not in self.voters:
            problems.append(f"snapshot_member {self.snapshot_member!r} is not one of voters")
        for name in ("sql_node", "fault_node"):
            if getattr(self, name) not in self.nodes:
                problems.append(f"{name} {getattr(self, name)!r} is not one of nodes")
        if self.drop_key_on_restore and self.drop_key_on_restore not in known_keys(self.key_count):
            problems.append(f"drop_key_on_restore {self.drop_key_on_restore!r} is not one of the "
                            f"{self.key_count} known keys ({KEY_PREFIX}0001..{self.key_count:04d})")
        if self.profile == "lab":
            problems += _lab_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _lab_problems(params: Parameters) -> list[str]:
    """What the lab's cluster file says about the node parameters (read without any VM)."""
    from ucnb import profiles

    profile = profiles.load("lab")
    cluster = profile.cluster()
    problems = []
    if params.preregister_node in cluster.nodes:
        problems.append(f"preregister_node {params.preregister_node!r} is declared in the cluster file: "
                        "a node that exists only through pre-registration proves the deployer's own state")
    if params.sql_node in cluster.nodes:
        services = profile.node_classes[cluster.resolved(params.sql_node).node_class].services
        if "flaredb" not in services:
            problems.append(f"sql_node {params.sql_node!r} runs no flaredb (its class runs: "
                            f"{', '.join(services) or 'nothing'})")
    return problems


LANE = Lane(name="durability-proof", title="Durability: backup and restore, replay, storage failures",
            parameters=Parameters, cell_timeout_s=900)


@dataclass
class DurabilityEnv(ClusterEnv):
    """The cluster, and what the lane learns on the way (the source as the snapshot saw it)."""

    known: dict[str, str] = field(default_factory=dict)
    snapshot_status: dict[str, int] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)   # every key at the snapshot revision
    source_hashkv: int | None = None
    source_cluster_id: int = 0
    source_member_ids: dict[str, int] = field(default_factory=dict)
    disk_writes: list[Write] = field(default_factory=list)
    disk_offset: float = 0.0   # host time minus the fault node's uptime


def _retry(run: Run, what: str, call: Callable[[], T], timeout: float = 60.0) -> T:
    """A KV call repeated while it answers KVUnavailable (a member too slow for its command
    timeout on a loaded TCG host), within `timeout`; every call here is a read or idempotent."""
    return wait_until(call, timeout=timeout, what=what, interval=0.5, recorder=run.recorder)


@boots
def boot(run: Run) -> DurabilityEnv:
    """Boot the control plane (the fault node with a blank data disk) and form the cluster."""
    params = run.parameters(Parameters)
    env = boot_lab(run, disks={params.fault_node: (DiskConfig(DATA_DISK, params.data_disk_size),)})
    return DurabilityEnv(**{f.name: getattr(env, f.name) for f in dataclasses.fields(ClusterEnv)})


# -- ChainFire: snapshot, restore into a new cluster, verify -------------------------------------
@lab_step("seed known keys")
def seed_keys(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """The known key set, written in transactions through every member's endpoint."""
    params = run.parameters(Parameters)
    env.known = known_keys(params.key_count)
    with run.step("write the known keys", env.cp.members[0]) as row:
        revisions = _retry(run, "the known keys written",
                           lambda: env.cp.kv.put_many(env.cp.operator(), env.cp.members, env.known))
        row.detail = f"{len(env.known)} keys in {len(revisions)} transactions, revision {revisions[-1]}"
    return pd.DataFrame([{"keys": len(env.known), "prefix": KEY_PREFIX, "transactions": len(revisions),
                          "last revision": revisions[-1], "digest (sha256)": kv_digest(env.known)}])


@lab_step("snapshot")
def snapshot(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """`snapshot save` from one member while the workload writes, `snapshot status`, the file
    copied into the proof root, and the source read at the snapshot's revision."""
    params = run.parameters(Parameters)
    member, kv = params.snapshot_member, env.cp.kv
    node = env.lab[member]
    with run.step("snapshot save", member) as row:
        node.run(f"mkdir -p {GUEST_BACKUP_DIR}", timeout=10, check=True)
        saved = kv.snapshot_save(node, member, GUEST_SNAPSHOT)
        if not saved.ok:
            raise LaneFailure(f"{member}: snapshot save failed: {saved}")
        env.snapshot_status = _retry(run, "snapshot status", lambda: kv.snapshot_status(node, GUEST_SNAPSHOT))
        row.detail = json.dumps(env.snapshot_status)
    revision = env.snapshot_status["revision"]
    with run.step("keep the snapshot in the proof root", member):
        data = base64.b64decode(node.run(f"base64 {GUEST_SNAPSHOT}", timeout=60, check=True).stdout)
        guest_sha = node.run(f"sha256sum {GUEST_SNAPSHOT}", timeout=30, check=True).stdout.split()[0]
        atomic_write_bytes(run.proof_root / SNAPSHOT_FILE, data)
        status = {"member": member, **env.snapshot_status, "sha256": guest_sha}
        atomic_write_text(run.proof_root / SNAPSHOT_STATUS_FILE, json.dumps(status, indent=2) + "\n")
        copied_sha = hashlib.sha256(data).hexdigest()
        if not run.recorder.check("snapshot copied intact (sha256)", guest_sha, copied_sha, node=member):
            raise LaneFailure(f"{member}: the snapshot's copy in the proof root differs from the guest's")
    with run.step("read the source at the snapshot revision", member):
        env.source = _retry(run, "every key at the snapshot revision",
                            lambda: kv.read_prefix(node, member, "", revision=revision))
        env.source_hashkv = next(iter(_retry(run, "hashkv at the snapshot revision",
                                             lambda: kv.hashkv(node, [member], revision=revision)).values()))
        statuses = _retry(run, "endpoint status", lambda: kv.status(node, env.cp.members, cluster=True))
        env.source_cluster_id = statuses[0].cluster_id
        env.source_member_ids = {m.name: m.id for m in _retry(run, "member list",
                                                              lambda: kv.members(node, env.cp.members))}
    now = max(s.revision for s in statuses) if statuses else revision
    known = compare(env.known, {k: v for k, v in env.source.items() if k.startswith(KEY_PREFIX)})
    run.recorder.check("the snapshot holds every known key", "none missing or changed", known.describe(),
                       ok=known.ok, node=member)
    run.recorder.figure("snapshot revision", revision)
    run.recorder.figure("snapshot bytes", len(data), "B")
    run.recorder.figure("keys at the snapshot revision", len(env.source))
    run.recorder.figure("writes after the snapshot (not in it)", now - revision, "revisions")
    if not known.ok:
        raise LaneFailure(f"the snapshot from {member} lacks known keys: {known.describe()}")
    return pd.DataFrame([
        {"quantity": "snapshot file", "value": f"{SNAPSHOT_FILE} ({len(data)} bytes)"},
        {"quantity": "sha256", "value": copied_sha},
        {"quantity": "etcd hash (snapshot status)", "value": env.snapshot_status.get("hash")},
        {"quantity": "revision", "value": revision},
        {"quantity": "totalKey (every bucket entry, not only keys)",
         "value": env.snapshot_status.get("totalKey")},
        {"quantity": "totalSize", "value": env.snapshot_status.get("totalSize")},
        {"quantity": "keys at the snapshot revision", "value": len(env.source)},
        {"quantity": "digest at the snapshot revision", "value": kv_digest(env.source)},
        {"quantity": "hashkv at the snapshot revision", "value": env.source_hashkv},
        {"quantity": "source revision when read (the workload went on)", "value": now},
    ])


@lab_step("restore into a new cluster")
def restore(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """The kept snapshot pushed to every member, each member's data replaced by it with a NEW
    cluster token (new cluster and member IDs), the members started together."""
    params = run.parameters(Parameters)
    data = (run.proof_root / SNAPSHOT_FILE).read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    with run.step("copy the kept snapshot to every member"):
        for name in env.cp.members:
            node = env.lab[name]
            node.run(f"mkdir -p {GUEST_BACKUP_DIR} && base64 -d > {GUEST_RESTORE_FROM}",
                     stdin=base64.b64encode(data).decode(), timeout=60, check=True)
            seen = node.run(f"sha256sum {GUEST_RESTORE_FROM}", timeout=30, check=True).stdout.split()[0]
            if not run.recorder.check(f"backup copied intact to {name}", expected, seen, node=name):
                raise LaneFailure(f"{name}: the copied snapshot differs from the kept one")
    with run.step("restore every member from the snapshot") as row:
        token = f"ucnb-{run.run_id}-restored"
        env.cp.restore(GUEST_RESTORE_FROM, token, timeout=params.restore_timeout_s)
        row.detail = f"new cluster token {token}"
    statuses = _settled(env, params.restore_timeout_s)
    if params.drop_key_on_restore:
        key = params.drop_key_on_restore
        with run.step(f"negative test: drop {key} from the restored data"):
            wait_until(lambda: env.cp.kv.ctl(env.cp.operator(), env.cp.members, f"del {shlex.quote(key)}"),
                       timeout=30, what=f"delete {key}", interval=0.5, recorder=run.recorder)
    urls = {env.cp.kv.client_url(n): n for n in env.cp.members}
    leader = statuses[0].leader
    return pd.DataFrame([{"member": urls.get(s.endpoint, s.endpoint), "member ID": f"{s.member_id:x}",
                          "leader": s.member_id == leader, "revision": s.revision,
                          "cluster ID": f"{s.cluster_id:x}", "restored from": GUEST_RESTORE_FROM,
                          "backup sha256": expected[:16] + "…", "cluster token": token} for s in statuses])


def _settled(env: DurabilityEnv, timeout: float) -> list[EndpointStatus]:
    """`endpoint status --cluster` once every member answers it and they agree on a leader."""
    kv, members = env.cp.kv, env.cp.members

    def probe() -> list[EndpointStatus]:
        statuses = kv.status(env.cp.operator(), members, cluster=True)
        leaders = {s.leader for s in statuses}
        return statuses if len(statuses) == len(members) and len(leaders) == 1 and 0 not in leaders else []
    return wait_until(probe, timeout=timeout, what="every restored member answering, one leader",
                      recorder=env.cp.recorder)


@lab_step("verify the restore")
def verify_restore(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """Every member up, one leader, the snapshot's revision everywhere, hashkv equal on all (and to
    the source's at that revision), a new cluster of the same members, and on every member the
    keys, their count and their ordered digest equal to the source read at the snapshot revision."""
    params = run.parameters(Parameters)
    kv, members = env.cp.kv, env.cp.members
    revision = env.snapshot_status["revision"]
    failures: list[str] = []

    def check(name: str, expected: Any, observed: Any, ok: bool | None = None) -> bool:
        passed = run.recorder.check(f"restore: {name}", expected, observed, ok)
        if not passed:
            failures.append(f"{name}: expected {expected}, observed {observed}")
        return passed

    with run.step("verify the restore") as row:
        statuses = _settled(env, params.restore_timeout_s)
        op = env.cp.operator()
        listed = _retry(run, "member list", lambda: kv.members(op, members))
        hashes = _retry(run, "endpoint hashkv --cluster", lambda: kv.hashkv(op, members, cluster=True))
        names = {m.id: m.name for m in listed}
        leaders = {s.leader for s in statuses}
        check("every member up", sorted(members), sorted(names.get(s.member_id, "?") for s in statuses))
        check("exactly one leader", 1, len(leaders), ok=len(leaders) == 1 and leaders <= set(names))
        check("members", sorted(members), sorted(m.name for m in listed),
              ok=sorted(m.name for m in listed) == sorted(members) and not any(m.is_learner for m in listed))
        check("a new cluster (new cluster ID)", f"not {env.source_cluster_id}",
              sorted({s.cluster_id for s in statuses}),
              ok=env.source_cluster_id not in {s.cluster_id for s in statuses})
        check("new member IDs", "none of the source's", sorted(m.hex_id for m in listed),
              ok=not {m.id for m in listed} & set(env.source_member_ids.values()))
        check("the same revision on every member", [revision], sorted({s.revision for s in statuses}))
        check("hashkv equal on every member", 1, len(set(hashes.values())))
        check("hashkv equal to the source's at the snapshot revision", env.source_hashkv,
              sorted(set(hashes.values())), ok=set(hashes.values()) == {env.source_hashkv})
        source_digest = kv_digest(env.source)
        local_rows, differences = [], []
        def local_read(member: str) -> dict[str, str]:
            return _retry(run, f"a local read of every key on {member}",
                          lambda: kv.read_prefix(env.lab[member], member, "", serializable=True))

        with ThreadPoolExecutor(max_workers=len(members)) as pool:   # one local read on each member
            reads = list(pool.map(local_read, members))
        for name, local in zip(members, reads, strict=True):
            difference: Difference = compare(env.source, local)
            differences.append(difference)
            check(f"keys on {name}", len(env.source), len(local))
            check(f"ordered digest on {name}", source_digest, kv_digest(local))
            check(f"keys and values on {name}", "no difference", difference.describe(), ok=difference.ok)
            local_rows.append((name, local, difference))
        restored_known = min(sum(1 for k, v in env.known.items() if local.get(k) == v)
                             for _, local, _ in local_rows)
        check("known keys restored", len(env.known), restored_known)
        run.recorder.figure("keys restored", min(len(local) for _, local, _ in local_rows))
        run.recorder.figure("known keys restored", restored_known)
        run.recorder.figure("restore digest equal", all(d.ok for d in differences))
        if failures:
            lost = sorted({k for d in differences for k in d.missing})
            named = f" (keys missing after restore: {', '.join(lost[:10])})" if lost else ""
            row.detail = f"{len(failures)} checks differ{named}"
            raise LaneFailure(f"the restore differs from the source at revision {revision}{named}: "
                              + "; ".join(failures))
        row.detail = "equal to the source at the snapshot revision"
    restored_status = {names.get(s.member_id, "?"): s for s in statuses}
    restored_hashes = sorted(set(hashes.values()))
    rows: list[tuple[str, Any, Any, bool]] = [
        ("members", ", ".join(sorted(env.source_member_ids)), ", ".join(sorted(m.name for m in listed)),
         True),
        ("cluster ID (a new cluster: differs)", f"{env.source_cluster_id:x}",
         ", ".join(sorted({f"{s.cluster_id:x}" for s in statuses})), False),
        ("hashkv", env.source_hashkv, ", ".join(map(str, restored_hashes)), True)]
    for name, local, _ in local_rows:
        status = restored_status.get(name)
        rows += [(f"{name}: revision", revision, status.revision if status else None, True),
                 (f"{name}: keys", len(env.source), len(local), True),
                 (f"{name}: ordered digest", source_digest, kv_digest(local), True)]
    return pd.DataFrame([{"quantity": q, "source (snapshot revision)": a, "restored": b,
                          "as expected": (str(a) == str(b)) == same} for q, a, b, same in rows])


# -- FlareDB: dump, restore into a fresh database -----------------------------------------------
@lab_step("FlareDB rows: dump and restore")
def sql_backup_restore(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """Rows written to FlareDB's database, `.dump`ed into the proof root, restored from that copy
    into a fresh database: integrity check, schema, per-table row counts and ordered digests equal."""
    params = run.parameters(Parameters)
    name = params.sql_node
    source, restored = Database(env.lab[name]), Database(env.lab[name], GUEST_SQL_RESTORED)
    with run.step("seed FlareDB rows", name) as row:
        source.run(seed_sql(params.sql_rows))
        schema, before = source.state()
        row.detail = ", ".join(f"{t}: {s.rows} rows" for t, s in before.items())
    with run.step("dump into the proof root", name):
        atomic_write_text(run.proof_root / SQL_DUMP_FILE, source.dump())
    with run.step("restore into a fresh database", name):
        restored.restore_from((run.proof_root / SQL_DUMP_FILE).read_text())
        integrity = restored.integrity()
        restored_schema, after = restored.state()
    failures = []
    checks: list[tuple[str, Any, Any]] = [("integrity_check of the restored database", "ok", integrity),
              ("tables", sorted(before), sorted(after)),
              ("schema (ordered digest of sqlite_master)", schema, restored_schema)]
    for table, state in before.items():
        restored_state = after.get(table)
        checks += [(f"rows of {table}", state.rows, restored_state.rows if restored_state else None),
                   (f"ordered digest of {table}", state.digest,
                    restored_state.digest if restored_state else None)]
    for check_name, expected, observed in checks:
        if not run.recorder.check(f"flaredb: {check_name}", expected, observed, node=name):
            failures.append(f"{check_name}: expected {expected}, observed {observed}")
    run.recorder.figure("rows restored", sum(s.rows for s in after.values()))
    run.recorder.figure("row digests equal", all(after.get(t) == s for t, s in before.items()))
    if failures:
        raise LaneFailure(f"{name}: the restored FlareDB database differs: " + "; ".join(failures))
    return pd.DataFrame([{"table": t, "rows (source)": s.rows, "rows (restored)": after[t].rows,
                          "digest (source)": s.digest, "digest (restored)": after[t].digest,
                          "equal": after[t] == s} for t, s in before.items()])


# -- the deployer: pre-register, restart, replay ------------------------------------------------
def _http(url: str, method: str, path: str, token: str, body: Any = None,
          context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """One request to the deployer (behind the namespace guard, never through a proxy, verified
    with the run's CA): status and JSON answer."""
    from ucnb.host import netns

    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with netns.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")


@lab_step("deployer pre-register, restart and replay")
def deployer_replay(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """The admin pre-register request sent and kept (token redacted) as the backup artifact; the
    deployer process restarted (its state on disk); the node still there; the kept request
    replayed: the same resource, no duplicate."""
    from ucnb import profiles
    from ucnb.baremetal.harness import gateway_address
    from ucnb.host import netns
    from ucnb.reference import pki
    from ucnb.reference.deployer_process import DeployerProcess

    params = run.parameters(Parameters)
    node_id = params.preregister_node
    admin = run.generate_secret("uc-admin-")
    netns.enter()   # the child binds the lab gateway, inside the lab namespace
    cluster_file = profiles.PROFILE_DIR / str(run.profile.cluster_file)
    # HTTPS with a CA made for this run (keys stay in the lab folder): tokens never cross plain HTTP.
    ca, ca_key = pki.make_ca(env.lab.directory / "pki", f"ucnb durability CA {run.run_id}")
    identity = pki.issue_server_cert(env.lab.directory / "pki", ca, ca_key, common_name="deployer",
                                     addresses=[gateway_address(env.lab)])
    context = ssl.create_default_context(cafile=str(identity.ca_file))
    deployer = DeployerProcess(run.proof_root / "deployer", cluster_file, host=gateway_address(env.lab),
                               bootstrap_token=run.generate_secret("uc-boot-"),
                               admin_token=admin, bundle_dir=env.lab.directory / "deployer-bundles",
                               log=run.proof_root / "logs" / "deployer.log", tls=identity)
    run.on_teardown(deployer.close)
    atexit.register(deployer.close)   # a kernel that dies before finish() still stops it
    rows: list[dict[str, Any]] = []

    def listed(when: str) -> list[dict[str, Any]]:
        status, answer = _http(deployer.url, "GET", NODES_PATH, admin, context=context)
        if status != 200:
            raise LaneFailure(f"deployer: GET {NODES_PATH} {when} answered {status}: {answer}")
        nodes: list[dict[str, Any]] = answer["nodes"]
        rows.append({"step": f"list nodes {when}", "HTTP status": status, "nodes listed": len(nodes),
                     f"entries for {node_id}": sum(1 for n in nodes if n["node_id"] == node_id),
                     "pid": deployer.pid})
        return nodes

    with run.step("start the reference deployer") as row:
        deployer.start()
        inside = netns.process_inside(deployer.pid or 0)
        row.detail = f"{deployer.url} pid {deployer.pid}"
        run.recorder.check("deployer runs inside the lab namespace", True, inside)
    body = {"node_id": node_id, "hostname": node_id, "class": "worker", "mac": "52:54:00:ee:00:07"}
    with run.step("pre-register a node", node_id):
        first_status, first = _http(deployer.url, "POST", PREREGISTER_PATH, admin, body, context)
        rows.append({"step": "pre-register", "HTTP status": first_status, "pid": deployer.pid,
                     "nodes listed": "", f"entries for {node_id}": ""})
        atomic_write_text(run.proof_root / PREREGISTER_FILE, json.dumps(
            {"method": "POST", "path": PREREGISTER_PATH,
             "headers": {"Authorization": TOKEN_PLACEHOLDER, "Content-Type": "application/json"},
             "body": body, "response": {"status": first_status, "body": first}}, indent=2) + "\n")
    before = listed("before the restart")
    with run.step("restart the deployer") as row:
        old_pid = deployer.pid
        deployer.restart()
        row.detail = f"pid {old_pid} -> {deployer.pid}, {deployer.url}"
    after = listed("after the restart")
    atomic_write_text(run.proof_root / POST_RESTART_LIST_FILE, json.dumps({"nodes": after}, indent=2) + "\n")
    with run.step("replay the kept request", node_id):
        kept = json.loads((run.proof_root / PREREGISTER_FILE).read_text())
        replay_status, replay = _http(deployer.url, kept["method"], kept["path"], admin, kept["body"],
                                      context)
        rows.append({"step": "replay the kept request", "HTTP status": replay_status, "pid": deployer.pid,
                     "nodes listed": "", f"entries for {node_id}": ""})
    final = listed("after the replay")
    entry = next((n for n in after if n["node_id"] == node_id), None)
    checks = [("pre-register accepted (201 Created)", 201, first_status, None),
              ("deployer restarted (a new process)", f"not {old_pid}", deployer.pid, deployer.pid != old_pid),
              ("pre-registered node listed after the restart", "pre-registered",
               entry["source"] if entry else "absent", None),
              ("registration unchanged by the restart", first,
               entry["registration"] if entry else None, None),
              ("replay answered as a replay (200, nothing written)", 200, replay_status, None),
              ("replay returns the same resource", first, replay, None),
              (f"entries for {node_id} after the replay", 1,
               sum(1 for n in final if n["node_id"] == node_id), None),
              ("nodes listed unchanged by the replay", len(before), len(final), None)]
    failures = [f"{name}: expected {expected}, observed {observed}" for name, expected, observed, ok in checks
                if not run.recorder.check(f"deployer: {name}", expected, observed, ok, node=node_id)]
    run.recorder.figure("replay idempotent", not failures)
    if failures:
        raise LaneFailure("deployer pre-register replay: " + "; ".join(failures))
    return pd.DataFrame(rows)


# -- storage failures under write load -----------------------------------------------------------
@lab_step("storage failure under write load")
def storage_fault(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """A write loop on the fault node's data disk; the disk's device-mapper table swapped for
    `disk_fault` for `fault_hold_s` (longer if the loop has not yet made 3 writes inside the
    window; recorded as a fault interval) and back; the writes judged: they succeed before and
    after the window, fail inside it, and acknowledged ones read back."""
    params = run.parameters(Parameters)
    name = params.fault_node
    disk = DiskFault(env.lab[name], DATA_DISK)
    with run.step("map the data disk through device-mapper", name):
        mapping = disk.prepare()
        env.disk_offset = disk.uptime_offset()
    kind = "disk_error" if params.disk_fault == "error" else "disk_flakey_error_writes"
    reads: dict[str, bool] = {}
    with run.step("write loop across the fault window", name) as row:
        disk.start_writes(params.disk_write_pause_s, max_blocks=disk.sectors * 512 // 4096 - 1)
        time.sleep(params.fault_lead_s)
        disk.wait_writes(MIN_WRITES_PER_PHASE, started_after=0.0)
        with run.recorder.fault(kind, f"{name}:virtio-{DATA_DISK}"):
            swapped_in = disk.swap(params.disk_fault)
            started = time.monotonic()
            reads["inside"] = disk.read_probe()
            time.sleep(max(0.0, params.fault_hold_s - (time.monotonic() - started)))
            disk.wait_writes(MIN_WRITES_PER_PHASE, started_after=swapped_in[1])
            swapped_out = disk.swap("linear")
        reads["after"] = disk.read_probe()
        time.sleep(params.fault_lead_s)
        disk.wait_writes(MIN_WRITES_PER_PHASE, started_after=swapped_out[1])
        writes = disk.stop_writes()
        row.detail = f"{len(writes)} writes"
    with run.step("read the data disk back", name):
        present = disk.present(max((w.index for w in writes), default=1))
        disk.remove()
    window = Window(*swapped_in, *swapped_out)
    env.disk_writes = writes
    judgement = judge(writes, window, present)
    frame = judgement.writes.assign(host_start=judgement.writes["start"] + env.disk_offset)
    atomic_write_text(run.proof_root / DISK_WRITES_FILE, frame.to_csv(index=False))
    by_phase = judgement.phases
    expectations = (("before", "all acknowledged"), ("inside", "all failed"), ("after", "all acknowledged"))
    for phase, expected in expectations:
        count, failed = by_phase[phase]["writes"], by_phase[phase]["failed"]
        ok = count > 0 and (failed == count if phase == "inside" else failed == 0)
        run.recorder.check(f"disk writes {phase} the window: {expected}", expected,
                           f"{count - failed} acknowledged, {failed} failed", ok=ok, node=name)
    lost = int(((judgement.writes["ok"]) & ~judgement.writes["reads_back"]).sum())
    ghosts = int(((~judgement.writes["ok"]) & judgement.writes["reads_back"]).sum())
    run.recorder.check("acknowledged disk writes read back", 0, lost, node=name)
    run.recorder.check("failed disk writes absent afterwards", 0, ghosts, node=name)
    expected_read = READS_INSIDE[params.disk_fault]
    run.recorder.check(f"a read inside the {params.disk_fault} window: {expected_read}", expected_read,
                       "pass" if reads["inside"] else "fail", node=name)
    run.recorder.check("a read after the window passes", "pass", "pass" if reads["after"] else "fail",
                       node=name)
    run.recorder.figure("disk writes", len(writes))
    run.recorder.figure("writes failed inside the fault window", by_phase["inside"]["failed"])
    run.recorder.figure("acknowledged disk writes lost", lost)
    run.recorder.figure("fault window", round(window.out_end - window.in_start, 2), "s")
    problems = judgement.problems + ([] if reads["inside"] == (expected_read == "pass") else
                                     [f"a read inside the window did not {expected_read}"])
    if problems:
        raise LaneFailure(f"{name}: disk writes around the {params.disk_fault} window: "
                          + "; ".join(problems))
    return judgement.table.assign(node=name, disk=str(mapping.loc[0, "device"]), table=params.disk_fault,
                                  window_s=round(window.out_end - window.in_start, 2))


@lab_step("storage failure plot")
def storage_fault_plot(run: Run, env: DurabilityEnv) -> None:
    """Each disk write's latency over the run (red: failed), the fault window shaded."""
    from ucnb.kernel.plots import latency

    if not env.disk_writes:
        raise HarnessError("storage_fault_plot before storage_fault: the notebook's cells are out of order")
    ops: list[tuple[float, float | None, str]] = [(w.end + env.disk_offset, w.end - w.start,
                                                   "ok" if w.ok else "fail") for w in env.disk_writes]
    figure = latency(run.recorder, ops, f"{run.lane.name}: writes to the data disk")
    run.show_figure(figure, "disk-writes.png")


# -- what the contract names ---------------------------------------------------------------------
@lab_step("contract artifacts")
def contract_artifacts(run: Run, env: DurabilityEnv) -> pd.DataFrame:
    """Each file the product's contract names for this lane: written by the lab, or skipped with why."""
    from ucnb.product.contract import load_contract

    _, entry = load_contract().lane(LANE.name)
    rows = []
    for step in entry.all_steps():
        for name in step.files:
            path = run.proof_root / name
            if path.exists():
                rows.append({"artifact": name, "in the proof root": True,
                             "note": f"{path.stat().st_size} bytes"})
                continue
            reason = NOT_ON_LAB.get(name, f"the {run.profile.name} lane does not make {name}")
            run.skip(f"artifact {name}", reason)
            rows.append({"artifact": name, "in the proof root": False, "note": reason})
    rows += [{"artifact": name, "in the proof root": (run.proof_root / name).exists(),
              "note": "the lab's own evidence"}
             for name in LAB_ARTIFACTS]
    return pd.DataFrame(rows)
