"""Benchmark (not a test): baremetal-iso's wall time, split into install and post-install.

Runs `ucnb run baremetal-iso` N times and prints, per run and as medians:
- lane wall time (the runner's `wall_time_s`: papermill, kernel, image/installer cache checks, VMs);
- per node, from its markers (`markers.csv`, seconds since power-on): install = power-on ->
  `reboot`, post-install = `reboot` -> `desired-system-active`; and the lab's share
  (power-on of the first node -> last node active) vs the harness's rest.

Usage: .venv/bin/python benchmarks/baremetal_iso.py [--repeat N]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANE = "baremetal-iso"


def one_run(outputs: Path) -> dict[str, float]:
    """One lane run; its figures from the proof root."""
    done = subprocess.run([str(ROOT / ".venv/bin/ucnb"), "run", LANE, "--no-progress"], capture_output=True,
                          text=True, env={**os.environ, "UCNB_OUTPUTS": str(outputs)}, timeout=900)
    if done.returncode != 0:
        sys.exit(f"{LANE} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    root = (outputs / LANE / "latest").resolve()
    lines = (root / "environment.txt").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    figures = {"wall_s": float(env["wall_time_s"])}
    with (root / "markers.csv").open() as f:
        rows = list(csv.DictReader(f))
    for node in sorted({r["node"] for r in rows}):
        since = {r["marker"].split(f".{node}")[0]: float(r["since_boot"]) for r in rows if r["node"] == node}
        figures[f"{node}.install_s"] = since["reboot"]
        figures[f"{node}.post_install_s"] = since["desired-system-active"] - since["reboot"]
    # The lab's share: from the first power-on to the last node active (epoch seconds in markers.csv).
    starts = [float(r["first_seen"]) - float(r["since_boot"]) for r in rows]
    ends = [float(r["first_seen"]) for r in rows if r["marker"].startswith("desired-system-active")]
    figures["lab_span_s"] = max(ends) - min(starts)
    figures["harness_rest_s"] = figures["wall_s"] - figures["lab_span_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            figures = one_run(Path(tmp) / f"run{i}")
            runs.append(figures)
            print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    print(f"\n{LANE}: medians over {len(runs)} run(s)")
    for key in runs[0]:
        print(f"  {key:32s} {statistics.median(r[key] for r in runs):7.2f} s")


if __name__ == "__main__":
    main()
