"""Benchmark (not a test): six-node cluster ready time, cold vs restore, and each cluster lane's
wall time cold vs restore, measured in one run and printed side by side.

Goals: restore <= 1/4 of cold; cold <= 20 s on TCG; each lane faster restored than cold;
membership proof <= 3 min; fresh-smoke <= 5 min. Ready = every node answers over SSH (the
control plane forms after either way). Every cluster lane that takes boot_mode=restore is
measured (rollout-soak with hold_s=3: its 30 s holds are the same in both modes). A lane's
first restore run of a new snapshot key boots cold and saves the snapshot: it is run first
(`prime`, its wall printed apart), so the restore figures are those of a saved snapshot, as
every later run sees them. A lane whose runs vary more than the restore saves (rollout-soak's
soak phases) needs `--lane-repeat 3` or more: medians per mode, runs interleaved.

Usage: python benchmarks/cluster.py [--repeat N] [--lanes NAME ...] [--lane-repeat N] [--outputs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ucnb import profiles
from ucnb.cluster.controlplane import cluster_node_configs
from ucnb.host import daemons, netns
from ucnb.host.accel import choose
from ucnb.image import build_image
from ucnb.kernel.record import Recorder
from ucnb.lab import warm
from ucnb.lab.lab import Lab
from ucnb.lab.registry import connect

ROOT = Path(__file__).resolve().parents[1]
# lane -> (wall goal in s, parameters beyond boot_mode)
LANES: dict[str, tuple[float, tuple[str, ...]]] = {
    "chainfire-live-membership-proof": (180, ()), "fresh-smoke": (300, ()),
    "durability-proof": (300, ()), "rollout-soak": (420, ("-p", "hold_s=3"))}


def ready_cold(image, accel, configs) -> float:  # type: ignore[no-untyped-def]
    with Lab(configs, image, accel) as lab:
        start = time.monotonic()
        lab.boot()
        return time.monotonic() - start


def ready_restore(image, accel, configs, profile) -> float:  # type: ignore[no-untyped-def]
    """Ready after restoring the six nodes as `fresh-smoke -p boot_mode=restore` does (the same
    snapshot key, settled the same way); a missing snapshot is made first, untimed."""
    shape = warm.inputs(image.key, accel.mode, profile.name, configs, warm.hypervisor(connect()))
    settle = warm.settled(profile, Recorder())
    while True:
        claim = warm.claim(shape, lambda **options: Lab(configs, image, accel, **options))
        with claim.lab as lab:
            if claim.slot is None:
                raise SystemExit(f"no warm slot free: {claim.why}")
            start = time.monotonic()
            if lab.boot_warm(claim.slot, shape, settle=settle):
                return time.monotonic() - start
        print(f"  made the snapshot first ({claim.why})")


def lane(name: str, mode: str, keep: Path | None) -> tuple[float, float, str]:
    """Wall time of one `ucnb run`, its "lab ready" figure and the boot mode it reports (a failed
    run: "failed: <its failing step>", its figures as far as it got); its evidence is kept
    under `keep` when given."""
    with tempfile.TemporaryDirectory() as scratch:
        outputs = str(keep or scratch)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "ucnb", "run", name, "--no-progress",
                               "-p", f"boot_mode={mode}", *LANES[name][1]],
                              capture_output=True, text=True, env={**os.environ, "UCNB_OUTPUTS": outputs})
        wall = time.monotonic() - start
        root = (Path(outputs) / name / "latest").resolve()
        result = json.loads((root / "result.json").read_text())
        lines = (root / "environment.txt").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        ready = float(result["figures"].get("lab ready", {}).get("value", "nan"))
        if done.returncode != 0:
            print(f"  {name} ({mode}) failed: {json.dumps(result.get('failing_step'))[:600]}"
                  + (f" (evidence: {root})" if keep else ""))
            return wall, ready, f"failed: {env.get('boot_mode', '?')}"
        return wall, ready, env["boot_mode"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--lanes", nargs="*", default=list(LANES), choices=list(LANES))
    parser.add_argument("--lane-repeat", type=int, default=1,
                        help="runs of each lane per mode, cold and restore interleaved (medians shown)")
    parser.add_argument("--outputs", type=Path, help="keep each lane run's evidence here (default: none)")
    args = parser.parse_args()
    daemons.up()
    netns.enter()
    profile = profiles.load("lab")
    image = build_image(profile)
    accel = choose(image, connect())
    configs = cluster_node_configs(profile)
    print(f"accelerator: {accel.mode}; {len(configs)} nodes; repeats {args.repeat}; "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cold, restore = [], []
    for _ in range(args.repeat):
        cold.append(ready_cold(image, accel, configs))
        restore.append(ready_restore(image, accel, configs, profile))
    rows = []
    for name in args.lanes:
        prime = lane(name, "restore", args.outputs)
        runs: dict[str, list[tuple[float, float, str]]] = {"cold": [], "restore": []}
        for _ in range(args.lane_repeat):   # interleaved, so a change of load falls on both modes
            for mode in runs:
                runs[mode].append(lane(name, mode, args.outputs))
        rows.append((name, runs["cold"], runs["restore"], prime))
    c, r = statistics.median(cold), statistics.median(restore)
    print(f"\nsix-node cluster ready (median of {args.repeat}): cold {c:.1f} s, restore {r:.1f} s, ratio "
          f"{r / c:.2f} (goal <= 0.25: {'met' if r / c <= 0.25 else 'NOT met'}); "
          f"cold {sorted(round(x, 1) for x in cold)}, restore {sorted(round(x, 1) for x in restore)}")
    print(f"{'lane':34} {'cold wall':>9} {'restore wall':>12} {'ready cold':>10} {'ready restore':>13}  "
          "verdict")
    med = statistics.median
    for name, colds, restores, (pw, _, pm) in rows:
        goal = LANES[name][0]
        cw, rw = med(r[0] for r in colds), med(r[0] for r in restores)
        cr, rr = med(r[1] for r in colds), med(r[1] for r in restores)
        modes = f"{'/'.join(sorted({r[2] for r in colds}))} and {'/'.join(sorted({r[2] for r in restores}))}"
        ok = rw < cw and {r[2] for r in restores} == {"restore"} and {r[2] for r in colds} == {"cold"} \
            and rw <= goal
        each = "" if args.lane_repeat == 1 else (f"; walls cold {[round(r[0], 1) for r in colds]}, "
                                                 f"restore {[round(r[0], 1) for r in restores]}")
        print(f"{name:34} {cw:8.1f}s {rw:11.1f}s {cr:9.1f}s {rr:12.1f}s  "
              f"{'met' if ok else 'NOT met'} (restore < cold, <= {goal:g} s; "
              f"modes {modes}; priming run {pw:.1f} s, {pm}{each})")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
