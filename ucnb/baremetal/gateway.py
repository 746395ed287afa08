"""What the lab gateway serves the installers besides the deployer: the private CA and a binary cache.

- A CA made per run (`ucnb.reference.pki`) signs the deployer's certificate for the gateway
  address; its private key and the deployer's stay in the lab folder (removed with the lab). The
  CA certificate is published over plain HTTP (`ultracloud.ca_cert_url=`): it is public, and the
  lab network is the trusted path it arrives over, as the kernel command line is.
- The reference binary cache (`ucnb.reference.cache`) serves every target system prebuilt on the
  host (`ultracloud.binary_cache_url=`).

Both listen on the gateway address inside the lab namespace, so nothing outside the lab reaches
them; their request logs are evidence in the proof root.
"""

from __future__ import annotations

import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ucnb.errors import ParameterError
from ucnb.reference import pki
from ucnb.reference.cache import BinaryCache
from ucnb.reference.deployer import TlsFiles
from ucnb.reference.static import StaticServer

InstallerCA = Literal["run", "other", "none"]


@dataclass(frozen=True)
class BootstrapOptions:
    """How the bootstrap is secured and fed (lane parameters of the same names)."""

    tls: bool = True                       # the deployer serves HTTPS with the run's CA
    installer_ca: InstallerCA = "run"      # the CA the installers are given: the run's, another, none
    binary_cache: bool = True              # systems from the binary cache (else the deployer's bundles)
    allow_unauthenticated: bool = False    # lab only: phone-home without a token

    def __post_init__(self) -> None:
        if not self.tls and not self.allow_unauthenticated:
            raise ParameterError("tls: plain HTTP carries the bootstrap token in the clear; it is allowed "
                                 "only with allow_unauthenticated (a lab deployer that takes no token)")
        if not self.tls and self.installer_ca != "none":
            raise ParameterError("installer_ca: without tls there is no CA to give the installers "
                                 "(set installer_ca=none)")


@dataclass
class Gateway:
    """The CA files, the CA publication and the binary cache of one lab."""

    options: BootstrapOptions
    pki_dir: Path
    ca_file: Path | None = None
    deployer_tls: TlsFiles | None = None
    ca_cert_url: str | None = None            # what the installers are given (None: no CA parameter)
    publisher: StaticServer | None = None
    cache: BinaryCache | None = None
    servers: list[StaticServer | BinaryCache] = field(default_factory=list)

    def client_context(self) -> ssl.SSLContext | None:
        """A client context that trusts the run's CA only (the harness's admin calls)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def binary_cache_url(self) -> str | None:
        return self.cache.url if self.cache is not None else None

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_gateway(lab_dir: Path, evidence_dir: Path, host: str, options: BootstrapOptions,
                  run_label: str) -> Gateway:
    """Make the CA (when TLS), publish the CA certificate and start the binary cache (when asked)."""
    gateway = Gateway(options, lab_dir / "pki")
    evidence_dir.mkdir(parents=True, exist_ok=True)
    if options.tls:
        ca_file, ca_key = pki.make_ca(gateway.pki_dir, f"ucnb run {run_label} bootstrap CA")
        server = pki.issue_server_cert(gateway.pki_dir, ca_file, ca_key, common_name="deployer",
                                       addresses=[host])
        gateway.ca_file, gateway.deployer_tls = ca_file, TlsFiles(server.cert_file, server.key_file)
        public = lab_dir / "ca-public"
        public.mkdir(exist_ok=True)
        shutil.copy2(ca_file, public / "ca.crt")
        if options.installer_ca == "other":   # a CA that did not sign the deployer: must be refused
            other, _ = pki.make_ca(gateway.pki_dir / "other", f"ucnb run {run_label} unrelated CA")
            shutil.copy2(other, public / "other-ca.crt")
            shutil.copy2(other, evidence_dir / "other-ca.crt")
        # Certificates only (public) go to the evidence; the keys never leave pki_dir.
        shutil.copy2(ca_file, evidence_dir / "ca.crt")
        shutil.copy2(server.cert_file, evidence_dir / "deployer.crt")
        if options.installer_ca != "none":
            gateway.publisher = StaticServer(public, (host, 0), evidence_dir / "ca-requests.jsonl").start()
            gateway.servers.append(gateway.publisher)
            name = "ca.crt" if options.installer_ca == "run" else "other-ca.crt"
            gateway.ca_cert_url = f"{gateway.publisher.url}/{name}"
    if options.binary_cache:
        gateway.cache = BinaryCache(lab_dir / "binary-cache", (host, 0),
                                    evidence_dir.parent / "binary-cache" / "requests.jsonl").start()
        gateway.servers.append(gateway.cache)
    return gateway
