"""Benchmark (not a test): fresh-bench-storage's guest/host ratios from one run, side by side.

Runs the lane once (its lab defaults, or `-p NAME=VALUE` overrides passed through) with a
throwaway baseline file, then prints the lane's wall time, the host's load around it (this host is
shared: say how loaded it was), and per point the guests' and the host's median IOPS, bandwidth
and p99 latency with their ratios and the repetitions' spread. `--root` prints the same from an
existing proof root instead of running.

Usage: .venv/bin/python benchmarks/bench_storage.py [--root PROOF_ROOT] [-p NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LANE = "fresh-bench-storage"


def run_lane(overrides: list[str], outputs: Path) -> tuple[Path, float, tuple[float, float]]:
    """One lane run: its proof root, wall time, and the 1-minute load average before and after."""
    before = os.getloadavg()[0]
    start = time.monotonic()
    argv = [str(ROOT / ".venv/bin/ucnb"), "run", LANE, "--no-progress",
            "-p", f"baseline_file={outputs / 'baseline.json'}"]
    for item in overrides:
        argv += ["-p", item]
    done = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)})
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{LANE} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return (outputs / LANE / "latest").resolve(), wall, (before, os.getloadavg()[0])


def report(root: Path) -> None:
    result = json.loads((root / "result.json").read_text())
    ratios = pd.read_csv(root / "fio-ratios.csv")
    summary = pd.read_csv(root / "fio-summary.csv")
    keys = ["rw", "op", "bs", "iodepth"]
    spread = summary.pivot_table(index=keys, columns="side", values="iops spread %")
    table = ratios.join(spread.add_prefix("iops spread % "), on=keys)
    columns = ["rw", "bs", "iodepth", "guest_iops", "host_iops", "iops_ratio", "guest_bw_MiBps",
               "host_bw_MiBps", "bw_ratio", "guest_lat_p99_us", "host_lat_p99_us", "lat_p99_ratio",
               *[c for c in table.columns if c.startswith("iops spread")]]
    print(f"\nproof root {root} ({result['verdict']}, accelerator {result['accelerator']})")
    print(table[columns].round(2).to_string(index=False))
    figures = result["figures"]
    for name in ("IOPS", "bandwidth", "p99 latency"):
        value = figures[f"guest/host {name} (median over points)"]["value"]
        print(f"guest/host {name}, median over points: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an existing proof root of the lane (no run)")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if args.root:
        report(args.root.resolve())
        return
    with tempfile.TemporaryDirectory() as tmp:
        root, wall, (before, after) = run_lane(args.overrides, Path(tmp))
        print(f"{LANE}: wall time {wall:.0f} s; host load average (1 min) {before:.1f} before, "
              f"{after:.1f} after, on {os.cpu_count()} CPUs")
        report(root)


if __name__ == "__main__":
    main()
