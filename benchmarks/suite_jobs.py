"""Benchmark (not a test): a suite serial vs side by side, `ucnb suite NAME --jobs 1` then `--jobs N`.

Prints, measured in one invocation on this host, one after the other:
- each run's wall time and every entry's own time, side by side;
- whether every entry got the same verdict, and whether each entry left the same evidence files
  (names relative to its proof root; `ucnb.runner.suites.evidence_files`);
- the host's load (1-minute load average, other QEMU processes) before each run: other engineers'
  VMs on a shared host slow both runs, and the parallel one more (it needs the cores they take).

Usage: python benchmarks/suite_jobs.py [--suite portable] [--jobs 2] [--parallel-first]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ucnb.runner.suites import evidence_files

ROOT = Path(__file__).resolve().parents[1]


def qemu_processes() -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            count += Path(f"/proc/{pid}/comm").read_text().startswith("qemu-system")
        except OSError:
            continue
    return count


def suite_run(suite: str, jobs: int, outputs: Path) -> dict[str, object]:
    load, qemus = os.getloadavg()[0], qemu_processes()
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ucnb", "suite", suite, "--jobs", str(jobs),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)})
    wall = time.monotonic() - start
    lines = done.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_dir():
        sys.exit(f"suite --jobs {jobs} wrote no suite root (exit {done.returncode}):\n{done.stderr[-3000:]}")
    root = Path(lines[-1])
    summary = json.loads((root / "suite.json").read_text())
    return {"wall": wall, "exit": done.returncode, "load": load, "qemus": qemus, "root": root,
            "verdict": summary["verdict"], "files": evidence_files(root),
            "entries": {e["name"]: (e["status"], e["duration_s"]) for e in summary["entries"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="portable")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--parallel-first", action="store_true",
                        help="run --jobs N first (the host's load drifts: measure both orders)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ucnb-bench-jobs-") as tmp:
        if args.parallel_first:
            side = suite_run(args.suite, args.jobs, Path(tmp) / "parallel")
            serial = suite_run(args.suite, 1, Path(tmp) / "serial")
        else:
            serial = suite_run(args.suite, 1, Path(tmp) / "serial")
            side = suite_run(args.suite, args.jobs, Path(tmp) / "parallel")
        names = list(serial["entries"])  # type: ignore[arg-type]
        width = max(map(len, names)) + 2
        print(f"suite {args.suite}: --jobs 1 vs --jobs {args.jobs} (wall seconds, one run each)")
        print(f"{'':{width}}{'--jobs 1':>18}{f'--jobs {args.jobs}':>18}  same verdict  same files")
        for name in names:
            (s_status, s_time), (p_status, p_time) = serial["entries"][name], side["entries"][name]  # type: ignore[index]
            same_files = serial["files"].get(name) == side["files"].get(name)  # type: ignore[attr-defined]
            print(f"{name:{width}}{s_status:>10}{s_time:7.1f}s{p_status:>10}{p_time:7.1f}s  "
                  f"{'yes' if s_status == p_status else 'NO':>12}  {'yes' if same_files else 'NO':>10}")
            if not same_files:
                a, b = set(serial["files"][name]), set(side["files"][name])  # type: ignore[index]
                print(f"{'':{width}}only serial: {sorted(a - b)}; only parallel: {sorted(b - a)}")
        print(f"{'suite wall':{width}}{serial['verdict']:>10}{serial['wall']:7.1f}s"
              f"{side['verdict']:>10}{side['wall']:7.1f}s  speed-up {serial['wall'] / side['wall']:.2f}x")  # type: ignore[operator]
        for label, run in (("--jobs 1", serial), (f"--jobs {args.jobs}", side)):
            print(f"host before {label}: load average {run['load']:.2f} on {os.cpu_count()} cores, "
                  f"{run['qemus']} QEMU processes of other runs")
        same = serial["entries"].keys() == side["entries"].keys() and all(  # type: ignore[attr-defined]
            serial["entries"][n][0] == side["entries"][n][0] for n in names)  # type: ignore[index]
        passed = serial["exit"] == side["exit"] == 0
        sys.exit(0 if same and passed and serial["files"] == side["files"] else 1)


if __name__ == "__main__":
    main()
