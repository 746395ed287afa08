"""SSH into guests with paramiko: pinned host key, retries while booting, real deadlines."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ucnb.errors import LaneFailure
from ucnb.host import netns
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import paramiko
else:  # `ucnb run` imports this module to validate parameters: paramiko once used
    paramiko = lazy_module("paramiko")


@dataclass(frozen=True)
class CommandResult:
    node: str
    command: str
    exit_status: int | None   # None: the deadline passed before the command finished
    stdout: str
    stderr: str
    duration: float

    def __bool__(self) -> bool:
        return self.exit_status == 0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def __str__(self) -> str:
        """The status and the last line of output (tools print their error last; the full
        output is in the node's command log)."""
        status = "timed out" if self.exit_status is None else f"exit {self.exit_status}"
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return f"{status}: {lines[-1][-300:]}" if lines else status


class GuestShell:
    """One SSH connection to one guest, reopened when the guest went away."""

    def __init__(self, node: str, address: str, client_key: Path, host_key: str,
                 log: Callable[[CommandResult], None] | None = None) -> None:
        self.node, self.address = node, address
        self._pkey = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        key_type, key_data = host_key.split()[:2]
        self._host_key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
        self._log = log
        self._client: paramiko.SSHClient | None = None
        # Callers on several threads (a wait beside a step): one of them (re)connects.
        self._connecting = threading.Lock()

    def connect(self, timeout: float = 5.0) -> None:
        """Open the connection once (no retry): refuses outside the lab network namespace."""
        netns.guard(self.address)
        client = paramiko.SSHClient()
        client.get_host_keys().add(self.address, self._host_key.get_name(), self._host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.address, username="root", pkey=self._pkey, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                       look_for_keys=False)
        self._client = client

    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def close(self) -> None:
        """Drop the connection (always after faulting the guest: keepalives miss a dead peer)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, timeout: float = 30.0, check: bool = False,
            stdin: str | None = None, log_output: bool = True) -> CommandResult:
        """Run a command with an overall deadline, draining stdout and stderr together.

        The log callback gets the result; without `log_output` only its sizes (the caller saves
        the output elsewhere, e.g. guest logs pulled into files of their own)."""
        start = time.monotonic()
        with self._connecting:
            if not self.connected():
                self.close()
                self.connect(timeout=min(timeout, 10.0))
            assert self._client is not None
            transport = self._client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeout)
        # An interrupt (the stop button, Ctrl-C) closes the channel at once: the guest's sshd
        # ends the command, and the connection stays usable for the next one.
        try:
            channel.exec_command(command)
            out, err, status = _exchange(channel, stdin, start + timeout)
        finally:
            channel.close()
        result = CommandResult(self.node, command, status, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - start)
        if self._log:
            self._log(result if log_output else dataclasses.replace(
                result, stdout=f"({len(result.stdout)} characters, saved separately)\n",
                stderr=f"({len(result.stderr)} characters, saved separately)\n" if result.stderr else ""))
        if check and not result.ok:
            raise LaneFailure(f"{self.node}: `{command}` failed ({result})")
        return result


def _exchange(channel: paramiko.Channel, stdin: str | None, deadline: float
              ) -> tuple[bytearray, bytearray, int | None]:
    """Send `stdin`, then drain stdout and stderr together until the command exits or the
    deadline passes (status None)."""
    out, err = bytearray(), bytearray()
    status: int | None = None
    timed_out = False
    if stdin is not None:
        # A slow reader (sqlite3 executing a dump) keeps the window shut for a while: the whole
        # deadline applies to sending, not the short per-read timeout below.
        channel.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            channel.sendall(stdin.encode())
            channel.shutdown_write()
        except TimeoutError:
            timed_out = True   # reported as a command that timed out (no exit status)
    channel.settimeout(0.2)
    while not timed_out:
        drained = False
        while channel.recv_ready():
            out += channel.recv(65536)
            drained = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            drained = True
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            status = channel.recv_exit_status()
            break
        if time.monotonic() > deadline:
            break
        if not drained:
            try:
                chunk = channel.recv(65536)
                if chunk:
                    out += chunk
            except TimeoutError:
                pass
    return out, err, status
