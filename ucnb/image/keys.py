"""SSH keys generated per host (never committed): the harness's client key and the guests' host key.

The guest host key is baked into the image and pinned by the harness, so a connection to anything
else at a lab address is refused.
"""

from __future__ import annotations

import fcntl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ucnb import paths
from ucnb.files import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class LabKeys:
    client_private: Path   # OpenSSH format, for paramiko and `ssh -i`
    client_public: str     # authorized_keys line
    host_private_dropbear: Path
    host_public: str       # "ssh-ed25519 AAAA…", pinned in known_hosts


def _write_keypair(private: Path) -> str:
    key = Ed25519PrivateKey.generate()
    atomic_write_bytes(private, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()), mode=0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    atomic_write_text(private.with_suffix(".pub"), public + "\n")
    return public


def lab_keys() -> LabKeys:
    """Load the host's lab keys, generating them on first use."""
    directory = paths.work_root() / "keys"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    client, host = directory / "client_ed25519", directory / "guest_host_ed25519"
    dropbear = directory / "guest_host_ed25519.dropbear"
    with open(directory / ".lock", "a") as lock:   # two first runs side by side make one set
        fcntl.flock(lock, fcntl.LOCK_EX)
        for key in (client, host):
            if not key.exists() or not key.with_suffix(".pub").exists():
                _write_keypair(key)
        if not dropbear.exists() or dropbear.stat().st_mtime < host.stat().st_mtime:
            subprocess.run(["dropbearconvert", "openssh", "dropbear", str(host), str(dropbear)],
                           check=True, capture_output=True)
    return LabKeys(client, client.with_suffix(".pub").read_text().strip(), dropbear,
                   host.with_suffix(".pub").read_text().strip())
