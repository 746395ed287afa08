"""One suite from several outputs folders: a CI matrix runs a suite's steps as separate jobs
(`ucnb suite NAME --only STEP`, the matrix from `ucnb suite NAME --matrix`), each uploads its
outputs folder, and the merge job renders one report, one JUnit and one verdict over them
(`ucnb report A B … --suite NAME`).

The suite's plan (this checkout's `suites.yaml`) gives the entries and their order. Each entry is
the newest run of that step found in any source's suite runs; a step no source ran is `not-run`
(or, when the plan says it cannot run, `not-built`/`not-runnable` with the plan's reason), so a
merged suite passes only when every step passed somewhere, exactly as a serial run would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ucnb.errors import ParameterError
from ucnb.evidence import index, junit
from ucnb.evidence.report import SuiteView
from ucnb.runner import suites


@dataclass(frozen=True)
class MergedSuite:
    name: str
    entries: list[suites.SuiteEntry]   # in the suite's order; proof roots absolute
    runs: list[Path]                   # the suite roots the entries came from
    verdict: str
    exit_code: int


def suite_runs(entries: list[index.IndexEntry], suite: str) -> list[tuple[Path, dict[str, Any]]]:
    """(suite root, its suite.json) of every indexed run of `suite`, oldest first."""
    found = []
    for entry in sorted((e for e in entries if e.kind == "suite" and e.lane == suite), key=lambda e: e.start):
        root = entry.path()
        try:
            found.append((root, json.loads((root / suites.SUITE_FILE).read_text())))
        except (OSError, ValueError) as exc:
            raise ParameterError(f"suite run {root} has no readable {suites.SUITE_FILE}: {exc}") from None
    return found


def merge(suite_plan: suites.SuitePlan, entries: list[index.IndexEntry],
          allow_incomplete: bool = False) -> MergedSuite:
    """The suite's entries from the indexed suite runs (see the module docstring)."""
    ran: dict[tuple[str, str], tuple[Path, suites.SuiteEntry]] = {}
    for root, summary in suite_runs(entries, suite_plan.name):   # oldest first: newest wins
        for data in summary.get("entries", []):
            entry = suites.entry_from_summary(data, root)
            if entry.ran:
                ran[(entry.kind, entry.name)] = (root, entry)
    merged, used = [], []
    for planned in suite_plan.entries:
        if (planned.kind, planned.name) in ran:
            root, entry = ran[(planned.kind, planned.name)]
            merged.append(entry)
            used += [root] if root not in used else []
        elif planned.status == suites.PENDING:
            merged.append(suites.SuiteEntry(planned.kind, planned.name, suites.NOT_RUN,
                                            "no merged run ran this step", planned.path))
        else:
            merged.append(planned)
    verdict, exit_code = suites.verdict_and_exit(merged, allow_incomplete)
    return MergedSuite(suite_plan.name, merged, used, verdict, exit_code)


def write_junit(merged: MergedSuite, path: Path) -> Path:
    """The merged suite as JUnit, as a serial run writes it (proof roots relative to `path`)."""
    base = path.resolve().parent
    cases = suites.junit_suites(merged.name, [
        replace(e, proof_root=os.path.relpath(e.proof_root, base)) if e.proof_root else e
        for e in merged.entries])
    return junit.write(path, f"ucnb suite {merged.name}", cases, sum(e.duration_s for e in merged.entries))


def view(merged: MergedSuite) -> SuiteView:
    """The merged suite as the report's first section."""
    return SuiteView(merged.name, merged.verdict, [
        (f"guard {e.name}" if e.kind == "guard" else e.name, e.status,
         f"{e.duration_s:.1f}" if e.ran else "—", e.reason, Path(e.proof_root) if e.proof_root else None)
        for e in merged.entries])
