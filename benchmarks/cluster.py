"""Benchmark (not a test): six-node cluster ready time, cold vs restore, and the cluster lanes'
wall times, measured in one run.

Goals: restore <= 1/3 of cold; cold <= 20 s on TCG; membership proof <= 3 min; fresh-smoke <= 5 min.
Ready = every node answers over SSH (the control plane forms after either way).

Usage: .venv/bin/python benchmarks/cluster.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ucnb import profiles
from ucnb.cluster.controlplane import cluster_node_configs
from ucnb.host import daemons, netns
from ucnb.host.accel import choose
from ucnb.image import build_image
from ucnb.lab import warm
from ucnb.lab.lab import Lab
from ucnb.lab.registry import connect

ROOT = Path(__file__).resolve().parents[1]


def ready_cold(image, accel, configs) -> float:  # type: ignore[no-untyped-def]
    with Lab(configs, image, accel) as lab:
        start = time.monotonic()
        lab.boot()
        return time.monotonic() - start


def ready_restore(image, accel, configs) -> float:  # type: ignore[no-untyped-def]
    key = warm.snapshot_key(image.key, accel.mode, configs)
    snapshot = warm.find(key)
    with Lab(configs, image, accel, lab_id=warm.lab_id_for(key),
             subnet=snapshot.subnet if snapshot else None) as lab:
        if snapshot is None:  # make one first (not timed)
            lab.boot_warm(key)
            for node in lab.nodes.values():
                node.power_loss()
        start = time.monotonic()
        how = lab.boot_warm(key)
        assert how.startswith("restore"), how
        return time.monotonic() - start


def lane(name: str, *args: str) -> float:
    with tempfile.TemporaryDirectory() as outputs:
        start = time.monotonic()
        done = subprocess.run([str(ROOT / ".venv/bin/ucnb"), "run", name, "--no-progress", *args],
                              capture_output=True, text=True, env={**os.environ, "UCNB_OUTPUTS": outputs})
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
        return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    daemons.up()
    netns.enter()
    profile = profiles.load("lab")
    image = build_image(profile)
    accel = choose(image, connect())
    configs = cluster_node_configs(profile)
    print(f"accelerator: {accel.mode}; {len(configs)} nodes; repeats {args.repeat}")
    cold, restore = [], []
    for _ in range(args.repeat):
        cold.append(ready_cold(image, accel, configs))
        restore.append(ready_restore(image, accel, configs))
    c, r = statistics.median(cold), statistics.median(restore)
    print(f"\nsix-node cluster ready (median): cold {c:.1f} s, restore {r:.1f} s, "
          f"ratio {r / c:.2f} (goal <= 0.33; cold goal <= 20 s)")
    for name, goal, extra in (("chainfire-live-membership-proof", 180, ()),
                              ("chainfire-live-membership-proof", 180, ("-p", "boot_mode=restore")),
                              ("fresh-smoke", 300, ()), ("fresh-smoke", 300, ("-p", "boot_mode=restore"))):
        wall = lane(name, *extra)
        label = f"{name} {' '.join(extra[1:]) or 'cold'}"
        print(f"{label:55} {wall:6.1f} s (goal <= {goal} s): {'met' if wall <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
