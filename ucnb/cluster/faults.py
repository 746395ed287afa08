"""Faults as data (Jepsen's nemesis): what to break, on whom, and how to heal it.

A fault is injected and healed inside a recorded interval, so every table and plot can shade the
degraded window. Targets are resolved when the fault starts: a node name, `leader`, `one`
(a random member), `minority` or `majority` of the current members.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ucnb.errors import LaneFailure, ParameterError
from ucnb.kernel.record import Recorder
from ucnb.lab.lab import Lab
from ucnb.profiles import ServiceManager

FaultKind = Literal["power_loss", "reset", "pause", "link_down", "service_restart"]
SPECIAL_TARGETS = ("leader", "one", "minority", "majority")


class Fault(BaseModel):
    """One scheduled fault. `nic` picks the link to cut (1: the Raft network, so SSH survives)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: FaultKind
    target: str
    hold_s: float = 0.0
    nic: int = 1
    service: str = "chainfire"

    def describe(self) -> str:
        return f"{self.kind} on {self.target}"


def resolve_targets(target: str, members: list[str], leader: str | None,
                    rng: random.Random | None = None) -> list[str]:
    """The concrete nodes a target names, among the current members."""
    rng = rng or random.Random()
    if target == "leader":
        if leader is None:
            raise LaneFailure("fault targets the leader, but the members agree on none")
        return [leader]
    if target == "one":
        return [rng.choice(members)]
    if target in ("minority", "majority"):
        size = (len(members) - 1) // 2 if target == "minority" else len(members) // 2 + 1
        # A minority never includes the leader, so the majority keeps serving throughout.
        pool = [m for m in members if m != leader] if target == "minority" else list(members)
        return sorted(rng.sample(pool, size))
    if target in members:
        return [target]
    raise ParameterError(f"fault target {target!r} is neither a member ({', '.join(members)}) "
                         f"nor one of {', '.join(SPECIAL_TARGETS)}")


class Nemesis:
    """Applies and heals faults on a lab, recording each as an interval."""

    def __init__(self, lab: Lab, recorder: Recorder, service_manager: ServiceManager,
                 rng: random.Random | None = None) -> None:
        self.lab, self.recorder, self.service_manager = lab, recorder, service_manager
        self.rng = rng or random.Random()
        self.down: set[str] = set()   # nodes the schedule has taken down: others must be up

    def assert_expected_up(self, names: list[str], seen_by: str) -> None:
        """Fail at once, naming the node, when one the schedule did not touch is not running."""
        for name in names:
            if name not in self.down and not self.lab[name].running():
                raise LaneFailure(f"{name} is not running, outside the fault schedule "
                                  f"(seen by: {seen_by})")

    @contextmanager
    def inject(self, fault: Fault, members: list[str], leader: str | None,
               boot_timeout: float = 90.0) -> Iterator[list[str]]:
        """Apply `fault`, yield its targets, and heal it when the block ends."""
        targets = resolve_targets(fault.target, members, leader, self.rng)
        with self.recorder.fault(fault.kind, ",".join(targets)):
            with self.recorder.step(f"inject {fault.kind} on {','.join(targets)}"):
                for name in targets:
                    self._apply(fault, name)
            try:
                yield targets
            finally:
                with self.recorder.step(f"heal {fault.kind} on {','.join(targets)}"):
                    for name in targets:
                        self._heal(fault, name, boot_timeout)

    def _apply(self, fault: Fault, name: str) -> None:
        node = self.lab[name]
        if fault.kind == "power_loss":
            self.down.add(name)
            node.power_loss()
        elif fault.kind == "reset":
            node.reset()
        elif fault.kind == "pause":
            self.down.add(name)
            node.pause()
        elif fault.kind == "link_down":
            node.set_link(False, fault.nic)
        elif fault.kind == "service_restart":
            node.run(self.service_manager.restart.format(service=fault.service), timeout=30, check=True)

    def _heal(self, fault: Fault, name: str, boot_timeout: float) -> None:
        node = self.lab[name]
        if fault.kind == "power_loss":
            node.start()
            node.wait_marker("lab.init.done", boot_timeout)
            node.wait_ssh(boot_timeout)
        elif fault.kind == "reset":
            node.wait_marker("lab.init.done", boot_timeout)
            node.wait_ssh(boot_timeout)
        elif fault.kind == "pause":
            node.resume()
        elif fault.kind == "link_down":
            node.set_link(True, fault.nic)
        self.down.discard(name)

