"""`ucnb report`: one static, self-contained HTML page of every indexed run.

Runs (and suites) come from the evidence index; each row links the run's own HTML. A failed run
is compared with the last good run of the same lane (same profile when there is one): parameters,
environment.txt, step durations from timeline.csv, and serial markers from markers.csv. The page
has inline CSS only: no scripts, no remote resources, so it can be attached to a release or CI run.
"""

from __future__ import annotations

import csv
import html
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ucnb import paths
from ucnb.errors import InfrastructureError
from ucnb.evidence import index
from ucnb.evidence import proof as evidence

# Always differ between two runs, and say nothing about why one failed.
ENVIRONMENT_NOISE = frozenset({"run_id"})


@dataclass(frozen=True)
class Change:
    """One key whose value differs between the good and the failed run (None: absent)."""

    key: str
    good: str | None
    failed: str | None


@dataclass(frozen=True)
class StepDelta:
    """One step (by name, node and occurrence) in both runs: durations and outcomes."""

    step: str
    node: str
    good_s: float | None
    failed_s: float | None
    good_outcome: str | None
    failed_outcome: str | None

    @property
    def delta_s(self) -> float | None:
        if self.good_s is None or self.failed_s is None:
            return None
        return self.failed_s - self.good_s

    @property
    def changed(self) -> bool:
        return self.good_outcome != self.failed_outcome


@dataclass
class RunDiff:
    """What differs between the last good run and a failed run of one lane."""

    parameters: list[Change] = field(default_factory=list)
    environment: list[Change] = field(default_factory=list)
    steps: list[StepDelta] = field(default_factory=list)
    markers: list[StepDelta] = field(default_factory=list)


# -- reading proof roots ---------------------------------------------------------------------
def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_parameters(root: Path) -> dict[str, str]:
    """parameters.yaml, values rendered as YAML flow text (so lists compare as they read)."""
    path = root / "parameters.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    if not isinstance(data, dict):
        return {}
    return {str(k): yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...")
            for k, v in data.items()}


def step_durations(root: Path) -> dict[tuple[str, str, int], tuple[float | None, str]]:
    """(name, node, occurrence) -> (duration in s, outcome), from timeline.csv."""
    steps: dict[tuple[str, str, int], tuple[float | None, str]] = {}
    seen: Counter[tuple[str, str]] = Counter()
    for row in _read_csv(root / evidence.CSV_NAMES["steps"]):
        key = (row["name"], row.get("node", ""))
        seen[key] += 1
        start, end = row.get("start"), row.get("end")
        duration = float(end) - float(start) if start and end else None
        steps[(*key, seen[key])] = (duration, row.get("outcome", ""))
    return steps


def marker_times(root: Path) -> dict[tuple[str, str], float]:
    """(node, marker) -> seconds since boot, from markers.csv (first sighting)."""
    found: dict[tuple[str, str], float] = {}
    for row in _read_csv(root / evidence.CSV_NAMES["markers"]):
        found.setdefault((row["node"], row["marker"]), float(row["since_boot"]))
    return found


# -- comparing -------------------------------------------------------------------------------
def diff_mappings(good: dict[str, str], failed: dict[str, str], ignore: frozenset[str] = frozenset()
                  ) -> list[Change]:
    """Keys whose values differ (or exist on one side only), in the failed run's order."""
    keys = list(failed) + [k for k in good if k not in failed]
    return [Change(k, good.get(k), failed.get(k)) for k in keys
            if k not in ignore and good.get(k) != failed.get(k)]


def diff_runs(good: Path, failed: Path) -> RunDiff:
    """Compare two proof roots of one lane (good first)."""
    good_steps, failed_steps = step_durations(good), step_durations(failed)
    step_keys = list(failed_steps) + [k for k in good_steps if k not in failed_steps]
    good_markers, failed_markers = marker_times(good), marker_times(failed)
    marker_keys = list(good_markers) + [k for k in failed_markers if k not in good_markers]
    return RunDiff(
        parameters=diff_mappings(read_parameters(good), read_parameters(failed)),
        environment=diff_mappings(evidence.read_environment(good), evidence.read_environment(failed),
                                  ENVIRONMENT_NOISE),
        steps=[StepDelta(name + (f" (#{n})" if n > 1 else ""), node,
                         *(_pair(good_steps.get((name, node, n)), failed_steps.get((name, node, n)))))
               for name, node, n in step_keys],
        markers=[StepDelta(marker, node, good_markers.get((node, marker)), failed_markers.get((node, marker)),
                           "seen" if (node, marker) in good_markers else None,
                           "seen" if (node, marker) in failed_markers else None)
                 for node, marker in marker_keys],
    )


def _pair(good: tuple[float | None, str] | None, failed: tuple[float | None, str] | None
          ) -> tuple[float | None, float | None, str | None, str | None]:
    return (good[0] if good else None, failed[0] if failed else None,
            good[1] if good else None, failed[1] if failed else None)


def last_good(entries: list[index.IndexEntry], failed: index.IndexEntry) -> index.IndexEntry | None:
    """The newest passed run of the same lane started before `failed` (same profile preferred)."""
    earlier = [e for e in entries if e.kind == "lane" and e.lane == failed.lane and e.verdict == "passed"
               and e.start <= failed.start and e.run_id != failed.run_id]
    same_profile = [e for e in earlier if e.profile == failed.profile]
    candidates = same_profile or earlier
    return max(candidates, key=lambda e: e.start) if candidates else None


# -- rendering -------------------------------------------------------------------------------
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 24px; color: #1b1f24; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 15px; margin: 18px 0 6px; } p.meta { color: #57606a; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-weight: 600; padding: 1px 8px; border-radius: 10px; }
.passed { background: #dafbe1; color: #116329; } .failed { background: #ffebe9; color: #a40e26; }
.incomplete { background: #fff8c5; color: #7d4e00; }
tr.changed td { background: #fff8c5; } code { font-size: 12px; }
section.diff { border-left: 4px solid #cf222e; padding-left: 14px; margin: 18px 0; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _link(entry: index.IndexEntry, outputs: Path, base: Path, label: str) -> str:
    """A relative link to the run's HTML (else its folder) from the report's directory."""
    root = entry.path(outputs)
    target = root / f"{entry.lane}.html" if entry.kind == "lane" else root / "junit.xml"
    if not target.exists():
        target = root
    return f'<a href="{_e(Path(os.path.relpath(target, base)).as_posix())}">{_e(label)}</a>'


def _verdict(verdict: str) -> str:
    return f'<span class="verdict {_e(verdict)}">{_e(verdict)}</span>'


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(f'<tr class="{(classes or [""] * len(rows))[i]}">{"".join(r)}</tr>'
                   for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, num: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if num else f"<td>{_e(value)}</td>"


def _changes_table(title: str, changes: list[Change]) -> str:
    if not changes:
        return f"<h3>{_e(title)}</h3><p>identical</p>"
    rows = [[f"<td><code>{_e(c.key)}</code></td>", _td(c.good if c.good is not None else "(absent)"),
             _td(c.failed if c.failed is not None else "(absent)")] for c in changes]
    return f"<h3>{_e(title)}</h3>" + _table(["key", "last good", "failed"], rows)


def _delta_table(title: str, deltas: list[StepDelta], what: str) -> str:
    if not deltas:
        return f"<h3>{_e(title)}</h3><p>none recorded</p>"
    rows = [[_td(d.step), _td(d.node), _td(_seconds(d.good_s), True), _td(_seconds(d.failed_s), True),
             _td("—" if d.delta_s is None else f"{d.delta_s:+.2f}", True),
             _td(d.good_outcome or "(absent)"), _td(d.failed_outcome or "(absent)")] for d in deltas]
    headers = [what, "node", "good (s)", "failed (s)", "Δ (s)", "good", "failed"]
    return f"<h3>{_e(title)}</h3>" + _table(headers, rows, ["changed" if d.changed else "" for d in deltas])


def _diff_section(entry: index.IndexEntry, entries: list[index.IndexEntry], outputs: Path,
                  base: Path) -> str:
    head = (f'<section class="diff" id="diff-{_e(entry.run_id)}"><h2>{_e(entry.lane)} '
            f'({_e(entry.profile)}) {_e(entry.start)}: {_verdict(entry.verdict)}</h2>'
            f"<p>failed run: {_link(entry, outputs, base, entry.run_id)}")
    good = last_good(entries, entry)
    if good is None:
        return head + " — no earlier passing run of this lane to compare with.</p></section>"
    diff = diff_runs(good.path(outputs), entry.path(outputs))
    return (head + f"; compared with the last good run {_link(good, outputs, base, good.run_id)} "
            f"({_e(good.start)}, {_e(good.profile)})</p>"
            + _changes_table("Parameters", diff.parameters)
            + _changes_table("Environment (environment.txt)", diff.environment)
            + _delta_table("Step durations (timeline.csv)", diff.steps, "step")
            + _delta_table("Serial markers, seconds since boot (markers.csv)", diff.markers, "marker")
            + "</section>")


@dataclass(frozen=True)
class SuiteView:
    """A suite's verdict over every source (`ucnb.runner.merge`), shown first on the page."""

    name: str
    verdict: str
    rows: list[tuple[str, str, str, str, Path | None]]   # step, status, time, detail, proof root


def _suite_section(view: SuiteView, base: Path) -> str:
    rows = [[_td(step), f"<td>{_verdict(status)}</td>", _td(took, True), _td(detail),
             f'<td><a href="{_e(Path(os.path.relpath(root, base)).as_posix())}">{_e(root.name)}</a></td>'
             if root else _td("")] for step, status, took, detail, root in view.rows]
    return (f"<h2>Suite {_e(view.name)}: {_verdict(view.verdict)}</h2>"
            + _table(["step", "status", "time (s)", "detail", "evidence"], rows))


def render(entries: list[index.IndexEntry], outputs: Path, base: Path, sources: list[Path] | None = None,
           suite: SuiteView | None = None) -> str:
    """The report page; links are relative to `base`, the directory the page is written to.
    `sources`: the index files it was made from (default: the outputs root's)."""
    runs = sorted((e for e in entries if e.kind == "lane"), key=lambda e: e.start, reverse=True)
    suites = sorted((e for e in entries if e.kind == "suite"), key=lambda e: e.start, reverse=True)
    counts = Counter(e.verdict for e in runs)
    run_rows = [[_td(e.start), _td(e.lane), _td(e.profile), _td(f"{e.duration_s:.1f}", True),
                 f"<td>{_verdict(e.verdict)}"
                 + (f' <a href="#diff-{_e(e.run_id)}">diff</a>' if e.verdict != "passed" else "") + "</td>",
                 _td(e.accelerator or "—"), _td(e.suite or ""),
                 f"<td>{_link(e, outputs, base, e.run_id)}</td>"] for e in runs]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>ucnb evidence report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>ucnb evidence report</h1>",
        f"<p class=\"meta\">{len(runs)} runs ({counts['passed']} passed, {counts['failed']} failed"
        f"{', ' + str(counts['incomplete']) + ' incomplete' if counts['incomplete'] else ''}), "
        f"{len(suites)} suite runs; generated {_e(index.iso_utc(time.time()))} from "
        + ", ".join(f"<code>{_e(s)}</code>" for s in sources or [index.index_path(outputs)]) + "</p>",
        _suite_section(suite, base) if suite else "",
        "<h2>Runs</h2>",
        _table(["start (UTC)", "lane", "profile", "duration (s)", "verdict", "accelerator", "suite",
                "evidence"], run_rows) if runs else "<p>no runs indexed yet</p>",
    ]
    if suites:
        parts += ["<h2>Suites</h2>", _table(
            ["start (UTC)", "suite", "profile", "duration (s)", "verdict", "accelerator", "evidence"],
            [[_td(e.start), _td(e.lane), _td(e.profile), _td(f"{e.duration_s:.1f}", True),
              f"<td>{_verdict(e.verdict)}</td>", _td(e.accelerator or "—"),
              f"<td>{_link(e, outputs, base, e.run_id)}</td>"] for e in suites])]
    failed = [e for e in runs if e.verdict != "passed"]
    if failed:
        parts.append("<h2>Failed runs against the last good run</h2>")
        parts += [_diff_section(e, entries, outputs, base) for e in failed]
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(output: Path | None = None, outputs: Path | None = None,
                 sources: list[Path] | None = None, suite: SuiteView | None = None) -> Path:
    """Render the index of `outputs` (default: the outputs root), or of several `sources` (outputs
    folders or index files, `index.load_sources`), to `output` (default: `outputs`/report.html)."""
    outputs = outputs or paths.outputs_root()
    output = (output or outputs / "report.html").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    entries = index.load_sources(sources) if sources else index.load(outputs)
    files = [index.index_file(s).resolve() for s in sources] if sources else None
    output.write_text(render(entries, outputs, output.parent, files, suite))
    return output


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 900, timeout_s: float = 120) -> Path:
    """A PNG of a local HTML page rendered by headless Chromium (Debian's `chromium`), offline."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise InfrastructureError("chromium is not installed (`apt-get install chromium`, or `make setup`)")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ucnb-chromium-") as profile:
        done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               f"--screenshot={png}", f"--window-size={width},{height}",
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not png.exists():
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise InfrastructureError(f"chromium wrote no screenshot of {page}: {tail}")
    return png
