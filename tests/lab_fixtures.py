"""The lab host for the vm and e2e layers: its session fixtures, and `own_runs`, the check that what
a test's own runs created is gone when the test ends.

Imported by tests/vm/conftest.py and tests/e2e/conftest.py (tests/unit never reaches libvirt).
The check looks only at the test's own runs and labs, named by their ids, so other labs may live
on the same host meanwhile; it selects objects by ucnb's domain metadata and by the lab's names on
its own, not through the registry code it is checking.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

GRACE_S = 10.0  # a process the run ended may still be exiting when the test returns
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def settled(find: Callable[[], list[T]], grace_s: float = GRACE_S) -> list[T]:
    """What `find()` still finds once it finds nothing or `grace_s` has passed: what a run just
    ended may still be removing (a process exiting) gets that long, and not a fixed wait."""
    deadline = time.monotonic() + grace_s
    while (found := find()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


# Tests that abandon a lab on purpose (kill -9 of its runner) or run `ucnb lab clean` with no lab
# named (which removes abandoned labs): under xdist one after another on one worker, so one test's
# clean never takes the lab another test abandoned and is still looking at.
ABANDONS_LABS = pytest.mark.xdist_group("abandoned-labs")


def shared_run(scope: Literal["module", "session"] = "module") -> Callable[[F], F]:
    """A fixture making runs (or a lab) that several tests only read: one run, several tests, each
    asserting its own part (so each still fails alone). The fixture checks that its runs left
    nothing (`OwnRuns(<tmp>).assert_nothing_left()`) and its tests carry `runs_checked_by_module`.
    Under xdist every test requesting it goes to one worker (an xdist group per fixture,
    tests/conftest.py), so the run is made once."""
    def wrap(func: F) -> F:
        func.ucnb_shared_run = True  # type: ignore[attr-defined]
        return pytest.fixture(scope=scope)(func)  # type: ignore[return-value]
    return wrap


@pytest.fixture(scope="session")
def lab_host() -> None:
    """The lab namespace and libvirtd are up (started, idempotently, if needed)."""
    from ucnb.host import daemons

    daemons.up()


@pytest.fixture(scope="session")
def lab_image(lab_host: None) -> Any:
    from ucnb import profiles
    from ucnb.image import build_image

    return build_image(profiles.load("lab"))


@pytest.fixture(scope="session")
def accelerator(lab_image: Any) -> Any:
    from ucnb.host.accel import choose
    from ucnb.lab.registry import connect

    return choose(lab_image, connect())


def domain_metadata(dom: Any) -> dict[str, str]:
    """The lab, run and node a domain was created for ({} for a domain without ucnb's metadata)."""
    import libvirt

    from ucnb.lab.domain import METADATA_NS

    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError:
        return {}
    return {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in ET.fromstring(xml)}


def _processes() -> Iterator[tuple[int, bytes, bytes]]:
    """(pid, cmdline, environ) of every process but this one."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes()
            except OSError:
                continue


@dataclass
class OwnRuns:
    """The runs and labs one test created, and what of them is still on the host.

    Runs are found under the test's `tmp_path` (every proof root there names its run and lab in
    environment.txt: the `cli` and `outputs` fixtures put them there) and in the registry by run
    id; a test adds the labs it makes itself with `add`. Processes are the test's when they carry
    one of its run ids (`UCNB_RUN_ID`), mention its `tmp_path` (e.g. `UCNB_OUTPUTS`) or one of its
    labs (a QEMU process names its domain and disks).
    """

    tmp_path: Path
    run_ids: set[str] = field(default_factory=set)
    lab_ids: set[str] = field(default_factory=set)

    def add(self, lab: Any) -> None:
        """A lab the test created itself (a `ucnb.lab.lab.Lab`)."""
        self.run_ids.add(lab.run_id)
        self.lab_ids.add(lab.lab_id)

    def discover(self) -> OwnRuns:
        from ucnb.files import read_kv
        from ucnb.lab.registry import list_labs

        for path in self.tmp_path.rglob("environment.txt"):
            env = read_kv(path)
            self.run_ids.update(filter(None, [env.get("run_id")]))
            self.lab_ids.update(filter(None, [env.get("lab_id")]))
        for path in self.tmp_path.rglob("result.json"):   # a run stopped before its kernel wrote any
            with contextlib.suppress(ValueError, OSError):
                self.run_ids.update(filter(None, [json.loads(path.read_text()).get("run_id")]))
        self.lab_ids.update(s.lab_id for s in list_labs() if s.run_id in self.run_ids)
        return self

    def lab_id(self) -> str:
        """The one lab of this test's runs (found now)."""
        (lab,) = self.discover().lab_ids
        return lab

    def domains(self) -> list[str]:
        """This test's domains that exist now (by metadata, or by the name of one of its labs)."""
        from ucnb.lab.registry import connect

        return sorted(dom.name() for dom in connect().listAllDomains() if self._owns_domain(dom))

    def _owns_domain(self, dom: Any) -> bool:
        meta = domain_metadata(dom)
        return (meta.get("run") in self.run_ids or meta.get("lab") in self.lab_ids
                or any(dom.name().startswith(f"ucnb-{lab}-") for lab in self.lab_ids))

    def _owns_network(self, name: str) -> bool:
        return any(name == f"ucnb-{lab}" or name.startswith(f"ucnb-{lab}-") for lab in self.lab_ids)

    def _process_pattern(self) -> re.Pattern[bytes]:
        words = [re.escape(str(self.tmp_path).encode()) + rb"(?=[/:\0]|$)"]
        words += [rb"UCNB_RUN_ID=" + re.escape(run.encode()) + rb"(?=\0|$)" for run in self.run_ids]
        words += [re.escape(f"ucnb-{lab}-".encode()) for lab in self.lab_ids]
        words += [re.escape(f"/labs/{lab}/".encode()) for lab in self.lab_ids]
        return re.compile(b"|".join(words))

    def processes(self) -> dict[int, str]:
        pattern = self._process_pattern()
        return {pid: cmd.replace(b"\0", b" ").decode(errors="replace")[:120]
                for pid, cmd, environ in _processes() if pattern.search(cmd) or pattern.search(environ)}

    def leftovers(self) -> list[tuple[str, str]]:
        """(kind, what) of every domain, network, lab folder, secrets file and process of these
        runs that is still here."""
        from ucnb import paths
        from ucnb.lab.registry import connect, list_labs

        conn = connect()
        left = [("domain", d.name()) for d in conn.listAllDomains() if self._owns_domain(d)]
        left += [("network", n.name()) for n in conn.listAllNetworks() if self._owns_network(n.name())]
        labs = self.lab_ids | {s.lab_id for s in list_labs() if s.run_id in self.run_ids}
        left += [("lab folder", str(paths.labs_dir() / lab)) for lab in sorted(labs)
                 if (paths.labs_dir() / lab).exists()]
        left += [("secrets file", str(paths.work_root() / "secrets" / run)) for run in sorted(self.run_ids)
                 if (paths.work_root() / "secrets" / run).exists()]
        left += [("process", f"{pid} {cmd}") for pid, cmd in self.processes().items()]
        return left

    def settled_leftovers(self) -> list[tuple[str, str]]:
        """`leftovers()`, given processes the run just ended a moment to exit."""
        return settled(self.leftovers)

    def remove(self) -> None:
        """Remove what is left (after it was reported), so one leaking test does not spoil the next."""
        from ucnb import paths
        from ucnb.lab import registry

        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for run in self.run_ids:
            registry.clean(run_id=run)
            (paths.work_root() / "secrets" / run).unlink(missing_ok=True)
        for lab in self.lab_ids:
            registry.destroy(lab)

    def assert_nothing_left(self) -> None:
        self.discover()
        assert self.run_ids or self.lab_ids, (
            f"no run or lab of this test was found (under {self.tmp_path} or added): "
            "the leftover check would pass by accident")
        left = self.settled_leftovers()
        if left:
            self.remove()
        assert not left, f"runs {sorted(self.run_ids)} (labs {sorted(self.lab_ids)}) left: {left}"


@pytest.fixture()
def own_runs(tmp_path: Path, lab_host: None) -> Iterator[OwnRuns]:
    """Fail the test if a run or lab it created left anything behind (see `OwnRuns`)."""
    runs = OwnRuns(tmp_path)
    yield runs
    runs.assert_nothing_left()


# -- what named runs left (for tests that start several runs or check mid-test) ---------------
def runs_in(outputs: Path) -> set[str]:
    """The run ids of every proof root under `outputs` (lanes, suites' lanes)."""
    from ucnb.files import read_kv

    return {run for env in (outputs.rglob("environment.txt") if outputs.exists() else [])
            if (run := read_kv(env).get("run_id"))}


def kernel_processes(run_ids: set[str]) -> list[int]:
    """ipykernel processes of these runs: left behind by a runner?"""
    markers = {f"UCNB_RUN_ID={r}".encode() for r in run_ids}
    return [pid for pid, cmd, environ in _processes()
            if b"ipykernel_launcher" in cmd and markers & set(environ.split(b"\0"))]


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
    left += [f"process {pid} of run {sorted(run_ids)}" for pid, _, environ in _processes()
             if markers & set(environ.split(b"\0"))]
    return left


def assert_run_left_nothing(root: Path) -> None:
    """This run's lab (named in environment.txt) left nothing (see `leftovers`)."""
    from ucnb.files import read_kv

    env = read_kv(root / "environment.txt")
    left = leftovers({env["run_id"]}, {env["lab_id"]} if env.get("lab_id") else set())
    assert not left, f"run {env['run_id']} left: {left}"
