"""JUnit XML for CI dashboards: one <testsuite> per suite entry (lane or guard), one <testcase> for
the entry itself and one per recorded step. Failed steps are <failure>, skipped steps (and lanes
that were not run, with why) are <skipped message=…>: a skip is never shown as a pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Entry statuses that mean "not run", each reported as <skipped>.
NOT_RUN = ("not-built", "not-runnable", "not-run")


@dataclass
class Case:
    """One <testcase>: `outcome` is passed, failed, skipped or running (running: never finished)."""

    name: str
    classname: str
    outcome: str
    time_s: float = 0.0
    message: str = ""


@dataclass
class Suite:
    """One <testsuite>."""

    name: str
    cases: list[Case] = field(default_factory=list)
    time_s: float = 0.0
    timestamp: str = ""
    system_out: str = ""

    def count(self, *outcomes: str) -> int:
        return sum(1 for c in self.cases if c.outcome in outcomes)


def step_cases(classname: str, rows: Iterable[Mapping[str, Any]]) -> list[Case]:
    """Test cases from recorder step rows (`index, name, node, start, end, outcome, detail, kind`)."""
    cases = []
    for row in rows:
        start, end = row.get("start"), row.get("end")
        duration = float(end) - float(start) if start not in (None, "") and end not in (None, "") else 0.0
        label = f"{int(row.get('index') or 0):02d} {row['name']}"
        if row.get("node"):
            label += f" [{row['node']}]"
        outcome = str(row.get("outcome") or "running")
        message = str(row.get("detail") or "")
        if outcome == "running":
            message = f"did not finish{': ' + message if message else ''}"
        cases.append(Case(label, f"{classname}.{row.get('kind') or 'step'}", outcome,
                          max(duration, 0.0), message))
    return cases


def _case_element(case: Case) -> ET.Element:
    element = ET.Element("testcase", name=case.name, classname=case.classname, time=f"{case.time_s:.3f}")
    if case.outcome in ("failed", "running"):
        failure = ET.SubElement(element, "failure", message=case.message[:1000] or case.outcome,
                                type=case.outcome)
        failure.text = case.message
    elif case.outcome in ("skipped", "interrupted"):   # stopped by the user: neither pass nor failure
        ET.SubElement(element, "skipped", message=case.message[:1000] or "skipped")
    return element


def to_xml(name: str, suites: Sequence[Suite], time_s: float = 0.0) -> str:
    """The JUnit document (the common Jenkins/Ant schema every CI parser reads)."""
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        tests, failures, skipped = len(suite.cases), suite.count("failed", "running"), suite.count("skipped")
        element = ET.SubElement(root, "testsuite", name=suite.name, tests=str(tests),
                                failures=str(failures), errors="0", skipped=str(skipped),
                                time=f"{suite.time_s:.3f}")
        if suite.timestamp:
            element.set("timestamp", suite.timestamp)
        element.extend(_case_element(c) for c in suite.cases)
        if suite.system_out:
            ET.SubElement(element, "system-out").text = suite.system_out
        totals["tests"] += tests
        totals["failures"] += failures
        totals["skipped"] += skipped
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{time_s:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: Path, name: str, suites: Sequence[Suite], time_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_xml(name, suites, time_s))
    return path
