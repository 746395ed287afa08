"""Secrets never reach an artifact: every known secret value is replaced before anything is written."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


class Redactor:
    """Holds the secret values of one run and removes them from text, bytes and files."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        for s in secrets or []:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            self._secrets.add(secret)

    def add_file(self, path: Path) -> None:
        """Register every line of a generated-secrets file."""
        if path.exists():
            for line in path.read_text().splitlines():
                self.add(line)

    def add_env(self, name: str) -> str | None:
        """Register the value of environment variable `name` as a secret and return it."""
        value = os.environ.get(name)
        self.add(value)
        return value

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def text(self, value: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            value = value.replace(s, MASK)
        return value

    def data(self, value: bytes) -> bytes:
        for s in sorted(self._secrets, key=len, reverse=True):
            value = value.replace(s.encode(), MASK.encode())
        return value

    def file(self, path: Path) -> bool:
        """Redact a file in place; True when it changed."""
        raw = path.read_bytes()
        clean = self.data(raw)
        if clean != raw:
            path.write_bytes(clean)
            return True
        return False

    def tree(self, root: Path) -> list[Path]:
        """Redact every regular file under root; returns the files that held a secret."""
        return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and self.file(p)]


SECRETS_ENV = "UCNB_SECRET_ENV_NAMES"  # the runner tells the kernel which variables hold secrets


def generated_secrets_file(run_id: str) -> Path:
    """Where a run's kernel lists the secrets it generated, for the runner's redaction pass.

    Outside the proof root, readable by root only, deleted once the run is sealed.
    """
    from ucnb import paths

    directory = paths.work_root() / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory / run_id


def from_environment(environ: Mapping[str, str] | None = None) -> Redactor:
    """A redactor for the secrets the runner declared (comma-separated variable names)."""
    environ = os.environ if environ is None else environ
    redactor = Redactor()
    for name in filter(None, environ.get(SECRETS_ENV, "").split(",")):
        redactor.add(environ.get(name))
    return redactor
