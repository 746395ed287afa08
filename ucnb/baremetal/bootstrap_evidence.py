"""Evidence views of a bare-metal bootstrap: TLS (who vouched for the deployer), where each node's
system came from, and which identity each node used. Tables from the deployer's state and logs,
the gateway's logs and the certificates; each records its checks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from ucnb.baremetal.harness import BareMetalLab, phone_home_requests
from ucnb.reference import pki
from ucnb.reference.deployer import STATE_FILE


def _state(bare: BareMetalLab) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((bare.deployer.state_dir / STATE_FILE).read_text())
    return state


def _last_phone_home(bare: BareMetalLab, node_id: str) -> dict[str, Any]:
    homes = (_state(bare)["nodes"].get(node_id) or {}).get("phone_homes") or [{}]
    last: dict[str, Any] = homes[-1]
    return last


def tls_evidence(bare: BareMetalLab) -> pd.DataFrame:
    """The deployer's certificate and its issuer (the run's CA), then per node the CA it was given
    and the one it verified the deployer with (its sha256, as it phoned home)."""
    tls_dir = bare.run.proof_root / "tls"
    gateway = bare.gateway
    rows: list[dict[str, Any]] = []
    scheme = bare.deployer_url.split(":", 1)[0]
    if gateway is None or gateway.ca_file is None:
        # Plain HTTP only as configured: a lab deployer that takes no token (BootstrapOptions).
        auth = "allow_unauthenticated" if bare.deployer.app.allow_unauthenticated else "token required"
        bare.run.recorder.check("deployer transport", "http, allow_unauthenticated", f"{scheme}, {auth}")
        return pd.DataFrame([{"what": "deployer", "url": bare.deployer_url,
                              "detail": "plain HTTP (allow_unauthenticated lab deployer): no certificate"}])
    bare.run.recorder.check("deployer transport", "https", scheme)
    deployer_cert = pki.describe(tls_dir / "deployer.crt")
    ca_cert = pki.describe(tls_dir / "ca.crt")
    ca_digest = hashlib.sha256((tls_dir / "ca.crt").read_bytes()).hexdigest()
    rows.append({"what": "deployer certificate", "url": bare.deployer_url, **deployer_cert})
    rows.append({"what": "run CA (ca.crt)", "url": gateway.ca_cert_url or "not given to the installers",
                 **ca_cert, "file_sha256": ca_digest})
    bare.run.recorder.check("deployer certificate issuer", ca_cert["subject"], deployer_cert["issuer"])
    for machine in bare.nodes.values():
        home = _last_phone_home(bare, machine.node_id)
        trusted = home.get("ca_cert_sha256")
        rows.append({"what": f"CA {machine.name} verified with", "url": gateway.ca_cert_url or "none",
                     "file_sha256": trusted or "none reported",
                     "detail": "the run's CA" if trusted == ca_digest else "not the run's CA"})
        if home:
            bare.run.recorder.check(f"installer trusted the run CA {machine.name}", ca_digest, trusted,
                                    node=machine.name)
    return pd.DataFrame(rows)


def tls_failures(bare: BareMetalLab) -> pd.DataFrame:
    """Connections whose TLS handshake the deployer saw fail (e.g. a client that did not trust it)."""
    table = phone_home_requests(bare)
    return table[table["method"] == "TLS"][["time", "client", "error"]].reset_index(drop=True)


def system_sources(bare: BareMetalLab) -> pd.DataFrame:
    """Per node: where its install bundle came from, the system it runs, where that came from
    (binary cache or the deployer's bundles) and its checksum, against the checksum the deployer
    publishes for that system."""
    cache = bare.gateway.cache if bare.gateway else None
    cache_requests = cache.requests() if cache else []
    deployer_requests = phone_home_requests(bare)
    rows = []
    for machine in bare.nodes.values():
        configuration = bare.cluster.node_classes[machine.node_class].install_plan.nixos_configuration
        from_cache = any(r["client"] == machine.node.address and r["status"] == 200
                         and r["path"] == f"/bundles/{configuration}.tar.gz" for r in cache_requests)
        mine = deployer_requests[(deployer_requests["client"] == machine.node.address)
                                 & (deployer_requests["status"] == 200)]
        from_deployer = (mine["path"] == f"/api/v1/bundles/{configuration}").any()
        bundle_source = "binary-cache" if from_cache else "deployer" if from_deployer else "none seen"
        record = _state(bare)["nodes"].get(machine.node_id) or {}
        active = [o for o in record.get("observed", []) if o["status"] == "active"]
        observed = active[-1] if active else {}
        system = str(observed.get("detail") or "")
        archive = bare.deployer.app.bundles.archive(system) if system else None
        published = archive[1] if archive else None
        kind = str(observed.get("source") or "").split(" ", 1)[0]
        fetched = [r["path"] for r in cache_requests if r["client"] == machine.node.address
                   and r["path"].startswith("/systems/")]
        rows.append({"node": machine.name, "bundle": configuration, "bundle_source": bundle_source,
                     "system": system, "source": kind,
                     "url": str(observed.get("source") or "").partition(" ")[2],
                     "sha256": observed.get("sha256"), "deployer_sha256": published,
                     "cache_requests": " ".join(fetched) or "none"})
        bare.run.recorder.check(f"bundle source {machine.name}", "binary-cache" if cache else "deployer",
                                bundle_source, node=machine.name)
        bare.run.recorder.check(f"system source {machine.name}",
                                "binary-cache" if cache else "deployer-bundle", kind, node=machine.name)
        bare.run.recorder.check(f"system checksum {machine.name}", published, observed.get("sha256"),
                                node=machine.name)
    return pd.DataFrame(rows)


def identities(bare: BareMetalLab) -> pd.DataFrame:
    """Per node: its DMI serial, the overrides on its kernel command line, and the identity the
    deployer recorded with where the installer took it from."""
    rows = []
    for machine in bare.nodes.values():
        spec = machine.machine
        home = _last_phone_home(bare, machine.node_id)
        expected_sources = ("kernel-parameter" if spec and spec.node_id else "dmi-serial",
                            "kernel-parameter" if spec and spec.hostname else "node-id")
        rows.append({"machine": machine.name, "dmi_serial": machine.node.spec.dmi_serial,
                     "node_id_param": (spec.node_id if spec else "") or "—",
                     "hostname_param": (spec.hostname if spec else "") or "—",
                     "node_id": home.get("node_id"), "node_id_source": home.get("node_id_source"),
                     "hostname": home.get("hostname"), "hostname_source": home.get("hostname_source")})
        bare.run.recorder.check(
            f"identity {machine.name}",
            f"{machine.node_id} ({expected_sources[0]}), {machine.hostname} ({expected_sources[1]})",
            f"{home.get('node_id')} ({home.get('node_id_source')}), {home.get('hostname')} "
            f"({home.get('hostname_source')})", node=machine.name)
    return pd.DataFrame(rows)
