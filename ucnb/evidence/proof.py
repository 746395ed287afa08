"""The proof root: a dated folder per run holding everything a reviewer needs to trust it.

    outputs/<lane>/<UTC stamp>-<run id>/
      <lane>.ipynb <lane>.html result.json parameters.yaml environment.txt events.jsonl
      markers.csv timeline.csv faults.csv checks.csv plots/ logs/ SHA256SUMS
    outputs/<lane>/latest -> <UTC stamp>-<run id>
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ucnb import __version__, paths
from ucnb.evidence.redact import Redactor
from ucnb.files import read_kv, refresh_latest, update_kv, utc_stamp
from ucnb.kernel.record import field_names, load_events

CSV_NAMES = {"steps": "timeline.csv", "markers": "markers.csv", "checks": "checks.csv",
             "faults": "faults.csv", "figures": "figures.csv"}
EVENTS = "events.jsonl"
ERROR_FILE = "error.json"  # the error a cell ended with, by class (written by the kernel's Run)


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


def host_environment() -> dict[str, str]:
    """What a reviewer needs to trust the host side of a run."""
    from ucnb.overrides import resolve

    env = {
        "ucnb_version": __version__,
        "host": platform.node(),
        "host_kernel": platform.release(),
        "host_cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "qemu": _version(["qemu-system-x86_64", "--version"]),
        "libvirt": _version(["libvirtd", "--version"]),
        "papermill": metadata.version("papermill"),
        "execution_model": "papermill" if os.environ.get("UCNB_RUNNER") else "notebook-kernel",
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


def build_result(root: Path, lane: str, profile: str, run_id: str,
                 error: dict[str, str] | None = None, exit_code: int | None = None) -> dict[str, Any]:
    """result.json: the verdict, the counts, the failing step and its last observation."""
    tables = write_tables(root)
    steps = [s for s in tables["steps"] if s.get("kind") == "step"]
    counts = {o: sum(1 for s in steps if s["outcome"] == o) for o in ("passed", "failed", "skipped",
                                                                       "running")}
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
    result: dict[str, Any] = {
        "lane": lane, "profile": profile, "run_id": run_id, "verdict": verdict,
        "success": verdict == "passed",
        "exit_code": exit_code if exit_code is not None else (0 if verdict == "passed" else 1),
        "started": min(starts) if starts else None, "finished": max(ends) if ends else None,
        "steps": counts,
        "skipped": [{"name": s["name"], "node": s["node"], "reason": s["detail"]}
                    for s in steps if s["outcome"] == "skipped"],
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
        "proof_root": str(root),
    }
    (root / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


@functools.cache
def html_exporter() -> Any:
    """nbconvert's exporter, built once (its imports and templates cost most of an export)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    return exporter


def _failing_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The root cause: the failed step that ended first (an inner wait fails before the step
    around it, and before steps of other nodes that only stopped because the run did); with no
    failed step, the step still running when the run ended (interrupted, killed, timed out)."""
    failed = [s for s in steps if s["outcome"] == "failed"]
    if failed:
        return min(failed, key=lambda s: s.get("end") or s["start"])
    running = [s for s in steps if s["outcome"] == "running"]
    return running[-1] if running else None


def export_html(notebook: Path, html: Path) -> None:
    """One self-contained HTML file: no code input, images inlined, no external scripts."""
    import nbformat

    body, _ = html_exporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(_strip_remote_scripts(body))


def _strip_remote_scripts(body: str) -> str:
    import re

    return re.sub(r"<script[^>]+src=\"https?://[^\"]*\"[^>]*>\s*</script>", "", body)


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


def seal(root: Path, notebook: Path, redactor: Redactor) -> None:
    """Redact every artifact, export HTML, write SHA256SUMS and point `latest` here."""
    redactor.tree(root)
    if notebook.exists():
        export_html(notebook, notebook.with_suffix(".html"))
        redactor.file(notebook.with_suffix(".html"))
    write_checksums(root)
    refresh_latest(root)
