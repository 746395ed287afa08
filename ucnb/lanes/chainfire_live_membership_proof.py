"""chainfire-live-membership-proof: live reconfiguration of the 3-voter control plane.

From the canonical three voters: a temporary learner on node04 catches up and is promoted,
leadership moves, the temporary voter restarts and rejoins, the current leader is removed and
re-added, and the cluster scales back to the canonical three. After every transition, local
serializable reads on every member return the expected data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from pydantic import Field

from ucnb.cluster.steps import ClusterEnv, ClusterParameters, boot_or_delegate
from ucnb.errors import LaneFailure
from ucnb.kernel.wait import wait_until
from ucnb.lab.ssh import CommandResult
from ucnb.lanes import Lane

if TYPE_CHECKING:
    from collections.abc import Callable

    from ucnb.kernel.run import Run


class Parameters(ClusterParameters):
    nodes: list[str] = Field(default_factory=lambda: ["node01", "node02", "node03", "node04", "node05"])
    temporary: str = "node04"
    client: str = "node05"
    change_timeout_s: float = Field(60.0, gt=0)
    write_interval_s: float = Field(0.3, ge=0)


LANE = Lane(name="chainfire-live-membership-proof", title="ChainFire live membership",
            parameters=Parameters, cell_timeout_s=900)


class Membership:
    """The lane's transitions, each followed by a membership table and a read check."""

    def __init__(self, run: Run, env: ClusterEnv, params: Parameters) -> None:
        self.run, self.env, self.params = run, env, params
        self.cp, self.kv, self.lab = env.cp, env.cp.kv, env.lab
        self.tables: list[pd.DataFrame] = []
        self.reads: list[pd.DataFrame] = []
        self.refusals: list[dict[str, object]] = []   # changes the cluster refused while settling
        self.count = 0

    def after(self, transition: str) -> pd.DataFrame:
        """Record a transition: a key written through the cluster, membership, local reads."""
        self.count += 1
        self.cp.write(f"membership/{self.count:02d}", transition)
        table = self.cp.membership(transition)
        self.tables.append(table)
        self.reads.append(self.cp.read_check(transition, timeout=self.params.change_timeout_s))
        return table

    def retry(self, what: str, attempt: Callable[[], CommandResult]) -> int:
        """Retry a membership change the cluster refuses while it settles; returns the refusals."""
        refusals: list[str] = []

        def probe() -> CommandResult:
            result = attempt()
            if not result.ok:
                refusals.append(str(result).splitlines()[-1][:120])
            return result
        wait_until(probe, timeout=self.params.change_timeout_s, what=what, interval=0.5,
                   recorder=self.run.recorder)
        self.refusals.append({"change": what, "refused": len(refusals),
                              "first refusal": refusals[0] if refusals else ""})
        return len(refusals)

    def start_member(self, name: str, wipe: bool) -> None:
        cluster = {m: self.kv.peer_url(m) for m in [*self.cp.members, name]}
        config = self.kv.config(name, cluster, "existing", self.cp.token)
        self.kv.configure(self.lab[name], config, wipe=wipe)
        service = self.run.profile.service_manager.start.format(service=self.kv.role.service)
        self.lab[name].run(service, timeout=15, check=True)

    def stop_member(self, name: str, wipe: bool = False) -> None:
        stop = self.run.profile.service_manager.stop.format(service=self.kv.role.service)
        node = self.lab[name]
        node.run(stop, timeout=15, check=True)
        if wipe:
            node.run(f"rm -rf /lab/var/chainfire {self.kv.role.config_file}", timeout=15, check=True)

    # -- the transitions -------------------------------------------------------------------
    def canonical(self) -> pd.DataFrame:
        with self.run.step("canonical three voters"):
            return self.after("canonical 3 voters")

    def add_learner(self) -> pd.DataFrame:
        t, op = self.params.temporary, self.cp.operator()
        with self.run.step(f"add learner {t}", t):
            self.retry(f"member add {t} as learner",
                       lambda: self.kv.add_learner(op, self.cp.members, t))
            learner = self.cp.member(t)
            early = self.kv.promote(op, self.cp.members, learner)  # its process is not even started
            self.run.recorder.check("promoting a learner not in sync is refused", "refused",
                                    "accepted" if early.ok else str(early).splitlines()[-1][:120],
                                    ok=not early.ok, node=t)
            leader = self.cp.wait_leader()
            moved = self.kv.move_leader(op, leader, learner)
            self.run.recorder.check("moving leadership to a learner is refused", "refused",
                                    "accepted" if moved.ok else str(moved).splitlines()[-1][:120],
                                    ok=not moved.ok, node=t)
            if early.ok or moved.ok:
                raise LaneFailure(f"{t}: a learner was promoted or given leadership before it caught up")
            self.start_member(t, wipe=True)
            self.cp.members.append(t)
        with self.run.step(f"learner {t} caught up", t):
            return self.after(f"learner {t} added and caught up")

    def promote(self) -> pd.DataFrame:
        t = self.params.temporary
        with self.run.step(f"promote {t} to voter", t):
            learner = self.cp.member(t)
            self.retry(f"member promote {t}",
                       lambda: self.kv.promote(self.cp.operator(), self.cp.members, learner))
            if self.cp.member(t).is_learner:
                raise LaneFailure(f"{t}: still a learner after a successful promote")
            return self.after(f"{t} promoted to voter")

    def move_leader(self) -> pd.DataFrame:
        leader = self.cp.wait_leader()
        target = next(m for m in [self.params.temporary, *self.cp.members] if m != leader)
        with self.run.step(f"move leadership {leader} -> {target}", target):
            member = self.cp.member(target)
            self.retry(f"move-leader to {target}",
                       lambda: self.kv.move_leader(self.cp.operator(), leader, member))
            now = self.cp.wait_leader(timeout=self.params.change_timeout_s)
            if not self.run.recorder.check("leader after transfer", target, now):
                raise LaneFailure(f"leadership moved to {now}, not {target}")
            return self.after(f"leadership moved to {target}")

    def restart_temporary(self) -> pd.DataFrame:
        t = self.params.temporary
        with self.run.step(f"restart temporary voter {t}", t):
            restart = self.run.profile.service_manager.restart.format(service=self.kv.role.service)
            self.lab[t].run(restart, timeout=30, check=True)
            self.cp.wait_healthy(t, timeout=self.params.change_timeout_s)
            return self.after(f"temporary voter {t} restarted and rejoined")

    def remove(self, name: str) -> list[str]:
        """Remove a member (asked of the others), stop it and wipe it; returns the others."""
        member = self.cp.member(name)
        others = [m for m in self.cp.members if m != name]
        self.retry(f"member remove {name}",
                   lambda: self.kv.remove(self.cp.operator((name,)), others, member))
        self.cp.members.remove(name)
        self.stop_member(name, wipe=True)
        return others

    def remove_leader(self) -> tuple[pd.DataFrame, str]:
        leader = self.cp.wait_leader()
        with self.run.step(f"remove current leader {leader}", leader):
            others = self.remove(leader)
            new = self.cp.wait_leader(timeout=self.params.change_timeout_s)
            self.run.recorder.check("a remaining voter leads", others, new, ok=new in others)
            still = self.kv.health(self.lab[others[0]], leader)
            self.run.recorder.check(f"removed {leader} no longer serves", "unreachable",
                                    "serving" if still.ok else "unreachable", ok=not still.ok)
            return self.after(f"leader {leader} removed"), leader

    def re_add(self, name: str) -> pd.DataFrame:
        with self.run.step(f"re-add {name}", name):
            self.retry(f"member add {name}",
                       lambda: self.kv.add_voter(self.cp.operator(), self.cp.members, name))
            self.start_member(name, wipe=True)  # a removed member returns with a new id
            self.cp.members.append(name)
            self.cp.wait_healthy(name, timeout=self.params.change_timeout_s)
            return self.after(f"{name} re-added")

    def scale_back(self) -> pd.DataFrame:
        t = self.params.temporary
        with self.run.step(f"scale back: remove {t}", t):
            self.remove(t)
            table = self.after("scaled back to the canonical 3 voters")
            final = sorted(table["name"])
            if not self.run.recorder.check("final members", sorted(self.params.voters), final):
                raise LaneFailure(f"final members {final}, expected {sorted(self.params.voters)}")
            return table


def boot(run: Run, params: Parameters) -> Membership | None:
    """Lab: boot the nodes and form the canonical control plane. ultracloud: the product's lane."""
    env = boot_or_delegate(run, params)
    return Membership(run, env, params) if env is not None else None
