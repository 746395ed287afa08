"""Runs side by side on one host: two quickstarts started together both pass, each in its own lab,
subnet and names, with their lab folders and disks private meanwhile; `ucnb lab clean` (no lab
named) run while they boot leaves both alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from ..conftest import ROOT, Cli
from ..lab_fixtures import ABANDONS_LABS, leftovers, settled

pytestmark = ABANDONS_LABS
UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)
LANE = "single-node-quickstart"


def _start(outputs: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs)}
    return subprocess.Popen([*UCNB, "run", LANE, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)


def _run_id(outputs: Path) -> str | None:
    roots = list((outputs / LANE).glob("2*")) if (outputs / LANE).exists() else []
    return roots[0].name.rsplit("-", 1)[1] if roots else None


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """Ctrl-C to the runs still going (their runners tear their labs down), then wait for them."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=120)


def test_two_quickstarts_side_by_side_pass_and_a_clean_meanwhile_leaves_them_alone(
        outputs: Path, lab_host: None) -> None:
    from ucnb.lab.registry import connect, list_labs, tagged_domains

    alone = outputs / "alone"
    started = time.monotonic()
    solo = _start(alone)
    _, solo_err = solo.communicate(timeout=600)
    solo_s = time.monotonic() - started
    assert solo.returncode == 0, solo_err

    dirs = [outputs / "a", outputs / "b"]
    started = time.monotonic()
    procs = [_start(d) for d in dirs]
    try:
        runs: list[str | None] = [None, None]
        deadline = time.monotonic() + 300
        while True:   # both VMs up: then clean, look at their labs, and let them finish
            assert all(p.poll() is None for p in procs), "a lane ended before both VMs were up"
            assert time.monotonic() < deadline, "the two VMs never ran together"
            runs = [r or _run_id(d) for r, d in zip(runs, dirs, strict=True)]
            active = {t.run_id for t in tagged_domains(connect()) if t.running}
            if all(r in active for r in runs):
                break
            time.sleep(0.2)
        labs = {s.run_id: s for s in list_labs() if s.run_id in runs}
        assert len(labs) == 2
        a, b = (labs[str(r)] for r in runs)
        assert a.lab_id != b.lab_id and a.subnet != b.subnet and not set(a.networks) & set(b.networks)
        assert {n["address"] for n in a.nodes.values()}.isdisjoint(n["address"] for n in b.nodes.values())
        from ucnb import paths

        for state in (a, b):   # secrets at rest: a private lab folder, private disks and state
            folder = paths.labs_dir() / state.lab_id
            assert folder.stat().st_mode & 0o777 == 0o700
            for disk in folder.glob("*.qcow2"):
                assert disk.stat().st_mode & 0o777 == 0o600, disk
            assert (folder / "state.json").stat().st_mode & 0o777 == 0o600

        cleaned = subprocess.run([*UCNB, "lab", "clean"], capture_output=True, text=True, timeout=120)
        assert cleaned.returncode == 0, cleaned.stderr
        for state in (a, b):
            assert f"left lab {state.lab_id} alone" in cleaned.stdout
            assert state.lab_id not in cleaned.stdout.replace(f"left lab {state.lab_id} alone", "")

        ends = {}
        for proc, d in zip(procs, dirs, strict=True):
            _, err = proc.communicate(timeout=600)
            ends[d.name] = time.monotonic() - started
            assert proc.returncode == 0, err
            result = json.loads((next((d / LANE).glob("2*")) / "result.json").read_text())
            assert result["verdict"] == "passed"
    finally:   # a failed assertion must not leave the two runs going
        _stop(procs)
    print(f"FIGURE side-by-side: quickstart alone {solo_s:.1f}s; together a {ends['a']:.1f}s, "
          f"b {ends['b']:.1f}s (wall, from the same start)")
    assert settled(lambda: leftovers({str(r) for r in runs}, {a.lab_id, b.lab_id}), grace_s=1) == []
