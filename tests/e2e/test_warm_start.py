"""End to end: the quickstart with `boot_mode=restore` resumes its saved just-booted lab and the
evidence says so; a changed input that shapes the guest never restores a stale snapshot, boots
cold and says which input changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ucnb.files import read_kv
from ucnb.lab import warm

from ..conftest import Cli

LANE = "single-node-quickstart"
# Both tests lease the quickstart's warm slots: under xdist one after another on one worker, so the
# first test's second run finds the slot it saved free (side by side, the other took it: CI-like
# run, 2026-12-02, booted cold into slot 1).
pytestmark = pytest.mark.xdist_group("warm-quickstart")


def _boot(root: Path) -> dict[str, str]:
    env = read_kv(root / "environment.txt")
    return {k: v for k, v in env.items() if k.startswith(("boot_mode", "warm_"))}


def _ready(root: Path) -> float:
    return float(json.loads((root / "result.json").read_text())["figures"]["lab ready"]["value"])


def test_quickstart_restore_resumes_its_snapshot_and_says_so_in_the_evidence(cli: Cli) -> None:
    first = cli.run(LANE, "-p", "boot_mode=restore")
    assert first.returncode == 0, first.stderr
    made = _boot(cli.latest(LANE))
    assert made["boot_mode_requested"] == "restore" and made["warm_snapshot"]
    if made["boot_mode"] == "cold":   # no snapshot of these inputs yet: this run saved it
        saved = f"saved warm snapshot {made['warm_snapshot']}, resumed from it"
        assert made["boot_mode_detail"].endswith(saved)
    done = cli.run(LANE, "-p", "boot_mode=restore")
    assert done.returncode == 0, done.stderr
    root = cli.latest(LANE)
    assert json.loads((root / "result.json").read_text())["verdict"] == "passed"
    assert _boot(root) == {"boot_mode": "restore", "boot_mode_requested": "restore",
                           "boot_mode_detail": f"restored warm snapshot {made['warm_snapshot']}",
                           "warm_snapshot": made["warm_snapshot"]}
    assert "restored warm snapshot" in (root / f"{LANE}.html").read_text()
    cold = cli.run(LANE)   # the default stays cold, and says so
    assert cold.returncode == 0, cold.stderr
    assert _boot(cli.latest(LANE))["boot_mode"] == "cold"
    assert _ready(root) < _ready(cli.latest(LANE)), "a restore must be ready sooner than a cold boot"


def test_a_changed_input_boots_cold_names_the_change_and_saves_its_own_snapshot(cli: Cli) -> None:
    # A snapshot at the default 256 MiB first (restored if another test saved it already), so
    # this test does not depend on which worker ran the one above, or when.
    default = cli.run(LANE, "-p", "boot_mode=restore")
    assert default.returncode == 0, default.stderr
    done = cli.run(LANE, "-p", "boot_mode=restore", "-p", "memory_mib=272")
    root = cli.latest(LANE)
    env = _boot(root)
    key, _, number = env.get("warm_snapshot", "").partition(" slot ")
    try:
        assert done.returncode == 0, done.stderr
        assert env["boot_mode"] == "cold" and env["boot_mode_requested"] == "restore"
        # The newest snapshot of node01 (at 256 MiB) differs in node01's config.
        detail = env["boot_mode_detail"]
        assert detail.startswith("inputs changed since the last snapshot of these nodes: ") and \
            "node01 config" in detail, detail
        assert "inputs changed since the last snapshot" in (root / f"{LANE}.html").read_text()
    finally:   # this input's snapshot is the test's own: the next run of the test misses again
        if key:
            shutil.rmtree(warm.Slot(key, int(number)).directory, ignore_errors=True)
