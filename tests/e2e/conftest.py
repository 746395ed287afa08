"""The e2e layer: lanes end to end through `ucnb run` (papermill, a kernel, real guests), each run
through the `cli` fixture into the test's own outputs root. Needs root and the lab host.

Every e2e test runs at least one lane, so `own_runs` applies to each of them: a test that wants
its runs' ids or labs requests it by name and gets the same object. Runs that tests of several
modules only read are made once, here (`shared_run`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import Cli
from ..lab_fixtures import OwnRuns, assert_run_left_nothing, lab_host, own_runs, shared_run

__all__ = ["OwnRuns", "lab_host", "own_runs"]
BOOTSTRAP_CANARY = "canary-token-5e1f9a7c2b"   # the bootstrap token of the shared runs: in no artifact


@pytest.fixture(autouse=True)
def _every_test_checks_its_runs(request: pytest.FixtureRequest) -> None:
    """Brings `own_runs` (whose teardown is the check) into every e2e test, except one whose runs
    are shared with other tests (a `shared_run` fixture) and checked there, each run with
    `OwnRuns(<its folder>).assert_nothing_left()`, or that makes no run (marker
    `runs_checked_by_module`)."""
    if request.node.get_closest_marker("runs_checked_by_module") is None:
        request.getfixturevalue("own_runs")


@dataclass(frozen=True)
class SharedRun:
    """A lane or suite run that several tests read: its command's outcome, proof root (or suite
    root), JUnit file if asked for, the `cli` it ran with, and its wall time."""

    cli: Cli
    done: subprocess.CompletedProcess[str]
    root: Path
    junit: Path | None = None
    wall_s: float = 0.0

    @property
    def lab_id(self) -> str:
        from ucnb.evidence.proof import read_environment

        return read_environment(self.root).get("lab_id", "")


@shared_run("session")
def baremetal_default(tmp_path_factory: pytest.TempPathFactory, lab_host: None) -> SharedRun:
    """baremetal-iso with its defaults (TLS with the run's CA, the binary cache, both layouts) and
    a bootstrap token (BOOTSTRAP_CANARY), once for tests/e2e/test_baremetal*.py."""
    base = tmp_path_factory.mktemp("baremetal-default")
    cli = Cli(base / "outputs")
    done = cli.run("baremetal-iso", ULTRACLOUD_BOOTSTRAP_TOKEN=BOOTSTRAP_CANARY)
    OwnRuns(base).assert_nothing_left()
    assert_run_left_nothing(cli.latest("baremetal-iso"))   # leases and lab state too
    return SharedRun(cli, done, cli.latest("baremetal-iso"))


@shared_run("session")
def kept_quickstart(tmp_path_factory: pytest.TempPathFactory, lab_host: None) -> Iterator[SharedRun]:
    """single-node-quickstart with `keep_vm=true`: its lab stays for the tests that reach it, then
    `ucnb lab clean` removes it and the check finds nothing of the run left."""
    base = tmp_path_factory.mktemp("kept-quickstart")
    cli, runs = Cli(base / "outputs"), OwnRuns(base)
    done = cli.run("single-node-quickstart", "-p", "keep_vm=true")
    try:
        yield SharedRun(cli, done, cli.latest("single-node-quickstart"))
    finally:
        for lab in sorted(runs.discover().lab_ids):
            cli("lab", "clean", lab, timeout=120)
        runs.assert_nothing_left()


@shared_run("session")
def portable_suite(tmp_path_factory: pytest.TempPathFactory, lab_host: None) -> SharedRun:
    """`ucnb suite portable --jobs 2 --junit` (the guards, then the quickstart and deployer-vm-smoke
    side by side), once for tests/e2e/test_suites.py, tests/e2e/test_deployer_vm.py and the
    parallel half of tests/e2e/test_scaleout.py's serial/parallel comparison."""
    base = tmp_path_factory.mktemp("portable-suite")
    cli, junit = Cli(base / "outputs"), base / "ci" / "portable.xml"
    started = time.monotonic()
    done = cli("suite", "portable", "--jobs", "2", "--junit", str(junit), "--no-progress", timeout=900)
    wall_s = time.monotonic() - started
    OwnRuns(base).assert_nothing_left()
    lines = done.stdout.strip().splitlines()
    return SharedRun(cli, done, Path(lines[-1]) if lines else base, junit, wall_s)
