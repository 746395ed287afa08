"""Benchmark (not a test): the quickstart lane's wall time and where the harness's share goes.

Prints, measured in one invocation (medians of --repeat runs, cold and restore interleaved):
- where the wall time of `ucnb run single-node-quickstart` goes, part by part: the guest's own
  boot-to-ready and checks, and the harness overhead (everything else; goal <= 2 s), from the
  runner's stage timings (outputs/index.jsonl), the executed notebook's cell times and the
  run's timeline;
- the lane cold (`-p boot_mode=cold`) beside restore (`-p boot_mode=restore`, from a saved
  booted state; goal <= 5 s wall), or "not available" while the lane has no such parameter;
- the CPU seconds the runner and its kernel used (less sensitive to other load than wall time);
- boot-to-first-marker and boot-to-SSH of a bare guest (libvirt + a serial-log poll + paramiko,
  no ucnb) vs the same guest under the harness (Lab, serial watcher, recorder, waits).

Usage: .venv/bin/python benchmarks/quickstart.py [--repeat N] [--no-bare]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import paramiko

from ucnb import lanes, paths, profiles
from ucnb.files import read_kv
from ucnb.host import daemons, netns
from ucnb.host.accel import choose
from ucnb.image import build_image
from ucnb.image.keys import lab_keys
from ucnb.lab import domain
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

ROOT = Path(__file__).resolve().parents[1]
LANE = "single-node-quickstart"
OVERHEAD_GOAL_S, RESTORE_GOAL_S = 2.0, 5.0
BOOT_STEPS = ("boot", "save warm snapshot", "restore from snapshot")   # the guest coming up
CHECK_STEPS = ("health:", "manifest", "bootstrap token")              # the lane's checks
GUEST = ("boot-to-ready (guest)", "checks (guest)")
PARTS = ("CLI start-up: interpreter, imports, validation, lab host",
         "kernel start: launch to first cell",
         "set-up cells: import ucnb, start_run, tables",
         "lab set-up: image, accelerator, network, disks",
         *GUEST,
         "check cells beyond their steps",
         "finish: guest logs, teardown, timeline, verdict",
         "between cells: nbclient, notebook saves",
         "kernel shutdown",
         "clean labs",
         "seal: redaction, HTML page, checksums",
         "index, report, process exit")


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def breakdown(root: Path, stages: dict[str, float], wall: float) -> dict[str, float]:
    """The run's wall time in PARTS (they add up to `wall`), from its evidence and stage times."""
    rows = [r for r in csv.DictReader((root / "timeline.csv").open()) if r["end"]]
    cells = []
    for cell in json.loads((root / f"{LANE}.ipynb").read_text())["cells"]:
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell["cell_type"] == "code" and meta.get("start_time") and meta.get("duration") is not None:
            start = _seconds(meta["start_time"])
            cells.append((start, start + float(meta["duration"]), "".join(cell["source"])))

    Cell = tuple[float, float, str]

    def within(cell: Cell, names: tuple[str, ...], kind: str = "step") -> list[dict[str, str]]:
        return [r for r in rows if r["kind"] == kind and r["name"].startswith(names)
                and cell[0] <= float(r["start"]) <= cell[1]]

    def booting_in(cell: Cell) -> float:
        """Power-on (or restore) to SSH: the boot steps, and a restored guest's SSH wait after them."""
        spans = within(cell, BOOT_STEPS)
        if not spans:
            return 0.0
        spans += within(cell, ("wait: SSH",), "wait")
        return max(float(r["end"]) for r in spans) - min(float(r["start"]) for r in spans)

    def checking_in(cell: Cell) -> float:
        return sum(float(r["end"]) - float(r["start"]) for r in within(cell, CHECK_STEPS))

    boot = sum(booting_in(c) for c in cells)
    checks = sum(checking_in(c) for c in cells)
    booting = [c for c in cells if booting_in(c)]
    checking = [c for c in cells if checking_in(c) and c not in booting]
    finishing = [c for c in cells if "run.finish()" in c[2]]
    others = [c for c in cells if c not in booting + checking + finishing]

    def span(group: list[Cell]) -> float:
        return sum(end - start for start, end, _ in group)

    parts = dict(zip(PARTS, (
        stages.get("before the run", 0.0), stages.get("kernel start", 0.0), span(others),
        span(booting) - boot, boot, checks, span(checking) - checks, span(finishing),
        stages.get("cells", 0.0) - span(cells), stages.get("kernel shutdown", 0.0),
        stages.get("clean labs", 0.0), stages.get("seal", 0.0), 0.0), strict=True))
    parts[PARTS[-1]] = wall - sum(parts.values())
    return parts


def lane_run(outputs: Path, mode: str) -> dict[str, Any]:
    """One `ucnb run` of the lane, timed from outside; its parts and how it booted."""
    before = len(index_lines(outputs))
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "ucnb"), "run", LANE, "--no-progress",
                           *(["-p", f"boot_mode={mode}"] if restore_available() else [])],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)   # the runner and its kernel, both reaped
    if done.returncode != 0:
        sys.exit(f"lane ({mode}) failed with exit {done.returncode}:\n{done.stderr}")
    root = Path(done.stdout.strip())
    entry = index_lines(outputs)[before]
    return {"wall": wall, "parts": breakdown(root, entry.get("stages") or {}, wall),
            "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
            "boot_mode": read_kv(root / "environment.txt").get("boot_mode", "cold")}


def index_lines(outputs: Path) -> list[dict[str, Any]]:
    path = outputs / "index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def restore_available() -> bool:
    return "boot_mode" in lanes.get(LANE).parameters.model_fields


def bare_boot(image, accel, conn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The same guest with no ucnb machinery: createXML, poll the log, connect with paramiko."""
    keys = lab_keys()
    with tempfile.TemporaryDirectory(dir=paths.work_root()) as tmp:
        net = f"ucnb-bench{os.getpid()}"
        bridge = netns.bridge_name(250, 0)   # outside the labs' subnets (1-249)
        netns.add_bridge(bridge, "10.77.250.1/24")
        conn.networkCreateXML(domain.network_xml(net, bridge))
        disk = Path(tmp) / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.system_disk),
                        str(disk)], check=True)
        log = Path(tmp) / "serial.log"
        spec = domain.NodeSpec("bare", 256, 1, image.kernel, image.initrd,
                               "console=ttyS0 loglevel=4 ucnb.node=bare ucnb.ip=10.77.250.11/24",
                               (domain.DiskSpec(disk, "ucnb-system"),),
                               (domain.NicSpec(net, "52:54:00:fa:00:01", "10.77.250.11/24"),), log,
                               accel.mode)
        start = time.monotonic()
        dom = conn.createXML(domain.domain_xml("bench", spec), 0)
        try:
            while not log.exists() or b"ULTRACLOUD_MARKER" not in log.read_bytes():
                time.sleep(0.02)
            first = time.monotonic() - start
            pkey = paramiko.Ed25519Key.from_private_key_file(str(keys.client_private))
            while True:
                client = paramiko.SSHClient()
                client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                try:
                    client.connect("10.77.250.11", username="root", pkey=pkey, timeout=1, banner_timeout=1,
                                   auth_timeout=2, allow_agent=False, look_for_keys=False)
                    client.exec_command("true")[1].channel.recv_exit_status()
                    break
                except Exception:
                    time.sleep(0.05)
                finally:
                    client.close()
            return first, time.monotonic() - start
        finally:
            dom.destroy()
            conn.networkLookupByName(net).destroy()
            netns.remove_bridge(bridge)


def harness_boot(image, accel) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    with Lab([NodeConfig("node01")], image, accel) as lab:
        node = lab["node01"]
        start = time.monotonic()
        node.start()
        node.wait_marker("lab.boot", 60)
        first = time.monotonic() - start
        node.wait_ssh(60)
        return first, time.monotonic() - start


def print_lanes(runs: dict[str, list[dict[str, Any]]]) -> None:
    """The parts side by side (cold, restore), medians; overhead = all but the guest's own time."""
    med = statistics.median
    modes = [m for m in ("cold", "restore") if runs[m]]
    print(f"\n{LANE}: where the wall time goes (medians of {len(runs['cold'])} runs, seconds)")
    print(f"  {'part':54}" + "".join(f"{m:>10}" for m in modes))
    for part in PARTS:
        mark = "  " if part in GUEST else "+ "
        print(f"{mark}{part:54}" + "".join(f"{med(r['parts'][part] for r in runs[m]):10.2f}" for m in modes))
    overhead = {m: med(sum(v for k, v in r["parts"].items() if k not in GUEST) for r in runs[m])
                for m in modes}
    wall = {m: med(r["wall"] for r in runs[m]) for m in modes}
    print(f"  {'= harness overhead (the + rows)':54}" + "".join(f"{overhead[m]:10.2f}" for m in modes))
    print(f"  {'lane wall':54}" + "".join(f"{wall[m]:10.2f}" for m in modes))
    print(f"  {'CPU of the runner and its kernel (user+sys)':54}"
          + "".join(f"{med(r['cpu'] for r in runs[m]):10.2f}" for m in modes))
    print(f"\nharness overhead (cold) {overhead['cold']:.2f} s, goal <= {OVERHEAD_GOAL_S:.0f} s: "
          f"{'met' if overhead['cold'] <= OVERHEAD_GOAL_S else 'NOT met'}")
    if "restore" not in modes:
        print(f"quickstart restore: not available (the {LANE} lane has no boot_mode parameter yet); "
              f"cold wall {wall['cold']:.2f} s")
        return
    restored = sum(r["boot_mode"].startswith("restore") for r in runs["restore"])
    print(f"quickstart cold {wall['cold']:.2f} s vs restore {wall['restore']:.2f} s wall "
          f"({restored} of {len(runs['restore'])} restore runs restored), goal <= {RESTORE_GOAL_S:.0f} s: "
          f"{'met' if wall['restore'] <= RESTORE_GOAL_S and restored else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-vs-harness boot comparison")
    args = parser.parse_args()
    daemons.up()
    netns.enter()
    image = build_image(profiles.load("lab"))
    conn = connect()
    accel = choose(image, conn)
    load = os.getloadavg()
    print(f"accelerator: {accel.mode} ({accel.reason}); image {image.key}; repeats {args.repeat}; "
          f"load average at start {load[0]:.2f} on {os.cpu_count()} CPUs")
    bare: list[tuple[float, float]] = []
    harness: list[tuple[float, float]] = []
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "restore": []}
    with tempfile.TemporaryDirectory() as outputs:
        if restore_available():
            lane_run(Path(outputs), "restore")   # not counted: saves the snapshot the others restore
        for _ in range(args.repeat):  # interleaved so that each sees the same machine state
            if not args.no_bare:
                bare.append(bare_boot(image, accel, conn))
                harness.append(harness_boot(image, accel))
            runs["cold"].append(lane_run(Path(outputs), "cold"))
            if restore_available():
                runs["restore"].append(lane_run(Path(outputs), "restore"))
    med = statistics.median
    if bare:
        print(f"\n{'':34}{'bare':>10}{'harness':>10}{'ratio':>8}")
        for i, label in enumerate(("boot -> first marker (s)", "boot -> SSH (s)")):
            b, h = med(x[i] for x in bare), med(x[i] for x in harness)
            print(f"{label:34}{b:10.2f}{h:10.2f}{h / b:8.2f}")
    print_lanes(runs)
    print(f"load average at end {os.getloadavg()[0]:.2f} (other engineers' VMs share this host: "
          f"figures taken under load are inflated)")


if __name__ == "__main__":
    main()
