"""single-node-quickstart (alias single-node-trial): one VM, its core services healthy from inside.

The steps are functions a notebook calls one per cell; each records what it did and raises
LaneFailure when the product misbehaves.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from ucnb.errors import LaneFailure, ParameterError
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lanes import Lane, TokenParameters, WarmStartParameters
from ucnb.profiles import CANONICAL_PROFILES

# pandas and the lab layer are imported where used: `ucnb run` reads this module's schema
# before the kernel starts, and should not pay for them.
if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
    from ucnb.lab.lab import Node, NodeConfig

NODE = "node01"
MANIFEST_PATH = "/etc/ultracloud/product-surface.json"


class Parameters(TokenParameters, WarmStartParameters):
    memory_mib: int = Field(256, ge=128, le=8192)
    boot_timeout_s: float = Field(90.0, gt=0, le=3600)
    health_timeout_s: float = Field(60.0, gt=0, le=3600)
    required_components: list[str] = Field(
        default_factory=lambda: list(CANONICAL_PROFILES["single-node dev"]["required"]))
    stop_services: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _services_of_the_profile(self) -> Parameters:
        """A negative control can only stop a component this profile runs: checked before boot."""
        from ucnb import profiles

        profile = profiles.load(self.profile)
        if profile.name == "lab":
            unknown = [n for n in self.stop_services if not profile.component(n).service]
            if unknown:
                runs = ", ".join(n for n, c in profile.components.items() if c.service)
                raise ValueError(f"stop_services: the {profile.name} profile runs no {', '.join(unknown)} "
                                 f"(it runs {runs})")
        return self


LANE = Lane(
    name="single-node-quickstart",
    title="Single-node quickstart",
    parameters=Parameters,
    aliases=("single-node-trial",),
    secret_env_parameters=("bootstrap_token_env",),
    cell_timeout_s=600,
    portable=True,
)


def node_config(run: Run, params: Parameters) -> NodeConfig:
    """The one node, running every required component the profile provides."""
    from ucnb.lab.lab import NodeConfig

    services = tuple(c.service for name in params.required_components
                     if (c := run.profile.component(name)).provided and c.service)
    return NodeConfig(NODE, services=services, memory_mib=params.memory_mib)


COVERAGE = "required components"


@lab_step("service health")
def service_health(run: Run, node: Node) -> pd.DataFrame:
    """Wait for each required component to be healthy, probed from inside the guest.

    A component the profile does not provide is skipped with its reason (recorded first, so a
    failure further on still leaves the coverage complete: "2 of 5 exercised; 3 skipped: …")."""
    import pandas as pd

    params = run.parameters(Parameters)
    components = {name: run.profile.component(name) for name in params.required_components}
    rows: dict[str, dict[str, object]] = {}
    for name, component in components.items():
        if not component.provided or not component.health:
            reason = component.missing or "no health probe declared"
            run.recorder.skip(f"health: {name}", reason, NODE, covers=(COVERAGE, name))
            rows[name] = {"component": name, "stands_in": "—", "healthy": "skipped",
                          "time_to_healthy_s": None, "detail": reason}
        else:
            run.recorder.cover(COVERAGE, name, "not reached")
    probes: dict[str, str] = {name: c.health for name, c in components.items() if c.provided and c.health}
    for name, health in probes.items():
        run.recorder.cover(COVERAGE, name, "failed", "did not become healthy", step=f"health: {name}")
        with run.step(f"health: {name}", NODE) as row:
            wait_until(partial(node.run, health, timeout=10), timeout=params.health_timeout_s,
                       what=f"{name} healthy", node=NODE, recorder=run.recorder)
            since_boot = time.time() - (node.started_at or time.time())
            row.detail = f"healthy {since_boot:.1f}s after boot"
        run.recorder.cover(COVERAGE, name, "exercised", row.detail, step=row.name)
        run.recorder.figure(f"time to healthy: {name}", round(since_boot, 2), "s since power-on")
        rows[name] = {"component": name, "stands_in": components[name].stands_in, "healthy": "yes",
                      "time_to_healthy_s": round(since_boot, 2), "detail": health}
    run.recorder.figure(f"{COVERAGE} exercised", len(probes), f"of {len(components)}")
    run.recorder.figure(f"{COVERAGE} skipped", len(components) - len(probes), f"of {len(components)}")
    table = pd.DataFrame([rows[name] for name in components])
    table.attrs["caption"] = (f"{len(probes)} of {len(components)} {COVERAGE} exercised, "
                              f"probed from inside the guest; time to healthy counts from power-on")
    return table


@lab_step("manifest")
def check_manifest(run: Run, node: Node) -> pd.DataFrame:
    """Read the product-surface manifest shipped in the VM, save and show it as read, and check
    it against the profile.

    On the lab profile this proves the plumbing (image build -> guest -> SSH -> parser), not the
    product: the lab image's manifest is written from this same profile."""
    import pandas as pd

    params = run.parameters(Parameters)
    with run.step("manifest", NODE):
        raw = node.run(f"cat {MANIFEST_PATH}", timeout=10, check=True).stdout
        run.show_text(raw, f"logs/{NODE}-product-surface.json", f"{MANIFEST_PATH} as read from {NODE}")
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LaneFailure(f"{NODE}: {MANIFEST_PATH} is not JSON: {exc}") from None
        expected = run.profile.manifest()
        rows = []
        for key in ("schema", "profile", "platform"):
            ok = run.recorder.check(f"manifest {key}", expected[key], manifest.get(key), node=NODE)
            rows.append({"check": key, "expected": expected[key], "observed": manifest.get(key), "ok": ok})
        listed = manifest.get("components", {})
        for name in params.required_components:
            want = run.profile.component(name).provided
            seen = listed.get(name, {}).get("provided") if name in listed else "absent"
            ok = run.recorder.check(f"manifest component {name}", f"provided={want}",
                                    f"provided={seen}", ok=(seen == want), node=NODE)
            rows.append({"check": f"component {name}", "expected": f"provided={want}",
                         "observed": f"provided={seen}", "ok": ok})
        table = pd.DataFrame(rows)
        if run.profile.name == "lab":
            table.attrs["caption"] = ("Proves the plumbing, not the product: the lab image's manifest is "
                                      "written from the lab profile and checked against that same profile")
        if not table["ok"].all():
            bad = ", ".join(table.loc[~table["ok"], "check"])
            raise LaneFailure(f"{NODE}: manifest does not match the {run.profile.name} profile: {bad}")
        return table


@lab_step("bootstrap token")
def deliver_bootstrap_token(run: Run, node: Node) -> pd.DataFrame:
    """Hand the bootstrap token to the guest as the product's IAM bootstrap file (if one is set)."""
    import pandas as pd

    params = run.parameters(Parameters)
    token = run.secret(params.bootstrap_token_env)
    if token is None:
        return run.skip("bootstrap token", f"{params.bootstrap_token_env} is not set", NODE)
    with run.step("bootstrap token", NODE):
        # Written, then its size read back from the file, in one SSH round trip.
        observed = node.run("mkdir -p /lab/etc && umask 077 && cat > /lab/etc/iam-bootstrap-token && "
                            "wc -c < /lab/etc/iam-bootstrap-token", timeout=10, check=True,
                            stdin=token).stdout.strip()
        if not run.recorder.check("bootstrap token delivered (bytes)", len(token), int(observed or 0),
                                  node=NODE):
            raise LaneFailure(f"{NODE}: bootstrap token file holds {observed} bytes, "
                              f"expected {len(token)}")
    return pd.DataFrame([{"step": "bootstrap token", "delivered to": "/lab/etc/iam-bootstrap-token",
                          "bytes": int(observed)}])


@boots
def boot(run: Run) -> Node:
    """Boot the one VM to SSH, or restore it just-booted with `boot_mode=restore` (ultracloud:
    the product's launcher runs instead)."""
    params = run.parameters(Parameters)
    lab = run.lab([node_config(run, params)], warm=params.boot_mode == "restore")
    run.boot(lab, params.boot_timeout_s, params.boot_mode)
    node = lab[NODE]
    for name in params.stop_services:  # negative control: the lane must notice
        service = run.profile.component(name).service
        if service is None:
            raise ParameterError(f"stop_services: the {run.profile.name} profile runs no {name!r}")
        with run.step(f"negative control: stop {name}", NODE):
            node.run(run.profile.service_manager.stop.format(service=service), timeout=15, check=True)
    return node
