"""A lane's product commands as recorded steps, each judged the product's way.

`run_recorded()` runs one command as a step (output streamed into the log, markers recorded
live), ingests what it writes (`<work root>/<folder>/latest`) into ucnb's proof root, and records
the verdict as checks: the exit status, `result.json`'s `success`, whether the two agree, the
files and the marker sequence the contract names. The step fails with a message saying which
when any of them does; the caller shows the tables and then raises.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ucnb.errors import LaneFailure
from ucnb.markers import Marker, check_sequence
from ucnb.product.commands import Command, CommandResult, recorder_callback, run
from ucnb.product.ingest import Ingested, ingest_result

if TYPE_CHECKING:
    from ucnb.evidence.redact import Redactor
    from ucnb.kernel.record import Recorder

NODE = "product"


@dataclass
class CommandOutcome:
    """One product command: what ran, what it wrote, and why it fails the lane (None: it passed)."""

    command: Command
    result: CommandResult
    ingested: Ingested | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        return "; ".join(self.problems) if self.problems else None

    @property
    def markers(self) -> list[Marker]:
        """Markers on its output, then those in the files it wrote (serial logs)."""
        return self.result.markers + ([m.marker for m in self.ingested.markers] if self.ingested else [])

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise LaneFailure(self.failure)

    def summary(self) -> dict[str, Any]:
        """A row of the product's verdict table."""
        ingested = self.ingested
        ended = ("timeout" if self.result.timed_out else
                 f"failure marker {self.result.failure_marker.name}" if self.result.failure_marker else
                 "exit" if self.result.exit_status is not None else "not started")
        return {"command": self.command.name, "argv": shlex.join(self.result.argv), "ended by": ended,
                "exit status": self.result.exit_status,
                "result.json success": "—" if ingested is None else
                ("missing" if ingested.success is None else ingested.success),
                "proof root": "—" if ingested is None else
                str(ingested.source or f"absent: {ingested.expected}"),
                "files": "—" if ingested is None else len(ingested.files),
                "duration_s": round(self.result.duration, 2),
                "verdict": "passed" if self.failure is None else "failed"}


def run_recorded(recorder: Recorder, command: Command, log_path: Path, destination: Path, *,
                 echo: Callable[[str], object] | None = print, overrides: Mapping[str, str] | None = None,
                 redactor: Redactor | None = None, node: str = NODE) -> CommandOutcome:
    """Run `command` as a recorded step; what it writes goes to `destination/<its folder>`.
    Never raises for the product's failure: the step and the checks record it (see the module)."""
    with recorder.step(command.name or command.display(), node) as row:
        result = run(command, log_path, recorder_callback(recorder, node, echo), check=False,
                     overrides=overrides, redactor=redactor)
        outcome = CommandOutcome(command, result)
        if command.proof_folder is not None and result.argv:
            outcome.ingested = ingest_result(result, destination / command.proof_folder, lane=command.name)
        judge(recorder, outcome, node)
        row.detail = f"{shlex.join(result.argv)}: " + (outcome.failure or "passed")
        if outcome.failure is not None:
            row.outcome = "failed"
    return outcome


def judge(recorder: Recorder, outcome: CommandOutcome, node: str = NODE) -> None:
    """Record the command's verdict as checks; every failed one adds its reason to `problems`."""
    command, result, ingested = outcome.command, outcome.result, outcome.ingested
    name = command.name
    exit_seen: object = result.exit_status
    if result.exit_status is None:
        exit_seen = "none: " + ("ended at its timeout" if result.timed_out else
                                "ended at a failure marker" if result.failure_marker else "not started")
    recorder.check(f"{name}: exit status", 0, exit_seen, ok=result.exit_status == 0, node=node)
    if result.failure is not None:
        outcome.problems.append(result.failure)
    if ingested is not None:
        if command.result_json:
            recorder.check(f"{name}: result.json success", True,
                           "missing" if ingested.success is None else ingested.success,
                           ok=ingested.success is True, node=node)
            agree = ingested.success is not None and (result.exit_status == 0) == ingested.success
            recorder.check(f"{name}: exit status and result.json agree", "agree",
                           "agree" if agree else _disagreement(result, ingested), ok=agree, node=node)
        if command.expected_files:
            present = {row.file for row in ingested.files}
            recorder.check(f"{name}: files the contract names", sorted(command.expected_files),
                           sorted(present & set(command.expected_files)),
                           ok=set(command.expected_files) <= present, node=node)
        outcome.problems += [p for p in ingested.problems if p not in outcome.problems]
    if command.markers and result.failure_marker is None:
        checks = check_sequence(command.markers, outcome.markers)
        for check in checks:
            recorder.check(f"{name}: marker {check.expected}", "seen, in order",
                           "not seen" if check.seen is None else
                           (check.seen.name if check.in_order else f"{check.seen.name} (out of order)"),
                           ok=check.ok, node=node)
        missing = [c.expected for c in checks if not c.ok]
        if missing:
            outcome.problems.append(f"`{shlex.join(result.argv)}`: the contract's marker sequence is "
                                    f"incomplete (not seen in order: {', '.join(missing)})")


def _disagreement(result: CommandResult, ingested: Ingested) -> str:
    exited = "did not finish" if result.exit_status is None else f"exit {result.exit_status}"
    said = "result.json missing" if ingested.success is None else f"success: {str(ingested.success).lower()}"
    return f"{exited}, {said}"
