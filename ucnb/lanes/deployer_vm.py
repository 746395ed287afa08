"""deployer-vm-smoke: a node receives a prebuilt target system and activates it, nothing built in it.

The shared steps also serve deployer-vm-rollback (`deployer_vm_rollback.py`). Lab profile: the
node is provisioned through the reference installer (as in baremetal-iso), then the deployer
publishes a new desired system and the reference node agent (standing in for nix-agent) converges:
download the prebuilt system, activate, health-check, report `active` — or roll back and report
`rolled-back` when the health check fails.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ucnb.baremetal import harness
from ucnb.errors import LaneFailure
from ucnb.installer import active_system_check
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lanes import Lane, TokenParameters
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

NODE = "worker"
INITIAL_SYSTEM = "lab-system-1"
# What a node may not have if it is to activate without building: compilers and nix itself.
BUILDERS = ("cc", "gcc", "clang", "make", "nix", "nix-build")


class Parameters(TokenParameters):
    memory_mib: int = Field(256, ge=192, le=8192)
    disk_size: str = Field("512M", pattern=r"^[1-9][0-9]{0,5}[MG]$")
    install_timeout_s: float = Field(120.0, gt=0, le=3600)
    post_install_timeout_s: float = Field(90.0, gt=0, le=3600)
    rollout_timeout_s: float = Field(60.0, gt=0, le=3600)
    target_system: str = Field("lab-system-2", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    health_check_command: str = Field(active_system_check("lab-system-2"), min_length=1)
    # The node agent's verdict the lane expects: `active` (smoke) or `rolled-back` (rollback,
    # the node then stays on the system it had).
    expect: Literal["active", "rolled-back"] = "active"


LANE = Lane(
    name="deployer-vm-smoke",
    title="Deployer -> node agent: activate a prebuilt target system",
    parameters=Parameters,
    secret_env_parameters=("bootstrap_token_env",),
    cell_timeout_s=600,
    portable=True,  # seed: a supported non-KVM developer lane (portable regressions)
)


@boots
def provision(run: Run) -> harness.BareMetalLab:
    """Install one worker from the ISO and see it report the initial system active."""
    params = run.parameters(Parameters)
    bare = harness.prepare(run, [(NODE, "worker", "uc-worker-root")], memory_mib=params.memory_mib,
                           disk_size=params.disk_size, bootstrap_token_env=params.bootstrap_token_env)
    harness.install_and_boot(bare, install_timeout_s=params.install_timeout_s,
                             post_install_timeout_s=params.post_install_timeout_s)
    return bare


@lab_step("publish and converge")
def publish_and_converge(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Publish the target system as the node's next desired generation (admin API) and wait for
    the node agent's verdict (`expect`) on the console; the deployer's status history is the table."""
    params = run.parameters(Parameters)
    expect = params.expect
    with run.step("publish desired system", NODE) as row:
        desired = bare.admin("PUT", f"/api/v1/nodes/{NODE}/desired-system",
                             {"target_system": params.target_system,
                              "health_check_command": params.health_check_command})
        generation = int(desired["generation"])
        row.detail = f"generation {generation}: {params.target_system}"
    node = bare.nodes[NODE].node
    verdicts = {f"desired-system-active.{NODE}.generation-{generation}": "active",
                f"desired-system-rolled-back.{NODE}.generation-{generation}": "rolled-back"}

    def verdict() -> str | None:
        # Either verdict ends the wait (the wrong one fails at once); so does a failure marker.
        for seen in node.watcher.seen:
            if seen.marker.failed:
                raise LaneFailure(f"{NODE}: failure marker {seen.marker.name!r}; console:\n"
                                  f"{node.watcher.context(seen.marker.offset + len(seen.marker.line) + 1)}")
            if seen.marker.name in verdicts:
                return verdicts[seen.marker.name]
        return None

    published = time.time()
    observed = wait_until(verdict, timeout=params.rollout_timeout_s, node=NODE, recorder=run.recorder,
                          what=f"node agent verdict on generation {generation}")
    run.recorder.figure("node agent verdict", observed)
    run.recorder.figure("time to verdict", round(time.time() - published, 2), "s from publishing")
    if observed != expect:
        raise LaneFailure(f"{NODE}: the node agent reported {observed} for generation {generation}, "
                          f"expected {expect}; console:\n{node.watcher.tail()}")
    status = harness.observed_status(bare, NODE) or {}
    run.recorder.check(f"observed status generation {generation}", f"{expect} (generation {generation})",
                       f"{status.get('status')} (generation {status.get('generation')})", node=NODE)
    view = bare.admin("GET", f"/api/v1/nodes/{NODE}")
    return pd.DataFrame(view["observed_history"])


@lab_step("node system")
def node_system(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """Over SSH: which system is live and current (the target when it went active, the one before
    when it was rolled back), the systems on disk, and no builder on the node."""
    params = run.parameters(Parameters)
    expected_system = params.target_system if params.expect == "active" else INITIAL_SYSTEM
    node = bare.nodes[NODE].node
    node.wait_ssh(30)
    with run.step("node system", NODE):
        live = node.run("cat /run/ultracloud/active-system", timeout=10).stdout.strip()
        current = node.run("readlink /disk/current", timeout=10).stdout.strip()
        systems = node.run("ls /disk/systems", timeout=10).stdout.split()
        builders = node.run(f"for b in {' '.join(BUILDERS)}; do command -v $b; done",
                            timeout=10).stdout.split()
    run.recorder.check("live system", expected_system, live, node=NODE)
    run.recorder.check("current system link", expected_system,
                       re.sub(r"^.*gen-\d+-", "", current), node=NODE)
    run.recorder.check("no builder on the node", "none", ", ".join(builders) or "none", node=NODE)
    return pd.DataFrame([{"live system": live, "current link": current,
                          "systems on disk": " ".join(systems),
                          "builders found": ", ".join(builders) or "none"}])


@lab_step("fetched systems")
def fetched_systems(run: Run, bare: harness.BareMetalLab) -> pd.DataFrame:
    """What the node fetched from the deployer (API calls, bundles) and from the binary cache
    (prebuilt systems): prebuilt systems, nothing to build."""
    table = harness.phone_home_requests(bare)
    table = table[table["path"].str.startswith("/api/v1/") & (table["node_id"].isna()
                                                               | (table["node_id"] == NODE))]
    cache = bare.gateway.cache if bare.gateway else None
    cached = pd.DataFrame(cache.requests() if cache else [], columns=["time", "method", "path", "status",
                                                                      "client"])
    return pd.concat([table.assign(server="deployer"), cached.assign(server="binary-cache")],
                     ignore_index=True)
