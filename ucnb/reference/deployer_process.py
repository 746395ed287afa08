"""The reference deployer as a process of its own (its CLI), for lanes that restart it.

A restart of a process keeps nothing but what the deployer wrote to its state directory, which is
what a durability proof wants to show. Tokens reach the child through its environment (never its
argv, which /proc shows to everyone); the child inherits the network namespace of the thread that
starts it, so started from a lab-joined thread it binds inside the lab namespace.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ucnb.errors import InfrastructureError
from ucnb.reference.deployer import ADMIN_TOKEN_ENV, BOOTSTRAP_TOKEN_ENV
from ucnb.reference.pki import ServerIdentity


class DeployerProcess:
    """`python -m ucnb.reference.deployer` serving `cluster_file` from `state_dir`."""

    def __init__(self, state_dir: Path, cluster_file: Path, *, host: str, bootstrap_token: str,
                 admin_token: str, bundle_dir: Path, log: Path, tls: ServerIdentity | None = None) -> None:
        self.state_dir, self.cluster_file, self.host, self.tls = state_dir, cluster_file, host, tls
        self.bundle_dir, self.log = bundle_dir, log
        self._env = {**os.environ, BOOTSTRAP_TOKEN_ENV: bootstrap_token, ADMIN_TOKEN_ENV: admin_token}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> str:
        """Start the process and wait for its `listening` line; returns its URL."""
        if self.process is not None:
            return self.url
        self.bundle_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "ucnb.reference.deployer", "--state-dir", str(self.state_dir),
                "--cluster", str(self.cluster_file), "--bind", f"{self.host}:0",
                "--bundle-dir", str(self.bundle_dir)]
        if self.tls is not None:   # HTTPS: off loopback the deployer serves plain HTTP to no one
            argv += ["--tls-cert", str(self.tls.cert_file), "--tls-key", str(self.tls.key_file)]
        with self.log.open("a") as stderr:
            self.process = subprocess.Popen(argv, env=self._env, stdout=subprocess.PIPE, stderr=stderr,
                                            stdin=subprocess.DEVNULL, text=True)
        self.starts += 1
        assert self.process.stdout is not None
        line = _read_line(self.process.stdout, timeout)
        try:
            event = json.loads(line)
            self.url = str(event["url"])
        except (json.JSONDecodeError, KeyError, TypeError):
            code = self.process.poll()
            self.stop()
            raise InfrastructureError(f"the reference deployer did not start (exit {code}, said {line!r}; "
                                      f"see {self.log})") from None
        return self.url

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); returns the exit status. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def close(self) -> None:
        """Stop, for teardown hooks (nothing to return)."""
        self.stop()

    def restart(self, timeout: float = 30.0) -> str:
        """Stop the process, start a new one on the same state; returns the new URL."""
        self.stop()
        return self.start(timeout)


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line of a child's stdout within `timeout` ("" when none came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return stream.readline().strip()
    return ""
