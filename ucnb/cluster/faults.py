"""Faults as data (Jepsen's nemesis): what to break, on whom, and how to heal it.

A fault is injected and healed inside a recorded interval, so every table and plot can shade the
degraded window. Targets are resolved when the fault starts: a node name, `leader`, `one`
(a random member), `minority` or `majority` of the current members.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ucnb.errors import LaneFailure, ParameterError
from ucnb.kernel.record import Recorder
from ucnb.lab.lab import Lab, Node
from ucnb.profiles import ServiceManager

SPECIAL_TARGETS = ("leader", "one", "minority", "majority")


def _boot_back(node: Node, timeout: float) -> None:
    node.wait_marker("lab.init.done", timeout)
    node.wait_ssh(timeout)


def _power_on(node: Node, timeout: float) -> None:
    node.start()
    _boot_back(node, timeout)


def _restart(node: Node, service_manager: ServiceManager, service: str) -> None:
    node.run(service_manager.restart.format(service=service), timeout=30, check=True)


@dataclass(frozen=True)
class FaultKind:
    """How one kind of fault is applied to a node and healed, and what it does to the cluster."""

    apply: Callable[[Node, Fault, ServiceManager], None]
    heal: Callable[[Node, Fault, float], None]
    disconnects: bool   # the target stops serving: the majority must lead and write without it
    down: bool          # the node is not running while the fault holds (the nemesis expects that)


KINDS: dict[str, FaultKind] = {
    "power_loss": FaultKind(lambda node, _f, _sm: node.power_loss(),
                            lambda node, _f, timeout: _power_on(node, timeout), disconnects=True, down=True),
    "reset": FaultKind(lambda node, _f, _sm: node.reset(),
                       lambda node, _f, timeout: _boot_back(node, timeout), disconnects=False, down=False),
    "pause": FaultKind(lambda node, _f, _sm: node.pause(),
                       lambda node, _f, _t: node.resume(), disconnects=True, down=True),
    "link_down": FaultKind(lambda node, f, _sm: node.set_link(False, f.nic),
                           lambda node, f, _t: node.set_link(True, f.nic), disconnects=True, down=False),
    "service_restart": FaultKind(lambda node, f, sm: _restart(node, sm, f.service),
                                 lambda _node, _f, _t: None, disconnects=False, down=False),
}


class Fault(BaseModel):
    """One scheduled fault. `nic` picks the link to cut (1: the Raft network, so SSH survives)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    target: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    hold_s: float = Field(default=0.0, ge=0, le=3600)
    nic: int = Field(default=1, ge=0, le=1)
    service: str = Field(default="chainfire", pattern=r"^[a-z][a-z0-9-]{0,30}$")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; kinds: {', '.join(KINDS)}")
        return kind

    @property
    def spec(self) -> FaultKind:
        return KINDS[self.kind]

    def describe(self) -> str:
        return f"{self.kind} on {self.target}"


def resolve_targets(target: str, members: list[str], leader: str | None,
                    rng: random.Random | None = None, nodes: tuple[str, ...] = ()) -> list[str]:
    """The concrete nodes a target names: a special target among the current members, or a node
    by name (a member, or any other node of the lab, e.g. a worker)."""
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
    if target in members or target in nodes:
        return [target]
    raise ParameterError(f"fault target {target!r} is neither a node ({', '.join(nodes or members)}) "
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
        targets = resolve_targets(fault.target, members, leader, self.rng, tuple(self.lab.nodes))
        with self.recorder.fault(fault.kind, ",".join(targets)) as row:
            with self.recorder.step(f"inject {fault.kind} on {','.join(targets)}"):
                for name in targets:
                    self._apply(fault, name)
            degraded = time.time()
            try:
                yield targets
            finally:
                row.held_s = round(time.time() - degraded, 3)
                with self.recorder.step(f"heal {fault.kind} on {','.join(targets)}"):
                    for name in targets:
                        self._heal(fault, name, boot_timeout)

    def _apply(self, fault: Fault, name: str) -> None:
        if fault.spec.down:
            self.down.add(name)
        fault.spec.apply(self.lab[name], fault, self.service_manager)

    def _heal(self, fault: Fault, name: str, boot_timeout: float) -> None:
        fault.spec.heal(self.lab[name], fault, boot_timeout)
        self.down.discard(name)
