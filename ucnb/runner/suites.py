"""Suites: named aggregates of guards and lanes (`ucnb/suites.yaml`), run into one dated root.

    outputs/suites/<suite>/<stamp>-<suite id>/
      suite.json  junit.xml  environment.txt  SHA256SUMS
      guards/<guard>.txt                       what each guard printed
      <lane>/<stamp>-<run id>/                 each lane's proof root (as `ucnb run` writes it)
    outputs/suites/<suite>/latest -> the newest

The environment is captured once for the suite; each lane runs through `ucnb.runner.run_lane`.
A lane the registry does not know (not built yet) or the profile cannot run is reported with the
reason (`not-built`, `not-runnable`) and never run or counted as a pass.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ucnb import files, lanes, paths
from ucnb.errors import InfrastructureError, Interrupted, LaneFailure, ParameterError, UcnbError
from ucnb.evidence import index, junit
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import Redactor
from ucnb.kernel.record import load_events

if TYPE_CHECKING:
    from ucnb.runner.execute import Beside
    from ucnb.runner.parallel import Jobs

SUITES_FILE = Path(__file__).resolve().with_name("suites.yaml")
SUITE_FILE = "suite.json"
GUARDS = ("surface", "profiles")

# Statuses of a suite entry. The last three mean "not run", with the reason beside them.
PENDING, PASSED, FAILED = "pending", "passed", "failed"
NOT_BUILT, NOT_RUNNABLE, NOT_RUN = "not-built", "not-runnable", "not-run"


# -- the data --------------------------------------------------------------------------------
class SuiteStep(BaseModel):
    """One step of a suite: exactly one of `guard`, `lane`, `suite` or `portable_lanes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    guard: Literal["surface", "profiles"] | None = None
    path: str | None = None
    lane: str | None = None
    suite: str | None = None
    portable_lanes: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> SuiteStep:
        given = [k for k in ("guard", "lane", "suite") if getattr(self, k) is not None]
        if self.portable_lanes:
            given.append("portable_lanes")
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of guard, lane, suite, portable_lanes (got {given})")
        if self.path is not None and self.guard != "surface":
            raise ValueError("`path` belongs to a `guard: surface` step")
        return self


class SuiteSpec(BaseModel):
    """A suite as written in suites.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    profile: str = "lab"
    require_kvm: bool = False
    steps: tuple[SuiteStep, ...]


class SuitesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal["ucnb.suites/v1"]
    suites: dict[str, SuiteSpec]


def load_suites(path: Path | None = None) -> dict[str, SuiteSpec]:
    """Every suite of a suites file (default: the shipped `ucnb/suites.yaml`)."""
    return _load(path or SUITES_FILE)


@cache
def _load(path: Path) -> dict[str, SuiteSpec]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"suites file {path} is unreadable: {exc}") from None
    if isinstance(data, dict) and "schema" in data:
        data["schema_"] = data.pop("schema")
    try:
        return SuitesFile.model_validate(data).suites
    except ValidationError as exc:
        raise ParameterError(f"suites file {path} is invalid: {exc}") from None


# -- the plan --------------------------------------------------------------------------------
@dataclass
class SuiteEntry:
    """One guard or lane of a suite run: planned (status pending or not run), then its result."""

    kind: str                 # guard | lane
    name: str
    status: str = PENDING
    reason: str = ""
    path: str | None = None   # surface guard: the tree it scans
    duration_s: float = 0.0
    exit_code: int = 0
    proof_root: str | None = None      # relative to the suite root
    accelerator: str | None = None
    started: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # recorded steps, or guard checks

    @property
    def ran(self) -> bool:
        return self.status in (PASSED, FAILED)


@dataclass
class SuitePlan:
    name: str
    profile: str
    require_kvm: bool
    entries: list[SuiteEntry]
    only: tuple[str, ...] = ()   # the steps this run was given (`--only`), when not all


def select(suite_plan: SuitePlan, only: list[str]) -> SuitePlan:
    """Only the named steps (comma-separated or repeated), in the suite's order: a CI matrix job's
    share of the suite (`matrix`). A name that is not a step of the suite is a parameter error."""
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    if not names:
        return suite_plan
    steps = [e.name for e in suite_plan.entries]
    unknown = [n for n in names if n not in steps]
    if unknown:
        raise ParameterError(f"--only {', '.join(unknown)}: not a step of suite {suite_plan.name!r} "
                             f"(its steps: {', '.join(steps)})")
    return replace(suite_plan, entries=[e for e in suite_plan.entries if e.name in names],
                   only=tuple(n for n in steps if n in names))


def matrix(suite_plan: SuitePlan) -> dict[str, list[dict[str, str]]]:
    """The suite as a CI matrix (GitHub's `fromJSON`): one job for the guards, one per runnable
    lane, each `{"id": …, "only": …}` for `ucnb suite NAME --only ONLY`. A lane that cannot run
    gets no job: merging the jobs' outputs (`ucnb report … --suite NAME`) reports it, with why."""
    guards = [e.name for e in suite_plan.entries if e.kind == "guard"]
    jobs = [{"id": "guards", "only": ",".join(guards)}] if guards else []
    return {"include": jobs + [{"id": e.name, "only": e.name} for e in suite_plan.entries
                               if e.kind == "lane" and e.status == PENDING]}


def lane_entry(name: str, profile: str) -> SuiteEntry:
    """A pending lane, or the reason it cannot run: not in the registry, no notebook, no such profile."""
    try:
        lane = lanes.get(name)
    except ParameterError:
        return SuiteEntry("lane", name, NOT_BUILT,
                          f"lane {name} is not built yet: no module in ucnb/lanes defines it")
    if not lane.notebook.exists():
        return SuiteEntry("lane", lane.name, NOT_BUILT,
                          f"lane {lane.name} has no notebook (notebooks/{lane.name}.ipynb)")
    if lane.unavailable(profile):
        return SuiteEntry("lane", lane.name, NOT_RUNNABLE, lane.unavailable(profile))
    return SuiteEntry("lane", lane.name)


def plan(name: str, profile: str | None = None, surface_path: Path | None = None,
         suites: dict[str, SuiteSpec] | None = None) -> SuitePlan:
    """Resolve a suite to its ordered entries (included suites expanded, lanes listed once)."""
    from ucnb import profiles

    suites = suites if suites is not None else load_suites()
    if name not in suites:
        raise ParameterError(f"unknown suite {name!r}; known suites: {', '.join(sorted(suites))}")
    chosen = profile or suites[name].profile
    profiles.load(chosen)  # an unknown profile is a parameter error
    entries: list[SuiteEntry] = []
    require_kvm = False

    def expand(suite_name: str, stack: tuple[str, ...]) -> None:
        nonlocal require_kvm
        if suite_name in stack:
            raise ParameterError(f"suite {suite_name!r} includes itself: {' -> '.join((*stack, suite_name))}")
        if suite_name not in suites:
            raise ParameterError(f"suite {stack[-1]!r} includes unknown suite {suite_name!r}")
        spec = suites[suite_name]
        require_kvm = require_kvm or spec.require_kvm
        for step in spec.steps:
            if step.guard:
                target = surface_path or paths.project_root() / (step.path or ".")
                entries.append(SuiteEntry("guard", step.guard,
                                          path=str(target) if step.guard == "surface" else None))
            elif step.suite:
                expand(step.suite, (*stack, suite_name))
            else:
                names = [step.lane] if step.lane else [
                    lane.name for lane in lanes.all_lanes().values() if lane.portable]
                for lane_name in names:
                    entry = lane_entry(str(lane_name), chosen)
                    if all(e.name != entry.name or e.kind != "lane" for e in entries):
                        entries.append(entry)

    expand(name, ())
    return SuitePlan(name, chosen, require_kvm, entries)


def product_plan_text(suite_plan: SuitePlan) -> str:
    """On ultracloud, what `--plan` adds to the table: each lane's product commands in the suite's
    order (as `ucnb run LANE --profile ultracloud --plan` prints them), then the contract's own
    command for the same suite, when it has one."""
    from ucnb.product import contract
    from ucnb.runner import execute as runner

    parts = []
    for entry in suite_plan.entries:
        if entry.kind == "guard":
            what = ("nix eval of every canonical attr the contract names, through the product layer"
                    if entry.name == "profiles" else f"a scan of {entry.path}")
            parts.append(f"# guard {entry.name} (in-process): {what}\n")
        elif entry.status != PENDING:
            parts.append(f"# lane {entry.name}: {entry.status}: {entry.reason}\n")
        else:
            _, params = runner.prepare(entry.name, suite_plan.profile, [], [])
            parts.append(contract.plan_text(entry.name, params.flake, params))
    if contract.has_suite(suite_plan.name):
        parts.append(f"# the contract's own command for suite {suite_plan.name} (the same lanes as one "
                     f"product run; ucnb runs them one by one as above, each into its own proof root):\n"
                     + contract.plan_text(suite_plan.name, ".", suite=True))
    return "\n".join(parts)


# -- running ---------------------------------------------------------------------------------
def host_accelerator() -> Any:
    """The accelerator lanes would get on this host (`ucnb.host.accel.choose` on the lab image)."""
    from ucnb import profiles
    from ucnb.host import daemons
    from ucnb.host.accel import choose
    from ucnb.image import build_image
    from ucnb.lab.registry import connect

    daemons.up()
    return choose(build_image(profiles.load("lab")), connect())


def require_kvm() -> Any:
    """The KVM accelerator, or InfrastructureError when guests would run under TCG."""
    accel = host_accelerator()
    if accel.mode != "kvm":
        raise InfrastructureError(f"this suite requires KVM, but guests would run under TCG here: "
                                  f"{accel.reason}")
    return accel


@dataclass(frozen=True)
class SuiteOutcome:
    exit_code: int
    verdict: str
    root: Path
    entries: list[SuiteEntry]
    junit: Path


def _guard_entry(entry: SuiteEntry, root: Path) -> None:
    """Run a guard in-process; its report goes to guards/<name>.txt, its checks to entry.rows."""
    from ucnb.guards import check_profiles, scan
    from ucnb.guards.profiles import FAILED as CHECK_FAILED
    from ucnb.guards.profiles import NOT_BUILT as CHECK_NOT_BUILT
    from ucnb.guards.profiles import NOT_EVALUATED, NOT_RUNNABLE, summary

    log = root / "guards" / f"{entry.name}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    if entry.name == "surface":
        target = Path(str(entry.path))
        if not target.exists():
            entry.status, entry.reason, entry.exit_code = FAILED, f"{target} does not exist", 2
            log.write_text(entry.reason + "\n")
            return
        findings = scan(target)
        lines = [f.format() for f in findings]
        entry.rows = [{"index": i, "name": f"{f.path}:{f.line} {f.rule}", "outcome": "failed",
                       "detail": f.format(), "start": now, "end": now, "kind": "finding"}
                      for i, f in enumerate(findings, start=1)]
        if not findings:
            entry.rows = [{"index": 1, "name": f"scan {target}", "outcome": "passed", "detail": "clean",
                           "start": now, "end": time.time(), "kind": "scan"}]
        entry.reason = f"{len(findings)} finding(s) in {target}" if findings else f"{target} is clean"
        log.write_text("\n".join([*lines, entry.reason]) + "\n")
        entry.status, entry.exit_code = (FAILED, 1) if findings else (PASSED, 0)
        return
    checks = check_profiles()
    outcomes = {CHECK_FAILED: "failed", NOT_EVALUATED: "skipped", CHECK_NOT_BUILT: "skipped",
                NOT_RUNNABLE: "skipped"}
    entry.rows = [{"index": i, "name": f"{c.profile} {c.lane}: {c.what}",
                   "outcome": outcomes.get(c.status, "passed"),
                   "detail": f"{c.status}: {c.detail}" if c.status in (CHECK_NOT_BUILT, NOT_RUNNABLE)
                   else c.detail,
                   "start": now, "end": now, "kind": "check"} for i, c in enumerate(checks, start=1)]
    entry.reason = summary(checks)
    log.write_text("".join(f"{c.status}\t{c.profile}\t{c.lane}\t{c.what}\t{c.detail}\n" for c in checks)
                   + entry.reason + "\n")
    failed = any(c.status == CHECK_FAILED for c in checks)
    entry.status, entry.exit_code = (FAILED, 1) if failed else (PASSED, 0)


def _lane_entry(entry: SuiteEntry, beside: Beside, root: Path, profile: str, console: Console,
                progress: bool, redactor: Redactor) -> None:
    """Run one lane through the runner, its proof root inside the suite root; its secrets join
    the suite's `redactor` (what the suite writes and prints is redacted of every lane's)."""
    from ucnb.runner import execute as runner

    try:
        outcome = runner.run_lane(entry.name, profile, progress=progress, console=console,
                                  parent=root / entry.name, beside=beside)
    except UcnbError as exc:  # refused before its notebook ran (parameters, host)
        entry.status, entry.exit_code, entry.reason = FAILED, exc.exit_code, f"{exc.kind}: {exc}"
        return
    redactor.update(outcome.redactor)
    result = outcome.result   # as sealed: redacted
    entry.proof_root = outcome.proof_root.relative_to(root).as_posix()
    entry.exit_code = outcome.exit_code
    entry.status = PASSED if outcome.exit_code == 0 and result["verdict"] == "passed" else FAILED
    entry.accelerator = result.get("accelerator")
    entry.rows = load_events(outcome.proof_root / evidence.EVENTS)["steps"]
    failing = result.get("failing_step")
    if entry.status == FAILED:
        entry.reason = (f"{failing['name']} [{failing['node']}]: {failing['last_observation']}" if failing
                        else (result.get("error") or {}).get("message", result["verdict"]))
    else:
        entry.reason = f"{result['steps']['passed']} steps passed, {result['steps']['skipped']} skipped"


def verdict_and_exit(entries: list[SuiteEntry], allow_incomplete: bool = False) -> tuple[str, int]:
    """passed (0); failed (the first failure's exit code, 130 if interrupted); incomplete when a
    named lane was not run (1, or 0 with `allow_incomplete`): a suite never passes on what it skipped."""
    failed = [e for e in entries if e.status == FAILED]
    if any(e.exit_code == Interrupted.exit_code for e in failed):
        return FAILED, Interrupted.exit_code
    if failed:
        return FAILED, failed[0].exit_code or LaneFailure.exit_code
    if any(not e.ran for e in entries):
        return "incomplete", 0 if allow_incomplete else LaneFailure.exit_code
    return PASSED, 0


def junit_suites(suite: str, entries: list[SuiteEntry]) -> list[junit.Suite]:
    """One JUnit testsuite per entry: a case for the entry itself, then one per recorded row."""
    out = []
    for e in entries:
        label = f"{e.kind}: {e.name}" if e.kind == "guard" else e.name
        classname = f"{suite}.{e.kind}.{e.name}"
        outcome = {PASSED: "passed", FAILED: "failed"}.get(e.status, "skipped")
        message = f"{e.status}: {e.reason}" if e.status in junit.NOT_RUN else e.reason
        cases = [junit.Case(e.name, classname, outcome, e.duration_s, message)]
        cases += junit.step_cases(classname, e.rows)
        system_out = f"proof root: {e.proof_root}" if e.proof_root else ""
        out.append(junit.Suite(label, cases, e.duration_s, e.started or "", system_out))
    return out


def _redact_own_files(root: Path, redactor: Redactor, junit_copy: Path | None) -> None:
    """The suite's own files (not its lanes' proof roots, sealed with their checksums already)."""
    for path in root.rglob("*"):
        lane_root = len(path.relative_to(root).parts) > 1 and path.relative_to(root).parts[0] != "guards"
        if path.is_file() and not lane_root:
            redactor.file(path)
    if junit_copy is not None and junit_copy.exists():
        redactor.file(junit_copy)


def print_summary(console: Console, name: str, entries: list[SuiteEntry], verdict: str) -> None:
    colours = {PASSED: "green", FAILED: "red"}
    table = Table(title=f"suite {name}: {verdict.upper()}")
    for column in ("step", "status", "time", "accel", "detail / evidence"):
        table.add_column(column, overflow="fold")
    for e in entries:
        label = f"guard {e.name}" if e.kind == "guard" else e.name
        status = f"[{colours.get(e.status, 'yellow')}]{e.status}[/]"
        detail = escape(e.reason) + (f"\n{escape(e.proof_root)}" if e.proof_root else "")
        table.add_row(escape(label), status, f"{e.duration_s:.1f}s" if e.ran else "—",
                      e.accelerator or "", detail)
    console.print(table)


def run(suite_plan: SuitePlan, console: Console | None = None, progress: bool = False,
        junit_file: Path | None = None, kvm: bool = False, allow_incomplete: bool = False,
        out: Console | None = None, jobs: Jobs | None = None) -> SuiteOutcome:
    """Run a planned suite: refuse early without KVM when required, then guards and lanes in
    order, up to `jobs` lanes side by side (default: one; see `ucnb.runner.parallel`).

    `console` gets the progress lines, `out` the summary table (default: stderr and stdout).
    """
    from ucnb.runner import parallel
    from ucnb.runner.execute import redacted_console

    jobs = jobs or parallel.Jobs(1, "one lane at a time")
    redactor = Redactor()   # every lane's secrets, as each lane ends
    console = redacted_console(console or Console(stderr=True), redactor)
    out = redacted_console(out or Console(), redactor)
    accel = require_kvm() if (kvm or suite_plan.require_kvm) else None
    suite_id = files.new_run_id()
    root = paths.outputs_root() / "suites" / suite_plan.name / f"{files.utc_stamp()}-{suite_id}"
    root.mkdir(parents=True)
    started = time.time()
    console.print(f"[bold]suite {suite_plan.name}[/] ({suite_plan.profile}) {suite_id} → {root}"
                  f" · {jobs.count} lane(s) at a time" + (f" · only {', '.join(suite_plan.only)}"
                                                          if suite_plan.only else ""))
    # Its lanes run under papermill (this process's environment is not a lane runner's).
    environment = {**evidence.host_environment(execution_model="papermill"),
                   "suite": suite_plan.name, "suite_id": suite_id,
                   "profile": suite_plan.profile, "require_kvm": str(kvm or suite_plan.require_kvm),
                   "suite_jobs": str(jobs.count), "suite_jobs_reason": jobs.reason,
                   "suite_only": ",".join(suite_plan.only) or "every step"}
    if accel is None and suite_plan.profile == "lab" and any(
            e.kind == "lane" and e.status == PENDING for e in suite_plan.entries):
        try:
            accel = host_accelerator()
        except InfrastructureError as exc:  # each lane will fail with this itself, and say so
            environment["vm_accelerator_reason"] = f"unknown: {exc}"
    if accel is not None:
        environment |= {"vm_accelerator_mode": accel.mode, "vm_accelerator_reason": accel.reason}
    evidence.write_environment(root, environment)
    entries = [SuiteEntry(**asdict(e)) for e in suite_plan.entries]
    interrupted = parallel.run_entries(
        entries, jobs, partial(_guard_entry, root=root),
        partial(_lane_entry, root=root, profile=suite_plan.profile, console=console, progress=progress,
                redactor=redactor),
        console, progress)
    verdict, exit_code = (FAILED, Interrupted.exit_code) if interrupted else \
        verdict_and_exit(entries, allow_incomplete)
    duration = time.time() - started
    junit_path = junit.write(root / "junit.xml", f"ucnb suite {suite_plan.name}",
                             junit_suites(suite_plan.name, entries), duration)
    if junit_file is not None:
        junit_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(junit_path, junit_file)
    summary = {"suite": suite_plan.name, "suite_id": suite_id, "profile": suite_plan.profile,
               "verdict": verdict, "exit_code": exit_code, "started": index.iso_utc(started),
               "duration_s": round(duration, 2), "accelerator": accel.mode if accel else None,
               "jobs": jobs.count, "only": list(suite_plan.only),
               "entries": [summary_entry(e) for e in entries]}
    (root / SUITE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _redact_own_files(root, redactor, junit_file)
    evidence.write_checksums(root)
    files.refresh_latest(root)
    index.append(index.IndexEntry(
        lane=suite_plan.name, profile=suite_plan.profile, run_id=suite_id, start=index.iso_utc(started),
        duration_s=round(duration, 2), verdict=verdict, accelerator=accel.mode if accel else None,
        proof_root=index.relative_to_outputs(root), kind="suite"))
    print_summary(out, suite_plan.name, entries, verdict)
    return SuiteOutcome(exit_code, verdict, root, entries, junit_file or junit_path)


def summary_entry(entry: SuiteEntry) -> dict[str, Any]:
    """An entry as suite.json keeps it: a lane's step rows stay in its proof root; a guard's
    checks (it has no proof root) are kept here, so a merge can rebuild its JUnit cases."""
    data = asdict(entry)
    if entry.kind == "lane":
        del data["rows"]
    return data


def evidence_files(root: Path) -> dict[str, list[str]]:
    """Per entry of a sealed suite root (suite.json), the files it left, relative to its proof root
    (a guard: its report under guards/): what a serial and a parallel run of a suite must share."""
    summary = json.loads((root / SUITE_FILE).read_text())
    out = {}
    for data in summary["entries"]:
        if data.get("proof_root"):
            lane_root = root / data["proof_root"]
            out[data["name"]] = sorted(p.relative_to(lane_root).as_posix() for p in lane_root.rglob("*")
                                       if p.is_file())
        elif data["kind"] == "guard":
            out[data["name"]] = [f"guards/{data['name']}.txt"] if (root / "guards" / f"{data['name']}.txt"
                                                                   ).exists() else []
    return out


def entry_from_summary(data: dict[str, Any], suite_root: Path) -> SuiteEntry:
    """An entry read back from a suite.json under `suite_root`: its proof root made absolute and a
    lane's rows read from it, as the run that wrote it had them."""
    entry = SuiteEntry(**{k: v for k, v in data.items() if k in SuiteEntry.__dataclass_fields__})
    if entry.proof_root:
        lane_root = suite_root / entry.proof_root
        entry.proof_root = str(lane_root)
        if entry.kind == "lane" and (lane_root / evidence.EVENTS).exists():
            entry.rows = load_events(lane_root / evidence.EVENTS)["steps"]
    return entry
