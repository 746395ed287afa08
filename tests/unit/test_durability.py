"""durability-proof's pure parts: digests and differences, etcdctl JSON, the disk-fault judgement,
the SQL backup (real sqlite3 on this host, the same Debian package the guests run) and the
lane's parameter checks."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from ucnb.cluster import kv
from ucnb.cluster.backup import compare, kv_digest, ordered_digest
from ucnb.cluster.sql import Database, seed_sql
from ucnb.errors import ParameterError
from ucnb.lab.ssh import CommandResult
from ucnb.lanes import durability_proof as lane
from ucnb.storage.dmfault import Window, Write, judge, parse_blocks, parse_writes

from ..conftest import Cli

DATA = Path(__file__).parent / "data"


# -- digests and differences ---------------------------------------------------------------------

def test_ordered_digest_is_sha256_of_sorted_lines_and_order_free() -> None:
    assert ordered_digest(["b", "a"]) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert ordered_digest(["a", "b"]) == ordered_digest(["b", "a"])
    with pytest.raises(ValueError, match="newline"):
        ordered_digest(["two\nlines"])


def test_kv_digest_sees_a_value_change_and_cannot_be_fooled_by_separators() -> None:
    base = {"a": "1", "b": "2"}
    assert kv_digest(base) == kv_digest(dict(reversed(list(base.items()))))
    assert kv_digest(base) != kv_digest({"a": "1", "b": "3"})
    # "key=value" joined naively would make these two equal
    assert kv_digest({"a=b": "c"}) != kv_digest({"a": "b=c"})
    assert kv_digest({"k": "line1\nline2"}) != kv_digest({"k": "line1"})


def test_compare_names_missing_extra_and_changed_keys() -> None:
    difference = compare({"a": "1", "b": "2", "c": "3"}, {"a": "1", "c": "x", "d": "4"})
    assert (difference.missing, difference.extra, difference.changed) == (("b",), ("d",), ("c",))
    assert not difference.ok
    assert difference.describe() == "missing 1: b; extra 1: d; changed 1: c"
    assert compare({"a": "1"}, {"a": "1"}).describe() == "none"


# -- etcdctl JSON (real outputs) -----------------------------------------------------------------

def test_endpoint_status_carries_revision_cluster_and_leader() -> None:
    statuses = kv.parse_endpoint_status((DATA / "etcd-endpoint-status-cluster.json").read_text())
    assert [s.endpoint for s in statuses] == ["http://10.77.1.11:2379", "http://10.77.1.12:2379"]
    assert {s.revision for s in statuses} == {2}
    assert {s.cluster_id for s in statuses} == {412252549497599746}
    assert {s.leader for s in statuses} == {12873757595867654032}
    assert kv.parse_endpoint_status("") == [] and kv.parse_endpoint_status("Error: timeout") == []


def test_hashkv_kvs_and_snapshot_status_parse() -> None:
    hashes = kv.parse_hashkv((DATA / "etcd-endpoint-hashkv-cluster.json").read_text())
    assert len(hashes) == 3 and set(hashes.values()) == {3265221422}
    assert kv.parse_kvs((DATA / "etcd-get-limit1.json").read_text()) == {"durability/key-0001": "value-1"}
    assert kv.parse_kvs('{"header": {}}') == {}
    status = json.loads((DATA / "etcd-snapshot-status.json").read_text())
    assert set(status) == {"hash", "revision", "totalKey", "totalSize"}


# -- the disk-fault judgement --------------------------------------------------------------------

WINDOW = Window(in_start=10.0, in_end=10.3, out_start=13.0, out_end=13.4)


def _writes(spec: list[tuple[float, float, int]]) -> list[Write]:
    return [Write(i, start, end, status) for i, (start, end, status) in enumerate(spec, 1)]


GOOD = _writes([(9.0, 9.1, 0), (9.5, 9.6, 0), (10.1, 10.4, 1), (11.0, 11.1, 1), (12.0, 12.1, 1),
                (13.3, 13.5, 0), (14.0, 14.1, 0)])


def test_write_log_and_read_back_parse() -> None:
    log = "1 9.00 9.10 0\n2 9.50 9.60 0\n3 10.1 10.4 1\n4 11"   # the last line cut short by the stop
    assert parse_writes(log) == GOOD[:3]
    assert parse_blocks("ucnb-blk 00000001\nucnb-blk 00000002\nucnb-blk 00000017\n") == {1, 2, 17}
    assert parse_blocks("") == set()


def test_phases_against_the_window() -> None:
    assert [WINDOW.phase(w) for w in GOOD] == ["before", "before", "boundary", "inside", "inside",
                                               "boundary", "after"]


def test_a_good_history_passes_and_counts_per_phase() -> None:
    judgement = judge(GOOD, WINDOW, present={1, 2, 6, 7})
    assert judgement.ok, judgement.problems
    assert judgement.phases["inside"] == {"writes": 2, "acknowledged": 0, "failed": 2,
                                          "acknowledged, read back": 0, "failed, read back": 0}
    assert list(judgement.table["phase"]) == ["before", "inside", "after", "boundary"]


@pytest.mark.parametrize(("writes", "present", "needle"), [
    (GOOD, {1, 2, 6}, "1 acknowledged writes do not read back (blocks 7)"),
    (GOOD, {1, 2, 4, 6, 7}, "1 failed writes read back anyway (blocks 4)"),
    ([*GOOD[:3], Write(4, 11.0, 11.1, 0), *GOOD[4:]], {1, 2, 4, 6, 7},
     "1 writes inside the window succeeded"),
    ([GOOD[0], Write(2, 9.5, 9.6, 1), *GOOD[2:]], {1, 6, 7}, "1 writes before the window failed (blocks 2)"),
    (GOOD[:6], {1, 2, 6}, "no write fell entirely after the window"),
])
def test_each_broken_expectation_is_named(writes: list[Write], present: set[int], needle: str) -> None:
    judgement = judge(writes, WINDOW, present)
    assert not judgement.ok
    assert any(needle in p for p in judgement.problems), judgement.problems


# -- the SQL backup, with real sqlite3 -----------------------------------------------------------

class LocalNode:
    """Runs a guest command in this host's shell (sqlite3 is the same Debian 12 package)."""

    name = "local"

    def run(self, command: str, timeout: float = 30.0, check: bool = False,
            stdin: str | None = None) -> CommandResult:
        done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        result = CommandResult(self.name, command, done.returncode, done.stdout, done.stderr, 0.0)
        assert result.ok or not check, result
        return result


@pytest.fixture()
def databases(tmp_path: Path) -> tuple[Database, Database]:
    node = LocalNode()
    return Database(node, str(tmp_path / "source.db")), Database(node, str(tmp_path / "restored.db"))  # type: ignore[arg-type]


@pytest.mark.requires("sqlite3")
def test_dump_and_restore_keep_every_row_and_the_schema(databases: tuple[Database, Database]) -> None:
    source, restored = databases
    source.run(seed_sql(60))
    schema, tables = source.state()
    assert tables["kv"].rows == 60
    assert tables["durability_rows"].rows == 60 - 60 // 7   # every 7th id deleted: gaps kept
    restored.restore_from(source.dump())
    assert restored.integrity() == "ok"
    assert restored.state() == (schema, tables)


@pytest.mark.requires("sqlite3")
def test_a_changed_row_changes_the_table_digest(databases: tuple[Database, Database]) -> None:
    source, restored = databases
    source.run(seed_sql(20))
    restored.restore_from(source.dump())
    restored.run("UPDATE durability_rows SET note = 'it''s row 1, \"quoted\",' || char(10) || 'two lineS' "
                 "WHERE id = 1;\n")
    _, before = source.state()
    _, after = restored.state()
    assert after["durability_rows"].rows == before["durability_rows"].rows
    assert after["durability_rows"].digest != before["durability_rows"].digest
    assert after["kv"] == before["kv"]


# -- parameters, before any VM -------------------------------------------------------------------

def test_defaults_validate_and_the_known_keys_are_stable() -> None:
    params = lane.LANE.validate({})
    assert isinstance(params, lane.Parameters)
    keys = lane.known_keys(3)
    assert list(keys) == ["durability/key-0001", "durability/key-0002", "durability/key-0003"]
    assert keys == lane.known_keys(3) and len(set(keys.values())) == 3


@pytest.mark.parametrize(("values", "needle"), [
    ({"drop_key_on_restore": "durability/key-0201"},
     "drop_key_on_restore 'durability/key-0201' is not one of"),
    ({"drop_key_on_restore": "x; rm -rf /"}, "drop_key_on_restore: String should match pattern"),
    ({"preregister_node": "node04"}, "preregister_node 'node04' is declared in the cluster file"),
    ({"nodes": ["node01", "node02", "node03", "node04"], "sql_node": "node04"},
     "sql_node 'node04' runs no flaredb"),
    ({"sql_node": "node05"}, "sql_node 'node05' is not one of nodes"),
    ({"fault_node": "node09"}, "fault_node 'node09' is not one of nodes"),
    ({"snapshot_member": "node04", "nodes": ["node01", "node02", "node03", "node04"]},
     "snapshot_member 'node04' is not one of voters"),
    ({"disk_fault": "corrupt"}, "disk_fault: Input should be 'error' or 'flakey'"),
    ({"data_disk_size": "1T"}, "data_disk_size: String should match pattern"),
    ({"fault_hold_s": 0}, "fault_hold_s: Input should be greater than or equal to 0.5"),
    ({"key_count": 0}, "key_count: Input should be greater than or equal to 1"),
])
def test_bad_parameters_are_refused_naming_them(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ParameterError, match="durability-proof") as caught:
        lane.LANE.validate(values)
    assert needle in str(caught.value)


def test_the_cli_refuses_a_bad_durability_parameter_before_any_vm(cli: Cli) -> None:
    """Exit 2 naming the parameter; in the unit layer libvirt is out of reach, so nothing got that far."""
    done = cli.run("durability-proof", "-p", "drop_key_on_restore=durability/key-9999", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "drop_key_on_restore" in done.stderr and "not one of the 200 known keys" in done.stderr
    assert not (cli.outputs / "durability-proof").exists()   # refused before a proof root
