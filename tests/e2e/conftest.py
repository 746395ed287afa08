"""The e2e layer: lanes end to end through `ucnb run` (papermill, a kernel, real guests), each run
through the `cli` fixture into the test's own outputs root. Needs root and the lab host.

Every e2e test runs at least one lane, so `own_runs` applies to each of them: a test that wants
its runs' ids or labs requests it by name and gets the same object.
"""

import pytest

from ..lab_fixtures import OwnRuns, lab_host, own_runs

__all__ = ["OwnRuns", "lab_host", "own_runs"]


@pytest.fixture(autouse=True)
def _every_test_checks_its_runs(request: pytest.FixtureRequest) -> None:
    """Brings `own_runs` (whose teardown is the check) into every e2e test, except a module
    whose runs are shared between its tests (module-scoped fixtures) and checked there, each run
    with `OwnRuns(<its proof root>).assert_nothing_left()` (marker `runs_checked_by_module`)."""
    if request.node.get_closest_marker("runs_checked_by_module") is None:
        request.getfixturevalue("own_runs")
