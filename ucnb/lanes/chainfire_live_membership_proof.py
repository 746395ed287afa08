"""chainfire-live-membership-proof: live reconfiguration of the 3-voter control plane.

From the canonical three voters: a temporary learner on node04 catches up and is promoted,
leadership moves, the temporary voter restarts and rejoins, the current leader is removed and
re-added, and the cluster scales back to the canonical three. After every transition, local
serializable reads on every member return the expected data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from ucnb.cluster import steps as cluster
from ucnb.cluster.steps import ClusterEnv, ClusterParameters, NodeName
from ucnb.errors import LaneFailure
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lab.ssh import CommandResult
from ucnb.lanes import Lane
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")


class Parameters(ClusterParameters):
    nodes: list[NodeName] = Field(default_factory=lambda: ["node01", "node02", "node03", "node04", "node05"],
                                  min_length=2)
    temporary: NodeName = "node04"
    client: NodeName = "node05"
    change_timeout_s: float = Field(60.0, gt=0, le=3600)
    write_interval_s: float = Field(0.3, ge=0, le=60)

    @model_validator(mode="after")
    def _temporary(self) -> Parameters:
        if self.temporary not in self.nodes or self.temporary in self.voters:
            raise ValueError(f"temporary {self.temporary!r} must be one of nodes and not a voter")
        return self


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
        self.removed = ""   # the leader removed by `remove_leader`, re-added by `re_add`

    def after(self, transition: str) -> pd.DataFrame:
        """Record a transition: a key written through the cluster, membership, local reads."""
        self.count += 1
        self.run.recorder.figure("membership transitions", self.count)
        self.cp.write(f"membership/{self.count:02d}", transition)
        table = self.cp.membership(transition)
        self.tables.append(table)
        self.reads.append(self.cp.read_check(transition, timeout=self.params.change_timeout_s))
        return table

    def retry(self, what: str, attempt: Callable[[], CommandResult], done: Callable[[], bool]) -> int:
        """Retry a membership change the cluster refuses while it settles; returns the refusals.

        A try that timed out may still have been applied (etcd then refuses every later try:
        "Peer URLs already exists"), so after a failed try the next first asks whether the
        change is in effect (`done`)."""
        refusals: list[str] = []

        def probe() -> bool:
            if refusals and done():
                return True
            result = attempt()
            if not result.ok:
                refusals.append(str(result).splitlines()[-1][:120])
            return result.ok
        wait_until(probe, timeout=self.params.change_timeout_s, what=what, interval=0.5,
                   recorder=self.run.recorder)
        self.refusals.append({"change": what, "refused": len(refusals),
                              "first refusal": refusals[0] if refusals else ""})
        self.run.recorder.figure("membership changes refused before accepted",
                                 sum(int(str(r["refused"])) for r in self.refusals))
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

    def remove(self, name: str) -> list[str]:
        """Remove a member (asked of the others), stop it and wipe it; returns the others."""
        member = self.cp.member(name)
        others = [m for m in self.cp.members if m != name]
        self.retry(f"member remove {name}", lambda: self.kv.remove(self.cp.operator((name,)), others, member),
                   done=lambda: all(m.id != member.id for m in self.cp.member_list((name,))))
        self.cp.members.remove(name)
        self.stop_member(name, wipe=True)
        return others


@boots
def boot(run: Run) -> Membership:
    """Boot the nodes and form the canonical control plane (ultracloud: the product's lane)."""
    return Membership(run, cluster.boot_lab(run), run.parameters(Parameters))


@lab_step("start the workload")
def start_workload(run: Run, m: Membership) -> pd.DataFrame:
    """A client writes throughout the transitions (see `ucnb.cluster.steps.start_workload`)."""
    return cluster.start_workload(run, m.env)


@lab_step("canonical three voters")
def canonical(run: Run, m: Membership) -> pd.DataFrame:
    with run.step("canonical three voters"):
        return m.after("canonical 3 voters")


@lab_step("add a learner")
def add_learner(run: Run, m: Membership) -> pd.DataFrame:
    """member add --learner; an early promote and a move-leader to it are refused; it catches up."""
    t, op = m.params.temporary, m.cp.operator()
    with run.step(f"add learner {t}", t):
        m.retry(f"member add {t} as learner", lambda: m.kv.add_learner(op, m.cp.members, t),
                done=lambda: m.cp.find(t) is not None)
        learner = m.cp.member(t)
        early = m.kv.promote(op, m.cp.members, learner)  # its process is not even started
        run.recorder.check("promoting a learner not in sync is refused", "refused",
                           "accepted" if early.ok else str(early).splitlines()[-1][:120],
                           ok=not early.ok, node=t)
        leader = m.cp.wait_leader()
        moved = m.kv.move_leader(op, leader, learner)
        run.recorder.check("moving leadership to a learner is refused", "refused",
                           "accepted" if moved.ok else str(moved).splitlines()[-1][:120],
                           ok=not moved.ok, node=t)
        if early.ok or moved.ok:
            raise LaneFailure(f"{t}: a learner was promoted or given leadership before it caught up")
        m.start_member(t, wipe=True)
        m.cp.members.append(t)
    with run.step(f"learner {t} caught up", t):
        return m.after(f"learner {t} added and caught up")


@lab_step("promote the learner")
def promote(run: Run, m: Membership) -> pd.DataFrame:
    t = m.params.temporary
    with run.step(f"promote {t} to voter", t):
        learner = m.cp.member(t)
        m.retry(f"member promote {t}", lambda: m.kv.promote(m.cp.operator(), m.cp.members, learner),
                done=lambda: not m.cp.member(t).is_learner)
        if m.cp.member(t).is_learner:
            raise LaneFailure(f"{t}: still a learner after a successful promote")
        return m.after(f"{t} promoted to voter")


@lab_step("move leadership")
def move_leader(run: Run, m: Membership) -> pd.DataFrame:
    leader = m.cp.wait_leader()
    target = next(n for n in [m.params.temporary, *m.cp.members] if n != leader)
    with run.step(f"move leadership {leader} -> {target}", target):
        member = m.cp.member(target)
        # Asked of the leader of the moment: an election on a starved host may have moved it.
        m.retry(f"move-leader to {target}",
                lambda: m.kv.move_leader(m.cp.operator(), m.cp.leader() or leader, member),
                done=lambda: m.cp.leader() == target)
        now = m.cp.wait_leader(timeout=m.params.change_timeout_s)
        if not run.recorder.check("leader after transfer", target, now):
            raise LaneFailure(f"leadership moved to {now}, not {target}")
        return m.after(f"leadership moved to {target}")


@lab_step("restart the temporary voter")
def restart_temporary(run: Run, m: Membership) -> pd.DataFrame:
    t = m.params.temporary
    with run.step(f"restart temporary voter {t}", t):
        restart = run.profile.service_manager.restart.format(service=m.kv.role.service)
        m.lab[t].run(restart, timeout=30, check=True)
        m.cp.wait_healthy(t, timeout=m.params.change_timeout_s)
        return m.after(f"temporary voter {t} restarted and rejoined")


@lab_step("remove the current leader")
def remove_leader(run: Run, m: Membership) -> pd.DataFrame:
    leader = m.cp.wait_leader()
    with run.step(f"remove current leader {leader}", leader):
        others = m.remove(leader)
        m.removed = leader
        new = m.cp.wait_leader(timeout=m.params.change_timeout_s)
        run.recorder.check("a remaining voter leads", others, new, ok=new in others)
        still = m.kv.health(m.lab[others[0]], leader)
        run.recorder.check(f"removed {leader} no longer serves", "unreachable",
                           "serving" if still.ok else "unreachable", ok=not still.ok)
        return m.after(f"leader {leader} removed")


@lab_step("re-add the removed leader")
def re_add(run: Run, m: Membership) -> pd.DataFrame:
    name = m.removed
    with run.step(f"re-add {name}", name):
        m.retry(f"member add {name}", lambda: m.kv.add_voter(m.cp.operator(), m.cp.members, name),
                done=lambda: m.cp.find(name) is not None)
        m.start_member(name, wipe=True)  # a removed member returns with a new id
        m.cp.members.append(name)
        m.cp.wait_healthy(name, timeout=m.params.change_timeout_s)
        return m.after(f"{name} re-added")


@lab_step("scale back to three voters")
def scale_back(run: Run, m: Membership) -> pd.DataFrame:
    t = m.params.temporary
    with run.step(f"scale back: remove {t}", t):
        m.remove(t)
        table = m.after("scaled back to the canonical 3 voters")
        final = sorted(table["name"])
        if not run.recorder.check("final members", sorted(m.params.voters), final):
            raise LaneFailure(f"final members {final}, expected {sorted(m.params.voters)}")
        return table


@lab_step("membership after every transition")
def transitions(run: Run, m: Membership) -> pd.DataFrame:
    """Every membership table of the run, one after the other."""
    return pd.concat(m.tables, ignore_index=True)


@lab_step("local reads after every transition")
def read_checks(run: Run, m: Membership) -> pd.DataFrame:
    return pd.concat(m.reads, ignore_index=True)


@lab_step("refused changes")
def refusals(run: Run, m: Membership) -> pd.DataFrame:
    """Membership changes the cluster refused while it settled, before accepting them."""
    return pd.DataFrame(m.refusals)


@lab_step("acknowledged writes")
def acknowledged_writes(run: Run, m: Membership) -> pd.DataFrame:
    return cluster.acknowledged_writes(run, m.env)


@lab_step("workload latency plot")
def latency_plot(run: Run, m: Membership) -> None:
    cluster.latency_plot(run, m.env)
