"""A private certificate authority made per run, and the deployer's server certificate from it.

Stands in for an operator's private CA (the seed's `ultracloud.ca_cert_url=` case). Everything is
written into one directory the caller owns (the lab folder): the CA's and the server's private
keys (mode 0600) never leave it; only certificates (public) are copied into evidence.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)   # a run's CA outlives the run, not the week


@dataclass(frozen=True)
class ServerIdentity:
    """The files a TLS server needs, and the CA certificate clients verify it with."""

    cert_file: Path     # the server certificate followed by nothing else (the CA is the anchor)
    key_file: Path      # private: stays in the directory it was made in
    ca_file: Path       # public: what ca_cert_url serves


def _write_private(path: Path, data: bytes) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, common_name: str) -> tuple[Path, Path]:
    """Create a self-signed CA in `directory`: (`ca.crt`, `ca.key`); the key is mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ucnb lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    ca_file, key_file = directory / "ca.crt", directory / "ca.key"
    _write_private(key_file, _key_pem(key))
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_file, key_file


def issue_server_cert(directory: Path, ca_file: Path, ca_key_file: Path, *, common_name: str,
                      addresses: Sequence[str] = (), dns_names: Sequence[str] = ()) -> ServerIdentity:
    """A server certificate for `addresses` (IP SANs) and `dns_names`, signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    names += [x509.DNSName(d) for d in dns_names]
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    _write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServerIdentity(cert_file, key_file, ca_file)


def describe(cert_file: Path) -> dict[str, Any]:
    """What a reviewer wants to see of a certificate: subject, issuer, SANs, validity, fingerprint."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt = [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
        alt += sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        alt = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "subject_alt_names": " ".join(alt),
            "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
            "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()}
