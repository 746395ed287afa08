"""The KV role's light client (the workload's calls): the guest-side script runs here in a POSIX
shell, with a fake client standing in for busybox wget, so its failover rule is tested for real:
past an unreachable member only, never past a call that may have been applied."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ucnb import profiles
from ucnb.cluster.history import classify
from ucnb.cluster.kv import KV, prefix_end, value_of
from ucnb.lab.ssh import CommandResult

# What each fake member does: print like busybox wget does, or hang (a member that took the call).
FAKE = r'''
fake() {
  echo "$1" >> "$CALLS"
  case "$1" in
    *10.0.0.11:*) echo "wget: can't connect to remote host (10.0.0.11): Connection refused" >&2; return 1 ;;
    *10.0.0.12:*) echo "wget: can't connect to remote host (10.0.0.12): No route to host" >&2; return 1 ;;
    *10.0.0.13:*) printf '{"kvs":[{"key":"eA==","value":"%s"}],"body":%s}\n' "$VALUE" "$2" ;;
    *10.0.0.14:*) sleep 1 ;;
  esac
}
'''


class FakeLab:
    def __init__(self) -> None:
        self.nodes = {"n1": None, "n2": None, "n3": None, "n4": None}

    def address(self, index: int, network: int = 0) -> str:
        return f"10.0.0.{10 + index}"


class ShellNode:
    """Runs the command in sh on this machine, as the guest's shell would."""

    name = "client"

    def __init__(self, tmp: Path) -> None:
        self.calls = tmp / "calls"
        self.calls.touch()

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        start = time.monotonic()
        env = {"CALLS": str(self.calls), "VALUE": base64.b64encode(b"seen").decode(), "PATH": "/usr/bin:/bin"}
        try:
            done = subprocess.run(["sh", "-c", FAKE + command], capture_output=True, text=True, env=env,
                                  timeout=min(timeout, 0.5))
            status, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:  # our own deadline: the call's fate is unknown
            status, out, err = None, "", ""
        return CommandResult(self.name, command, status, out, err, time.monotonic() - start)

    def called(self) -> list[str]:
        return [line.split("//")[1].split(":")[0] for line in self.calls.read_text().split()]


@pytest.fixture()
def kv() -> KV:
    role = profiles.load("lab").role("kv").model_copy(update={"http": "fake {url} {body}"})
    return KV(role, FakeLab())  # type: ignore[arg-type]


def test_a_call_fails_over_past_unreachable_members_to_one_that_answers(kv: KV, tmp_path: Path) -> None:
    node = ShellNode(tmp_path)
    result = kv.read_value(node, ["n1", "n2", "n3"], "workload/k0")  # type: ignore[arg-type]
    assert result.ok, result
    assert value_of(result) == "seen"
    assert node.called() == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]


def test_a_call_that_may_have_been_applied_is_never_sent_again(kv: KV, tmp_path: Path) -> None:
    node = ShellNode(tmp_path)
    result = kv.put_value(node, ["n4", "n3"], "workload/k0", "v", timeout=1)  # type: ignore[arg-type]
    assert not result.ok and classify(result)[0] == "info"
    assert node.called() == ["10.0.0.14"]


def test_no_member_reachable_is_a_definite_failure(kv: KV, tmp_path: Path) -> None:
    node = ShellNode(tmp_path)
    result = kv.put_value(node, ["n1", "n2"], "workload/k0", "v")  # type: ignore[arg-type]
    assert classify(result) == ("fail", "wget: can't connect to remote host (10.0.0.12): No route to host")


def test_keys_and_values_reach_the_api_intact(kv: KV, tmp_path: Path) -> None:
    node = ShellNode(tmp_path)
    value = "it's a \"value\" with $(spaces) and `ticks`"
    result = kv.put_value(node, ["n3"], "workload/k 1", value)  # type: ignore[arg-type]
    body: dict[str, Any] = json.loads(result.stdout)["body"]
    assert base64.b64decode(body["key"]).decode() == "workload/k 1"
    assert base64.b64decode(body["value"]).decode() == value
    serializable = kv.read_value(node, ["n3"], "k", serializable=True)  # type: ignore[arg-type]
    assert json.loads(serializable.stdout)["body"] == {"key": "aw==", "serializable": True}


def test_a_reply_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a get reply"):
        value_of(CommandResult("n", "c", 0, "<html>", "", 0.1))
    assert value_of(CommandResult("n", "c", 0, '{"header": {}}', "", 0.1)) is None


# The cluster views through the gateway: n1 refuses, n3 answers as etcd 3.4's gateway does
# (numbers as strings; `leader` left out while there is none), n2 answers something else.
STATUS = r'''
fake() {
  echo "$1" >> "$CALLS"
  case "$1" in
    *10.0.0.11:*) echo "wget: can't connect to remote host (10.0.0.11): Connection refused" >&2; return 1 ;;
    *10.0.0.12:*) echo "<html>not etcd</html>" ;;
    *10.0.0.13:*/health) echo '{"health":"true"}' ;;
    *10.0.0.13:*) echo '{"header":{"cluster_id":"7","member_id":"13","revision":"5","raft_term":"2"},'\
'"leader":"13","raftIndex":"9","raftTerm":"2"}' ;;
    *10.0.0.14:*) echo '{"header":{"member_id":"14"},"raftIndex":"1","isLearner":true}' ;;
  esac
}
'''


class StatusNode(ShellNode):
    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        done = subprocess.run(["sh", "-c", STATUS + command], capture_output=True, text=True, timeout=5,
                              env={"CALLS": str(self.calls), "PATH": "/usr/bin:/bin"})
        return CommandResult(self.name, command, done.returncode, done.stdout, done.stderr, 0.1)


def test_status_asks_every_endpoint_at_once_and_keeps_those_that_answered(kv: KV, tmp_path: Path) -> None:
    node = StatusNode(tmp_path)
    statuses = kv.status(node, ["n1", "n2", "n3", "n4"])  # type: ignore[arg-type]
    seen = [(s.endpoint, s.member_id, s.leader, s.raft_index, s.revision, s.is_learner) for s in statuses]
    assert seen == [("http://10.0.0.13:2379", 13, 13, 9, 5, False),
                    ("http://10.0.0.14:2379", 14, 0, 1, 0, True)]
    assert node.called() == ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"]


def test_health_is_a_get_of_the_members_own_health_endpoint(tmp_path: Path) -> None:
    role = profiles.load("lab").role("kv")
    assert role.health is not None and "--post-data" not in role.health   # etcd answers /health to GET only
    kv = KV(role.model_copy(update={"health": "fake {url}"}), FakeLab())  # type: ignore[arg-type]
    node = StatusNode(tmp_path)
    assert kv.health(node, "n3").ok and not kv.health(node, "n1").ok  # type: ignore[arg-type]
    assert node.calls.read_text().split() == ["http://10.0.0.13:2379/health", "http://10.0.0.11:2379/health"]


def test_a_prefix_ranges_over_its_keys_as_etcd_clients_compute_it() -> None:
    def end(prefix: str) -> bytes:
        return base64.b64decode(prefix_end(prefix))
    assert end("check/") == b"check0" and end("workload/") == b"workload0"
    assert end("") == b"\0"           # with key "\0": every key
    assert end("a\x7f") == b"a\x80"
