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
from ucnb.lanes import Lane, TokenParameters
from ucnb.profiles import CANONICAL_PROFILES

# pandas and the lab layer are imported where used: `ucnb run` reads this module's schema
# before the kernel starts, and should not pay for them.
if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
    from ucnb.lab.lab import Node, NodeConfig

NODE = "node01"
MANIFEST_PATH = "/etc/ultracloud/product-surface.json"


class Parameters(TokenParameters):
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
    ultracloud_attrs=("single-node-trial-vm.drvPath",
                      "nixosConfigurations.single-node-quickstart.config.system.build.toplevel.drvPath"),
)


def node_config(run: Run, params: Parameters) -> NodeConfig:
    """The one node, running every required component the profile provides."""
    from ucnb.lab.lab import NodeConfig

    services = tuple(c.service for name in params.required_components
                     if (c := run.profile.component(name)).provided and c.service)
    return NodeConfig(NODE, services=services, memory_mib=params.memory_mib)


@lab_step("service health")
def service_health(run: Run, node: Node) -> pd.DataFrame:
    """Wait for each required component to be healthy, probed from inside the guest."""
    import pandas as pd

    params = run.parameters(Parameters)
    rows: list[dict[str, object]] = []
    for name in params.required_components:
        component = run.profile.component(name)
        if not component.provided or not component.health:
            run.recorder.skip(f"health: {name}", component.missing or "no health probe declared", NODE)
            rows.append({"component": name, "stands_in": "—", "healthy": "skipped",
                         "time_to_healthy_s": None, "detail": component.missing})
            continue
        with run.step(f"health: {name}", NODE) as row:
            wait_until(partial(node.run, component.health, timeout=10), timeout=params.health_timeout_s,
                       what=f"{name} healthy", node=NODE, recorder=run.recorder)
            since_boot = time.time() - (node.started_at or time.time())
            row.detail = f"healthy {since_boot:.1f}s after boot"
        rows.append({"component": name, "stands_in": component.stands_in, "healthy": "yes",
                     "time_to_healthy_s": round(since_boot, 2), "detail": component.health})
    return pd.DataFrame(rows)


@lab_step("manifest")
def check_manifest(run: Run, node: Node) -> pd.DataFrame:
    """Read the product-surface manifest shipped in the VM and check it against the profile."""
    import pandas as pd

    params = run.parameters(Parameters)
    with run.step("manifest", NODE):
        raw = node.run(f"cat {MANIFEST_PATH}", timeout=10, check=True).stdout
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
        node.run("mkdir -p /lab/etc && umask 077 && cat > /lab/etc/iam-bootstrap-token", timeout=10,
                 check=True, stdin=token)
        observed = node.run("wc -c < /lab/etc/iam-bootstrap-token", timeout=10, check=True).stdout.strip()
        if not run.recorder.check("bootstrap token delivered (bytes)", len(token), int(observed or 0),
                                  node=NODE):
            raise LaneFailure(f"{NODE}: bootstrap token file holds {observed} bytes, "
                              f"expected {len(token)}")
    return pd.DataFrame([{"step": "bootstrap token", "delivered to": "/lab/etc/iam-bootstrap-token",
                          "bytes": int(observed)}])


@boots
def boot(run: Run) -> Node:
    """Boot the one VM to SSH (ultracloud: the product's launcher runs instead)."""
    params = run.parameters(Parameters)
    lab = run.lab([node_config(run, params)])
    lab.boot(timeout=params.boot_timeout_s)
    node = lab[NODE]
    for name in params.stop_services:  # negative control: the lane must notice
        service = run.profile.component(name).service
        if service is None:
            raise ParameterError(f"stop_services: the {run.profile.name} profile runs no {name!r}")
        with run.step(f"negative control: stop {name}", NODE):
            node.run(run.profile.service_manager.stop.format(service=service), timeout=15, check=True)
    return node
