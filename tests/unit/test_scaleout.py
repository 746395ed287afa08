"""Scale-out without VMs: the --jobs default, the scheduler (suite order kept, guards as barriers,
lanes overlapping up to N, signals reaching every lane), --only and --matrix, and merging the
outputs folders of separate runs into one report, one JUnit and one verdict. (Real lanes side by
side and a real fan-out: tests/e2e/test_scaleout.py.)"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from junitparser import JUnitXml, Skipped
from rich.console import Console

from ucnb import files
from ucnb.errors import ParameterError
from ucnb.evidence import index
from ucnb.evidence import proof as evidence
from ucnb.runner import merge, parallel, suites
from ucnb.runner.execute import Beside

from ..conftest import Cli

QUICKSTART = "single-node-quickstart"


def _suites(tmp_path: Path, steps: list[dict[str, object]]) -> dict[str, suites.SuiteSpec]:
    path = tmp_path / "suites.yaml"
    path.write_text(yaml.safe_dump({"schema": "ucnb.suites/v1",
                                    "suites": {"s": {"description": "d", "steps": steps}}}))
    return suites.load_suites(path)


# -- how many lanes ------------------------------------------------------------------------------
@pytest.mark.parametrize("cores, available_mib, expected", [
    (2, 22_000, 2),        # this host: cores bound it
    (64, 8_000, 3),        # a big host short of memory: memory bounds it
    (1, 100_000, 1), (8, 1_000, 1),   # never below one
])
def test_default_jobs_is_the_lesser_of_cores_and_memory(cores: int, available_mib: int,
                                                        expected: int) -> None:
    jobs = parallel.default_jobs(cores, available_mib)
    assert jobs.count == expected
    assert f"{cores} cores" in jobs.reason and f"{parallel.LANE_MEMORY_MIB / 1024:.1f} GiB" in jobs.reason


def test_default_jobs_reads_this_host() -> None:
    cores, available = parallel.host_capacity()
    assert cores >= 1 and available > 0
    assert 1 <= parallel.default_jobs().count <= cores


# -- the scheduler ---------------------------------------------------------------------------
class FakeLanes:
    """Lane and guard callables that record when each ran (the scheduler's view of a lane)."""

    def __init__(self, hold_s: float = 0.3) -> None:
        self.hold_s = hold_s
        self.spans: dict[str, tuple[float, float]] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self.threads: dict[str, str] = {}

    def guard(self, entry: suites.SuiteEntry) -> None:
        start = time.monotonic()
        entry.status = suites.PASSED
        self.spans[entry.name] = (start, time.monotonic())
        self.threads[entry.name] = threading.current_thread().name

    def lane(self, entry: suites.SuiteEntry, beside: Beside) -> None:
        start = time.monotonic()
        hold = self.hold_s * (2 if entry.name == "slow" else 1)
        while time.monotonic() - start < hold and not beside.interruption.requested:
            time.sleep(0.02)
        interrupted = beside.interruption.requested
        entry.status = suites.FAILED if interrupted else suites.PASSED
        entry.exit_code = 130 if interrupted else 0
        self.environments[entry.name] = beside.environment()
        self.spans[entry.name] = (start, time.monotonic())
        self.threads[entry.name] = threading.current_thread().name

    def overlap(self, a: str, b: str) -> bool:
        (s1, e1), (s2, e2) = self.spans[a], self.spans[b]
        return s1 < e2 and s2 < e1


def _entries(*names: str) -> list[suites.SuiteEntry]:
    return [suites.SuiteEntry("guard" if n.startswith("guard") else "lane", n) for n in names]


QUIET = Console(file=io.StringIO())


def _run(entries: list[suites.SuiteEntry], jobs: int, fake: FakeLanes) -> bool:
    return parallel.run_entries(entries, parallel.Jobs(jobs, "test"), fake.guard, fake.lane, QUIET,
                                progress=False)


def test_lanes_overlap_up_to_jobs_guards_are_barriers_and_the_order_is_the_suites() -> None:
    fake = FakeLanes()
    entries = _entries("guard-a", "slow", "b", "c", "guard-z", "d")
    entries.insert(3, suites.SuiteEntry("lane", "not-here", suites.NOT_BUILT, "not built yet"))
    assert _run(entries, 2, fake) is False
    assert [e.name for e in entries] == ["guard-a", "slow", "b", "not-here", "c", "guard-z", "d"]
    assert [e.status for e in entries] == ["passed"] * 3 + ["not-built"] + ["passed"] * 3
    assert "not-here" not in fake.spans, "an entry that cannot run is never run"
    assert fake.overlap("slow", "b") and fake.overlap("slow", "c"), "two at a time: c takes b's slot"
    assert not fake.overlap("b", "c")
    assert fake.spans["guard-a"][1] <= fake.spans["slow"][0]
    assert fake.spans["guard-z"][0] >= max(fake.spans[n][1] for n in ("slow", "b", "c")), "a barrier"
    assert fake.spans["d"][0] >= fake.spans["guard-z"][1]
    assert fake.threads["guard-a"] == threading.main_thread().name
    assert fake.environments["slow"]["suite_ran_alongside"] == "b, c"
    assert fake.environments["d"] == {"suite_jobs": "2", "suite_jobs_reason": "test",
                                      "suite_ran_alongside": "none"}
    assert all(e.started and e.duration_s > 0 for e in entries if e.ran and e.kind == "lane")


def test_one_job_runs_one_lane_at_a_time() -> None:
    fake = FakeLanes(hold_s=0.1)
    entries = _entries("a", "b", "c")
    _run(entries, 1, fake)
    assert not any(fake.overlap(x, y) for x, y in (("a", "b"), ("b", "c"), ("a", "c")))
    assert fake.environments["b"]["suite_ran_alongside"] == "none"


def test_a_signal_reaches_every_running_lane_and_no_further_step_starts() -> None:
    fake = FakeLanes(hold_s=30)
    entries = _entries("a", "b", "c", "guard-z")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        assert _run(entries, 2, fake) is True
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10, "the lanes were interrupted, not waited out"
    assert [(e.status, e.exit_code) for e in entries[:2]] == [("failed", 130)] * 2
    assert [e.status for e in entries[2:]] == [suites.NOT_RUN] * 2
    assert entries[2].reason == "the suite was interrupted before this step"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers restored"


def test_a_lane_interrupted_from_elsewhere_also_stops_the_suite() -> None:
    fake = FakeLanes(hold_s=0.05)

    def kernel_interrupted(entry: suites.SuiteEntry, beside: Beside) -> None:
        fake.lane(entry, beside)
        if entry.name == "a":   # its kernel got a SIGINT no one sent the suite
            entry.status, entry.exit_code = suites.FAILED, 130

    entries = _entries("a", "b")
    assert parallel.run_entries(entries, parallel.Jobs(1, "t"), fake.guard, kernel_interrupted, QUIET,
                                progress=False) is False
    assert entries[1].status == suites.NOT_RUN and "b" not in fake.spans
    assert suites.verdict_and_exit(entries) == ("failed", 130)


def test_a_lanes_exception_is_raised_after_the_others_end() -> None:
    fake = FakeLanes(hold_s=0.2)

    def broken(entry: suites.SuiteEntry, beside: Beside) -> None:
        if entry.name == "a":
            raise RuntimeError("a harness bug")
        fake.lane(entry, beside)

    entries = _entries("a", "b")
    with pytest.raises(RuntimeError, match="a harness bug"):
        parallel.run_entries(entries, parallel.Jobs(2, "t"), fake.guard, broken, QUIET, progress=False)
    assert entries[1].status == suites.PASSED


# -- a CI matrix's share ----------------------------------------------------------------------------
def test_only_selects_steps_in_the_suites_order_and_refuses_unknown_names() -> None:
    plan = suites.plan("portable")
    picked = suites.select(plan, ["single-node-quickstart,profiles"])
    assert [e.name for e in picked.entries] == ["profiles", "single-node-quickstart"]
    assert picked.only == ("profiles", "single-node-quickstart")
    assert suites.select(plan, []) is plan
    with pytest.raises(ParameterError, match=r"--only nope: not a step of suite 'portable' \(its steps: "
                                             r"profiles, surface, single-node-quickstart"):
        suites.select(plan, ["nope"])


def test_matrix_has_a_guards_job_and_one_job_per_runnable_lane(tmp_path: Path, cli: Cli) -> None:
    steps: list[dict[str, object]] = [{"guard": "surface", "path": "ucnb"}, {"lane": QUICKSTART},
                                      {"lane": "not-built-yet"}, {"guard": "profiles"}]
    plan = suites.plan("s", suites=_suites(tmp_path, steps))
    assert suites.matrix(plan) == {"include": [{"id": "guards", "only": "surface,profiles"},
                                               {"id": QUICKSTART, "only": QUICKSTART}]}
    shown = cli.invoke("suite", "portable", "--matrix")
    assert shown.exit_code == 0, shown.output
    jobs = json.loads(shown.output)["include"]
    assert [j["id"] for j in jobs] == ["guards", *(e.name for e in suites.plan("portable").entries
                                                   if e.kind == "lane")]
    for job in jobs:   # each job's share is a valid selection
        assert suites.select(suites.plan("portable"), [job["only"]]).entries


def test_bad_jobs_is_refused_before_anything_runs(cli: Cli, outputs: Path) -> None:
    done = cli.invoke("suite", "portable", "--jobs", "0")
    assert done.exit_code == 2 and "--jobs" in done.output
    assert not outputs.exists()


# -- merging separate runs ------------------------------------------------------------------------
def _lane_run(outputs: Path, suite_root: Path, lane: str, verdict: str, start: str) -> dict[str, object]:
    """A lane's proof root inside a suite root, as the runner leaves it (events, result, HTML, its
    index line), and the suite.json entry for it."""
    run_id = files.new_run_id()
    root = suite_root / lane / f"{files.utc_stamp()}-{run_id}"
    root.mkdir(parents=True)
    rows = [{"index": 1, "name": "boot", "node": "node01", "start": 1.0, "end": 4.0, "outcome": "passed",
             "detail": "", "kind": "step"},
            {"index": 2, "name": "health: iam", "node": "node01", "start": 4.0, "end": 4.0,
             "outcome": "skipped", "detail": "no stand-in", "kind": "step"}]
    (root / evidence.EVENTS).write_text("".join(json.dumps({"table": "steps", "row": r}) + "\n"
                                                for r in rows))
    (root / f"{lane}.html").write_text("<html></html>")
    index.append(index.IndexEntry(lane, "lab", run_id, start, 4.0, verdict, "tcg",
                                  index.relative_to_outputs(root, outputs),
                                  suite=f"portable/{suite_root.name}"), outputs)
    return {"kind": "lane", "name": lane, "status": verdict, "reason": "1 steps passed", "duration_s": 4.0,
            "exit_code": 0 if verdict == "passed" else 1, "accelerator": "tcg", "started": start,
            "proof_root": root.relative_to(suite_root).as_posix()}


def _guard(name: str) -> dict[str, object]:
    """A guard's suite.json entry, its check rows with it."""
    return {"kind": "guard", "name": name, "status": "passed", "reason": "clean", "duration_s": 0.1,
            "rows": [{"index": 1, "name": f"{name} check", "outcome": "passed", "detail": "", "start": 1.0,
                      "end": 1.0, "kind": "check"}]}


def _suite_run(outputs: Path, start: str, lanes: dict[str, str], guards: tuple[str, ...] = ()) -> Path:
    """A suite run of `portable` that ran only `lanes` (name -> verdict) and `guards`, as --only
    leaves it."""
    root = outputs / "suites" / "portable" / f"{files.utc_stamp()}-{files.new_run_id()}"
    root.mkdir(parents=True)
    entries = [_guard(g) for g in guards] + [_lane_run(outputs, root, lane, verdict, start)
                                             for lane, verdict in lanes.items()]
    verdict = "passed" if all(v == "passed" for v in lanes.values()) else "failed"
    (root / "suite.json").write_text(json.dumps({"suite": "portable", "verdict": verdict,
                                                 "only": list(lanes), "entries": entries}))
    index.append(index.IndexEntry("portable", "lab", root.name.rsplit("-", 1)[1], start, 5.0, verdict, "tcg",
                                  index.relative_to_outputs(root, outputs), kind="suite"), outputs)
    return root


def test_two_outputs_folders_merge_into_one_report_junit_and_verdict(tmp_path: Path, cli: Cli) -> None:
    guards, lanes_a, lanes_b = tmp_path / "job-guards", tmp_path / "job-a", tmp_path / "job-b"
    ran = cli("suite", "portable", "--only", "surface", "--no-progress", timeout=120,
              UCNB_OUTPUTS=str(guards))
    assert ran.returncode == 0, ran.stderr   # a real run of one step: the guard
    _suite_run(lanes_a, "2026-12-01T10:00:00Z", {"single-node-quickstart": "passed"})
    _suite_run(lanes_b, "2026-12-01T10:00:05Z", {"deployer-vm-smoke": "passed"})
    page, xml = tmp_path / "site" / "report.html", tmp_path / "site" / "junit.xml"
    sources = [str(guards), str(lanes_a), str(index.index_path(lanes_b))]   # folders or index files
    done = cli.invoke("report", *sources, "--suite", "portable", "--junit", str(xml), "--output", str(page))
    assert done.exit_code == 1, done.output   # the profiles guard ran nowhere
    assert "suite portable: INCOMPLETE" in done.output
    by_name = {s.name: s for s in JUnitXml.fromfile(str(xml))}
    assert list(by_name) == ["guard: profiles", "guard: surface", "single-node-quickstart",
                             "deployer-vm-smoke"], "the suite's order"
    (profiles,) = [c for c in by_name["guard: profiles"]]
    assert isinstance(profiles.result[0], Skipped)
    assert profiles.result[0].message == "not-run: no merged run ran this step"
    surface = list(by_name["guard: surface"])
    assert len(surface) == 2 and all(c.is_passed for c in surface), "the guard's own check came along"
    quickstart = list(by_name["single-node-quickstart"])
    assert [c.is_passed for c in quickstart[:2]] == [True, True]
    assert isinstance(quickstart[2].result[0], Skipped)
    assert "<system-out>proof root: ../job-b/suites/portable/" in xml.read_text(), "relative to the JUnit"
    html = page.read_text()
    assert "<h2>Suite portable: " in html and html.count("single-node-quickstart.html") == 1
    assert 'href="../job-a/suites/portable/' in html and str(lanes_b / "index.jsonl") in html
    # The missing step from a third job: the same merge passes.
    _suite_run(tmp_path / "job-profiles", "2026-12-01T10:00:09Z", {}, guards=("profiles",))
    done = cli.invoke("report", *sources, str(tmp_path / "job-profiles"), "--suite", "portable",
                      "--junit", str(xml), "--output", str(page))
    assert done.exit_code == 0 and "suite portable: PASSED" in done.output, done.output
    assert JUnitXml.fromfile(str(xml)).failures == 0


def test_the_newest_run_of_a_step_wins_and_a_failure_fails_the_merge(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _suite_run(old, "2026-12-01T09:00:00Z", {QUICKSTART: "passed", "deployer-vm-smoke": "passed"})
    _suite_run(new, "2026-12-01T10:00:00Z", {"deployer-vm-smoke": "failed"})
    plan = suites.select(suites.plan("portable"), ["single-node-quickstart,deployer-vm-smoke"])
    merged = merge.merge(plan, index.load_sources([new, old]))
    assert [(e.name, e.status) for e in merged.entries] == [("single-node-quickstart", "passed"),
                                                            ("deployer-vm-smoke", "failed")]
    assert (merged.verdict, merged.exit_code) == ("failed", 1)
    assert Path(str(merged.entries[1].proof_root)).is_relative_to(new)
    assert merged.entries[0].rows[0]["name"] == "boot", "a lane's rows come from its proof root"


def test_a_source_that_is_not_an_outputs_folder_is_refused(tmp_path: Path, cli: Cli) -> None:
    done = cli.invoke("report", str(tmp_path / "nowhere"), "--suite", "portable")
    assert done.exit_code == 2
    assert "neither an outputs folder with index.jsonl nor an index file" in done.output
    assert cli.invoke("report", "--junit", str(tmp_path / "j.xml")).exit_code == 2


def test_lanes_side_by_side_print_prefixed_steps_and_heartbeats_not_a_live_display(tmp_path: Path) -> None:
    from ucnb.runner.progress import Board, LaneProgress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    events = tmp_path / "events.jsonl"
    rows = [{"index": 1, "name": "boot", "node": "node01", "start": 1.0, "end": None, "outcome": "running",
             "detail": "", "kind": "step"}]
    events.write_text(json.dumps({"table": "steps", "row": rows[0]}) + "\n")
    with Board(heartbeat_s=0.1) as board, LaneProgress(events, console, "lane-a", board):
        time.sleep(0.5)
        with events.open("a") as f:
            done = {**rows[0], "end": 4.0, "outcome": "passed"}
            f.write(json.dumps({"table": "steps", "row": done}) + "\n")
        time.sleep(0.4)
    text = out.getvalue()
    assert "… lane-a " in text and "· boot [node01]" in text, text
    assert "✓ lane-a: boot [node01] 3.0s" in text, text
    assert "\x1b[" not in text, "no cursor movement: plain lines"
