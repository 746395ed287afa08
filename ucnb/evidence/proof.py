"""The proof root: a dated folder per run holding everything a reviewer needs to trust it.

    outputs/<lane>/<UTC stamp>-<run id>/
      <lane>.ipynb <lane>.html result.json parameters.yaml environment.txt events.jsonl
      markers.csv timeline.csv faults.csv checks.csv figures.csv coverage.csv junit.xml
      plots/ logs/ SHA256SUMS
    outputs/<lane>/latest -> <UTC stamp>-<run id>

Every file is world-readable once sealed (a non-root uploader must read the serial consoles too);
redaction has removed every secret before that.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import stat
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ucnb import __version__, paths
from ucnb.evidence import junit
from ucnb.evidence.redact import Redactor
from ucnb.files import read_kv, refresh_latest, update_kv, utc_stamp
from ucnb.kernel.record import field_names, load_events

CSV_NAMES = {"steps": "timeline.csv", "markers": "markers.csv", "checks": "checks.csv",
             "faults": "faults.csv", "figures": "figures.csv", "coverage": "coverage.csv"}
EVENTS = "events.jsonl"
ERROR_FILE = "error.json"  # the error a cell ended with, by class (written by the kernel's Run)
JUNIT = "junit.xml"
TIMELINE_PNG = "plots/timeline.png"


def new_proof_root(lane: str, run_id: str, parent: Path | None = None) -> Path:
    """`<parent>/<stamp>-<run id>` with logs/ and plots/; parent defaults to `outputs/<lane>`."""
    root = (parent or paths.outputs_root() / lane) / f"{utc_stamp()}-{run_id}"
    for sub in ("logs", "plots"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def harness_revision(root: Path | None = None) -> dict[str, str]:
    """The harness's own commit and whether its checkout differs from it (`clean`, or how many
    files are modified or untracked), from git; `unknown` outside a git checkout."""
    root = root or paths.project_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip()
    if not commit:
        return {"harness_commit": "unknown (not a git checkout)", "harness_dirty": "unknown"}
    changed = [line for line in (git("status", "--porcelain") or "").splitlines() if line.strip()]
    return {"harness_commit": commit,
            "harness_dirty": (f"dirty: {len(changed)} file{'s' if len(changed) > 1 else ''} modified or "
                              f"untracked" if changed else "clean")}


def host_environment(execution_model: str) -> dict[str, str]:
    """What a reviewer needs to trust the host side of a run (`execution_model`: who runs the
    notebook: "papermill" under `ucnb run`, "notebook-kernel" for a kernel on its own)."""
    from concurrent.futures import ThreadPoolExecutor

    from ucnb.overrides import resolve

    with ThreadPoolExecutor(max_workers=3) as pool:   # four commands: wait for them side by side
        revision = pool.submit(harness_revision)
        qemu = pool.submit(_version, ["qemu-system-x86_64", "--version"])
        libvirt = pool.submit(_version, ["libvirtd", "--version"])
    env = {
        "ucnb_version": __version__,
        **revision.result(),
        "host": platform.node(),
        "host_kernel": platform.release(),
        "host_cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "qemu": qemu.result(),
        "libvirt": libvirt.result(),
        "papermill": metadata.version("papermill"),
        "execution_model": execution_model,
    }
    for line in resolve().environment_lines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def write_environment(root: Path, values: dict[str, str]) -> None:
    """Merge key=value lines into environment.txt (later values win)."""
    update_kv(root / "environment.txt", dict(values))


def read_environment(root: Path) -> dict[str, str]:
    return read_kv(root / "environment.txt")


def write_tables(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The CSV views of the run's rows (rebuilt from events.jsonl, so a crashed run has them too)."""
    tables = load_events(root / EVENTS)
    for name, filename in CSV_NAMES.items():
        with (root / filename).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=field_names(name), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(tables[name])
    return tables


def _utc(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _coverage(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per subject ("required components"): the total and each item by status."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        c = out.setdefault(row["what"], {"total": 0, "exercised": [], "skipped": [], "failed": [],
                                         "not_reached": [], "steps": []})
        c["total"] += 1
        status = row["status"].replace(" ", "_")
        if status == "skipped":
            c["skipped"].append({"item": row["item"], "reason": row.get("reason", ""),
                                 "step": row.get("step", "")})
        else:
            c[status].append(row["item"])
        if row.get("step"):
            c["steps"].append(row["step"])
    return out


def build_result(root: Path, lane: str, profile: str, run_id: str,
                 error: dict[str, str] | None = None, exit_code: int | None = None) -> dict[str, Any]:
    """result.json (and junit.xml): the verdict, the counts, what was covered and what was not,
    the failing step and its last observation, the headline figures, and when, how long and
    with which harness commit the run ran."""
    tables = write_tables(root)
    # Steps proper: waits are inside them; a delegated step is one the product's commands covered.
    steps = [s for s in tables["steps"] if s.get("kind") in ("step", "delegated")]
    counts = {o: sum(1 for s in steps if s["outcome"] == o) for o in ("passed", "failed", "skipped",
                                                                       "running", "interrupted")}
    failed_checks = [c for c in tables["checks"] if not c["ok"]]
    failing = _failing_step(tables["steps"])
    if error or counts["failed"] or failed_checks:
        verdict = "failed"
    elif not steps:
        verdict = "incomplete"
    else:
        verdict = "passed"
    env = read_environment(root)
    starts = [s["start"] for s in tables["steps"]]
    ends = [s["end"] for s in tables["steps"] if s.get("end")]
    started, finished = (min(starts) if starts else None), (max(ends) if ends else None)
    skipped = [{"name": s["name"], "node": s["node"], "reason": s["detail"],
                "delegated": s.get("kind") == "delegated"} for s in steps if s["outcome"] == "skipped"]
    coverage = _coverage(tables["coverage"])
    # A gap: a skipped step (not one the product covered), or a skipped item of what the lane
    # claims that no skipped step stands for already.
    gaps = [{"name": s["name"], "node": s["node"], "reason": s["reason"]} for s in skipped
            if not s["delegated"]]
    interrupted = [{"name": s["name"], "node": s["node"], "reason": s["detail"]} for s in tables["steps"]
                   if s["outcome"] == "interrupted"]   # steps and waits the user stopped (interactively)
    gaps += interrupted
    gaps += [{"name": f"{what}: {item['item']}", "node": "", "reason": item["reason"]}
             for what, c in coverage.items() for item in c["skipped"] if not item["step"]]
    wall = env.get("wall_time_s")
    result: dict[str, Any] = {
        "lane": lane, "profile": profile, "run_id": run_id, "verdict": verdict,
        # passed | passed with gaps (a pass that skipped part of what the lane claims) | failed | incomplete
        "verdict_label": "passed with gaps" if verdict == "passed" and gaps else verdict,
        "success": verdict == "passed",
        "exit_code": exit_code if exit_code is not None else (0 if verdict == "passed" else 1),
        "started": started, "finished": finished,
        # when the run began (the runner's start; else its first step), and its last step ended
        "started_utc": env.get("run_started_utc") or _utc(started), "finished_utc": _utc(finished),
        "wall_time_s": float(wall) if wall else (round(finished - started, 2) if started and finished
                                                 else None),
        "steps": counts,
        "skipped": skipped,
        "gaps": gaps,
        "interrupted": interrupted,
        "coverage": coverage,
        "checks": {"total": len(tables["checks"]), "failed": len(failed_checks)},
        "failed_checks": failed_checks,
        "failing_step": ({"name": failing["name"], "node": failing["node"],
                          "last_observation": failing["detail"]} if failing and verdict != "passed"
                         else None),
        "error": error,
        # The lane's headline figures, as a CI would read them: {name: {"value": v, "unit": u}}.
        "figures": {f["name"]: {"value": f["value"], "unit": f["unit"]} for f in tables["figures"]},
        "accelerator": env.get("vm_accelerator_mode"),
        "accelerator_reason": env.get("vm_accelerator_reason"),
        "harness": {"commit": env.get("harness_commit"), "dirty": env.get("harness_dirty")},
        "ucnb_version": env.get("ucnb_version", __version__),
        "proof_root": str(root),
    }
    (root / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_junit(root, result, tables["steps"])
    return result


def write_junit(root: Path, result: dict[str, Any], step_rows: list[dict[str, Any]]) -> Path:
    """The proof root's own junit.xml: a case for the lane, one per recorded step and wait."""
    lane, verdict = result["lane"], result["verdict"]
    outcome = {"passed": "passed", "failed": "failed"}.get(verdict, "running")
    failing = result.get("failing_step")
    message = (f"{failing['name']} [{failing['node']}]: {failing['last_observation']}" if failing
               else (result.get("error") or {}).get("message", "") if verdict != "passed"
               else result.get("verdict_label", verdict))
    classname = f"ucnb.{lane}"
    cases = [junit.Case(lane, classname, outcome, float(result.get("wall_time_s") or 0), str(message))]
    cases += junit.step_cases(classname, step_rows)
    suite = junit.Suite(f"{lane} ({result['profile']})", cases, float(result.get("wall_time_s") or 0),
                        result.get("started_utc") or "", f"proof root: {root}")
    return junit.write(root / JUNIT, f"ucnb {lane}", [suite], suite.time_s)


def _failing_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The root cause: the failed step that ended first (an inner wait fails before the step
    around it, and before steps of other nodes that only stopped because the run did); with no
    failed step, the step still running when the run ended (interrupted, killed, timed out)."""
    failed = [s for s in steps if s["outcome"] == "failed"]
    if failed:
        return min(failed, key=lambda s: s.get("end") or s["start"])
    running = [s for s in steps if s["outcome"] in ("running", "interrupted")]
    return running[-1] if running else None


def write_checksums(root: Path) -> None:
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root)}\n")
    (root / "SHA256SUMS").write_text("".join(lines))


def verify_checksums(root: Path) -> list[str]:
    """Files whose checksum no longer matches (empty: the proof root is intact)."""
    bad = []
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = root / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(name)
    return bad


def world_readable(root: Path) -> None:
    """Every file 0644 and every folder 0755 (symlinks untouched): serial logs come out of
    virtlogd as 0600, and a proof root is uploaded and read by others."""
    for directory, _, names in os.walk(root, followlinks=False):
        os.chmod(directory, 0o755)
        for name in names:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != 0o644:
                os.chmod(path, 0o644)


def seal(root: Path, notebook: Path, redactor: Redactor, result: dict[str, Any] | None = None) -> None:
    """Redact every artifact, write the page (the banner first, the run facts last, the timeline
    drawn here if the notebook stopped before drawing it), make every file world-readable, write
    SHA256SUMS and point `latest` here."""
    from ucnb.evidence import html, page

    redactor.tree(root)
    if result is None:
        result = json.loads((root / "result.json").read_text())
    if not (root / TIMELINE_PNG).exists():
        draw_timeline(root, result)
    page_html = notebook.with_suffix(".html")
    nb = page.add_seal_cells(page.read_notebook(notebook), root, result,
                             [notebook.name, page_html.name, "SHA256SUMS"])
    import nbformat

    nbformat.write(nb, notebook)
    html.export(nb, page_html, root)
    redactor.file(notebook)
    redactor.file(page_html)
    world_readable(root)
    write_checksums(root)
    refresh_latest(root)


def draw_timeline(root: Path, result: dict[str, Any]) -> None:
    """The timeline plot from events.jsonl (for a notebook that stopped before `run.finish()`);
    a plot that cannot be drawn never stops the seal: the page then says so."""
    from ucnb.kernel import plots

    tables = load_events(root / EVENTS)
    if not tables["steps"]:
        return
    try:
        fig = plots.timeline_figure(tables["steps"], tables["markers"], tables["faults"],
                                    float(result.get("started") or min(s["start"] for s in tables["steps"])),
                                    f"{result['lane']} ({result['profile']}) run {result['run_id']}"
                                    " — drawn at seal time")
        plots.save(fig, root / TIMELINE_PNG)
    except Exception as exc:  # evidence of a failed run must still be sealed
        (root / "plots" / "timeline-not-drawn.txt").write_text(f"{type(exc).__name__}: {exc}\n")
