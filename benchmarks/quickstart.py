"""Benchmark (not a test): the quickstart lane's wall time and the harness's own overhead.

Prints, measured side by side in one run:
- lane wall time of `ucnb run single-node-quickstart`, and the harness overhead: wall time minus
  the guest's boot-to-ready and the checks' own durations (goal: <= 3 s);
- boot-to-first-marker and boot-to-SSH of a bare guest (libvirt + a serial-log poll + paramiko, no
  ucnb) vs the same guest under the harness (Lab, serial watcher, recorder, waits).

Usage: .venv/bin/python benchmarks/quickstart.py [--repeat N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

from ucnb import profiles
from ucnb.host import daemons, netns
from ucnb.host.accel import choose
from ucnb.image import build_image
from ucnb.image.keys import lab_keys
from ucnb.lab import domain
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

ROOT = Path(__file__).resolve().parents[1]
CHECK_STEPS = ("health:", "manifest", "bootstrap token")


def lane_run(outputs: Path) -> dict[str, float]:
    start = time.monotonic()
    done = subprocess.run([str(ROOT / ".venv/bin/ucnb"), "run", "single-node-quickstart", "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "UCNB_OUTPUTS": str(outputs)})
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"lane failed:\n{done.stderr}")
    root = Path(done.stdout.strip())
    steps = list(csv.DictReader((root / "timeline.csv").open()))
    def duration(row: dict[str, str]) -> float:
        return float(row["end"]) - float(row["start"])
    boot = sum(duration(r) for r in steps if r["name"] == "boot" and r["kind"] == "step")
    checks = sum(duration(r) for r in steps if r["kind"] == "step" and r["name"].startswith(CHECK_STEPS))
    return {"wall": wall, "boot_to_ready": boot, "checks": checks, "overhead": wall - boot - checks,
            "verdict_ok": float(json.loads((root / "result.json").read_text())["success"])}


def bare_boot(image, accel, conn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The same guest with no ucnb machinery: createXML, poll the log, connect with paramiko."""
    keys = lab_keys()
    with tempfile.TemporaryDirectory(dir=ROOT / "work") as tmp:
        net = f"ucnb-bench{os.getpid()}"
        conn.networkCreateXML(domain.network_xml(net, "ucnbbench", "10.77.250.1"))
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


def harness_boot(image, accel) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    with Lab([NodeConfig("node01")], image, accel) as lab:
        node = lab["node01"]
        start = time.monotonic()
        node.start()
        node.wait_marker("lab.boot", 60)
        first = time.monotonic() - start
        node.wait_ssh(60)
        return first, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    daemons.up()
    netns.enter()
    image = build_image(profiles.load("lab"))
    conn = connect()
    accel = choose(image, conn)
    print(f"accelerator: {accel.mode} ({accel.reason}); image {image.key}; repeats {args.repeat}")
    bare, harness, lanes = [], [], []
    with tempfile.TemporaryDirectory() as outputs:
        for _ in range(args.repeat):  # interleaved so both see the same machine state
            bare.append(bare_boot(image, accel, conn))
            harness.append(harness_boot(image, accel))
            lanes.append(lane_run(Path(outputs)))
    med = statistics.median
    print(f"\n{'':34}{'bare':>10}{'harness':>10}{'ratio':>8}")
    for i, label in enumerate(("boot -> first marker (s)", "boot -> SSH (s)")):
        b, h = med(x[i] for x in bare), med(x[i] for x in harness)
        print(f"{label:34}{b:10.2f}{h:10.2f}{h / b:8.2f}")
    print("\nsingle-node-quickstart lane (medians)")
    for key in ("wall", "boot_to_ready", "checks", "overhead"):
        print(f"  {key:16}{med(r[key] for r in lanes):8.2f} s")
    overhead = med(r["overhead"] for r in lanes)
    print(f"\nharness overhead {overhead:.2f} s (goal <= 3 s): {'met' if overhead <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
