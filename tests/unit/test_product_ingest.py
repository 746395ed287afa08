"""Ingest of the product's proof root: copy without leaving it, checksums, and the verdict."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from ucnb.errors import LaneFailure
from ucnb.product.ingest import ingest, parse_key_values


def product_root(work: Path, lane: str, result: object = None, raw: str | None = None) -> Path:
    """<work>/<lane>/<dated> with environment.txt (and result.json), latest -> dated."""
    dated = work / lane / "20261201T120000"
    (dated / "state").mkdir(parents=True)
    (dated / "environment.txt").write_text("execution_model=materialized-check-runner\n# c\n\nvm=a=b\n")
    (dated / "state" / "environment.txt").write_text("vm_accelerator_mode=kvm\n")
    (dated / "serial.log").write_text("boot\nULTRACLOUD_MARKER pre-install.boot.n1\n"
                                      "ULTRACLOUD_MARKER reboot.n1")  # no newline at the end
    if raw is not None:
        (dated / "result.json").write_text(raw)
    elif result is not None:
        (dated / "result.json").write_text(json.dumps(result))
    (work / lane / "latest").symlink_to(dated.name)
    return dated


def test_copies_with_checksums_and_parses_what_it_knows(tmp_path: Path) -> None:
    dated = product_root(tmp_path / "work", "baremetal-iso-e2e", {"success": True, "n": 1})
    found = ingest("baremetal-iso-e2e", tmp_path / "proof" / "product", work_root=tmp_path / "work",
                   exit_status=0, expected_files=["environment.txt", "state/environment.txt"])
    assert found.passed and found.verdict == "passed" and found.problems == []
    assert found.source == dated.resolve() and found.success is True
    assert found.result == {"success": True, "n": 1}
    files = {row.file: row for row in found.files}
    assert set(files) == {"environment.txt", "state/environment.txt", "serial.log", "result.json"}
    for name, row in files.items():
        copied = tmp_path / "proof" / "product" / name
        assert copied.read_bytes() == (dated / name).read_bytes()
        assert row.sha256 == hashlib.sha256(copied.read_bytes()).hexdigest()
        assert row.bytes == copied.stat().st_size
    assert found.environment == {"execution_model": "materialized-check-runner", "vm": "a=b",
                                 "vm_accelerator_mode": "kvm"}
    expected_row = {"file": "state/environment.txt", "key": "vm_accelerator_mode", "value": "kvm"}
    assert expected_row in found.key_value_rows()
    assert [(m.file, m.marker.name) for m in found.markers] == [("serial.log", "pre-install.boot.n1"),
                                                               ("serial.log", "reboot.n1")]
    assert found.file_rows()[0].keys() == {"file", "bytes", "sha256", "copied"}


def test_never_follows_a_link_out_of_the_proof_root(tmp_path: Path) -> None:
    dated = product_root(tmp_path / "work", "lane", {"success": True})
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    (dated / "out").symlink_to(secret)
    (dated / "up").symlink_to("../../..")
    (dated / "inside").symlink_to("environment.txt")
    (dated / "dangling").symlink_to("nowhere")
    os.mkfifo(dated / "fifo")
    found = ingest("lane", tmp_path / "dest", work_root=tmp_path / "work", exit_status=0)
    skipped = dict(found.skipped)
    assert "link out of the proof root" in skipped["out"] and "directory" in skipped["up"]
    assert "dangling" in skipped["dangling"] and "regular" in skipped["fifo"]
    assert not (tmp_path / "dest" / "out").exists() and not (tmp_path / "dest" / "up").exists()
    assert (tmp_path / "dest" / "inside").read_text() == (dated / "environment.txt").read_text()
    assert found.passed


@pytest.mark.parametrize(("exit_status", "result", "says"), [
    (0, {"success": False}, "the product exited 0 but result.json says success: false"),
    (2, {"success": False}, "the product exited 2 and result.json says success: false"),
    (1, {"success": True}, "the product exited 1 but result.json says success: true"),
    (None, {"success": True}, "the product did not finish but result.json says success: true"),
    (0, {"success": "yes"}, "has no boolean `success`"),
    (0, ["success"], "has no boolean `success`"),
])
def test_exit_status_and_result_json_must_agree(tmp_path: Path, exit_status: int | None, result: object,
                                                says: str) -> None:
    product_root(tmp_path / "work", "lane", result)
    found = ingest("lane", tmp_path / "dest", work_root=tmp_path / "work", exit_status=exit_status)
    assert found.verdict == "failed" and any(says in p for p in found.problems), found.problems
    with pytest.raises(LaneFailure, match="lane: "):
        found.raise_for_verdict()


def test_missing_or_unparseable_result_json(tmp_path: Path) -> None:
    product_root(tmp_path / "a", "lane")
    found = ingest("lane", tmp_path / "dest-a", work_root=tmp_path / "a", exit_status=0)
    assert found.problems == [f"the product exited 0 but wrote no result.json in {found.source}"]
    product_root(tmp_path / "b", "lane", raw="{not json")
    found = ingest("lane", tmp_path / "dest-b", work_root=tmp_path / "b", exit_status=0)
    assert "not valid JSON" in found.problems[0]
    product_root(tmp_path / "c", "hardware-smoke")
    assert ingest("hardware-smoke", tmp_path / "dest-c", work_root=tmp_path / "c", exit_status=0,
                  result_json=False).passed
    assert ingest("hardware-smoke", tmp_path / "dest-d", work_root=tmp_path / "c", exit_status=1,
                  result_json=False).problems == ["the product exited 1"]


def test_no_latest_stale_latest_and_missing_named_files(tmp_path: Path) -> None:
    found = ingest("lane", tmp_path / "dest", work_root=tmp_path / "work", exit_status=0)
    assert found.problems == [f"the product exited 0 and wrote no {tmp_path / 'work' / 'lane' / 'latest'}"]
    dated = product_root(tmp_path / "work", "lane", {"success": True})
    old = time.time() - 3600
    for path in [dated, *dated.rglob("*")]:
        os.utime(path, (old, old), follow_symlinks=False)
    found = ingest("lane", tmp_path / "dest", work_root=tmp_path / "work", exit_status=0, since=time.time(),
                   expected_files=["scope-fixed-contract.json"])
    assert any("did not refresh latest" in p for p in found.problems)
    assert any("scope-fixed-contract.json is missing" in p for p in found.problems)


def test_large_files_are_checksummed_not_copied(tmp_path: Path) -> None:
    dated = product_root(tmp_path / "work", "lane", {"success": True})
    (dated / "disk.img").write_bytes(b"\0" * 4096)
    found = ingest("lane", tmp_path / "dest", work_root=tmp_path / "work", exit_status=0, max_copy_bytes=1024)
    row = next(r for r in found.files if r.file == "disk.img")
    assert not row.copied and row.sha256 == hashlib.sha256(b"\0" * 4096).hexdigest()
    assert not (tmp_path / "dest" / "disk.img").exists() and found.passed


def test_key_values() -> None:
    assert parse_key_values('a=1\n\n# x\nb = "two"\nnot a pair\nc=x=y\n') == [("a", "1"), ("b", "two"),
                                                                              ("c", "x=y")]
