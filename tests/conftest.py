"""Shared fixtures. VM tests need root and the lab host (`make setup` / `ucnb host up`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lab_host() -> None:
    """The lab namespace and libvirtd are up (started, idempotently, if needed)."""
    from ucnb.host import daemons

    daemons.up()


@pytest.fixture(scope="session")
def lab_image(lab_host: None):  # type: ignore[no-untyped-def]
    from ucnb import profiles
    from ucnb.image import build_image

    return build_image(profiles.load("lab"))


@pytest.fixture(scope="session")
def accelerator(lab_image):  # type: ignore[no-untyped-def]
    from ucnb.host.accel import choose
    from ucnb.lab.registry import connect

    return choose(lab_image, connect())


# Every run id a test's `outputs` held, for the checks of the whole session (tests share the host).
SESSION_RUNS: set[str] = set()


@pytest.fixture()
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Evidence goes to a temporary outputs root (the image cache stays shared)."""
    path = tmp_path / "outputs"
    monkeypatch.setenv("UCNB_OUTPUTS", str(path))
    yield path
    SESSION_RUNS.update(runs_in(path))


def runs_in(outputs: Path) -> set[str]:
    """The run ids of every proof root under `outputs` (lanes, suites' lanes)."""
    from ucnb.evidence.proof import read_environment

    found = set()
    for env in outputs.rglob("environment.txt") if outputs.exists() else []:
        run = read_environment(env.parent).get("run_id")
        if run:
            found.add(run)
    return found


def ucnb_objects() -> dict[str, list[str]]:
    """The domains, networks and lab folders of *this work root's* labs (a domain by ucnb's
    metadata, a network by a lab's state): other work roots' labs on the host are not ours."""
    from ucnb import paths
    from ucnb.lab.registry import connect, list_labs, tagged_domains

    conn = connect()
    networks = {n.name() for n in conn.listAllNetworks()}
    return {
        "domains": sorted(t.domain.name() for t in tagged_domains(conn)),
        "networks": sorted(n for s in list_labs() for n in s.networks if n in networks),
        "labs": sorted(p.name for p in paths.labs_dir().iterdir() if p.is_dir()),
    }


def _processes(field: str) -> Iterator[tuple[int, bytes]]:
    """(pid, /proc/<pid>/<field>) of every process but this one."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                yield int(entry.name), (entry / field).read_bytes()
            except OSError:
                continue


def kernel_processes(run_ids: set[str] | None = None) -> list[int]:
    """ipykernel processes of these runs (of any ucnb run when None): left behind by a runner?"""
    found = []
    for pid, cmd in _processes("cmdline"):
        if b"ipykernel_launcher" not in cmd:
            continue
        if run_ids is None:
            found.append(pid)
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(f"UCNB_RUN_ID={r}".encode() in environ for r in run_ids):
            found.append(pid)
    return found


def leftovers(run_ids: set[str], lab_ids: set[str] | None = None, owner_pid: int | None = None) -> list[str]:
    """What these runs (or labs, or labs and leases this process owns) left on the host: lab
    state, tagged domains, networks, kernels and other processes of the run, leases, secrets files."""
    from ucnb import paths
    from ucnb.lab import leases
    from ucnb.lab.registry import connect, list_labs, tagged_domains

    lab_ids = lab_ids or set()

    def ours(run: str = "", lab: str = "", pid: int | None = None) -> bool:
        return run in run_ids or lab in lab_ids or (owner_pid is not None and pid == owner_pid)

    conn = connect()
    left = [f"lab {s.lab_id} (run {s.run_id})" for s in list_labs()
            if ours(s.run_id, s.lab_id, s.owner.pid if s.owner else s.owner_pid)]
    left += [f"domain {t.domain.name()}" for t in tagged_domains(conn)
             if ours(t.run_id, t.lab_id, t.owner.pid if t.owner else None)]
    left += [f"network {n.name()}" for n in conn.listAllNetworks()
             if any(n.name() == f"ucnb-{lab}" or n.name().startswith(f"ucnb-{lab}-") for lab in lab_ids)]
    left += [f"lab folder {lab}" for lab in lab_ids if (paths.labs_dir() / lab).exists()]
    held, _ = leases.all_leases()
    left += [lease.describe() for lease in held if ours(lease.run_id, "", lease.owner.pid)]
    left += [f"secrets file of run {r}" for r in run_ids if (paths.work_root() / "secrets" / r).exists()]
    markers = {f"UCNB_RUN_ID={r}".encode() for r in run_ids}
    left += [f"process {pid} of run {sorted(run_ids)}" for pid, environ in _processes("environ")
             if markers & set(environ.split(b"\0"))]
    return left


def assert_run_left_nothing(root: Path) -> None:
    """This run's lab (named in environment.txt) left no domain, network, lab folder, process,
    lease or secrets file. Only this run's objects are checked: other labs share the host."""
    from ucnb.evidence.proof import read_environment

    env = read_environment(root)
    left = leftovers({env["run_id"]}, {env["lab_id"]} if env.get("lab_id") else set())
    assert not left, f"run {env['run_id']} left: {left}"


@pytest.fixture()
def no_leaks(lab_host: None, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if its own runs (the proof roots in its `outputs`) or labs this process made
    left anything behind; other runs on the host, finished or not, are none of its business."""
    before = set(leftovers(set(), owner_pid=os.getpid()))   # e.g. a module's lab, kept across tests
    yield
    runs = runs_in(request.getfixturevalue("outputs")) if "outputs" in request.fixturenames else set()
    time.sleep(0.5)   # a kernel the runner shut down may take a moment to be reaped
    left = [item for item in leftovers(runs, owner_pid=os.getpid()) if item not in before]
    assert not left, f"leaked: {left}"
