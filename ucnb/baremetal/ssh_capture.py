"""hardware-smoke capture over SSH: the `desired-system active` evidence from the installed host.

Two commands on the host (parameters of the run, defaults for the reference node agent):
`ssh_marker_command` prints the host's marker log (the installer copies its markers onto the disk
before the reboot, the installed system appends its own), `ssh_status_command` prints the node
agent's state as key=value lines (`agent=running|stopped`, `status=`, `generation=`, `system=`,
`source_kind=`, `sha256=`). The marker sequence is checked as for a serial log, with one rule of
its own: a `desired-system-active` marker counts only while the node agent runs and reports that
system active now — a stopped agent converges nothing, whatever its log once said.

Where the connection comes from: a lab node's address (a live lab of this host) is reached from
inside the lab namespace with the lab's pinned host key; any other host needs `ssh_known_hosts`
(its key is never accepted blindly). Outputs are redacted (the run's token, any
`ultracloud.bootstrap_token=`) before they are written.
"""

from __future__ import annotations

import base64
import ipaddress
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paramiko

from ucnb import files
from ucnb.baremetal.hardware_smoke import (
    EXPECTED_MARKERS,
    CaptureResult,
    HardwareSmokeParams,
    _node_name,
    _redact_console,
    _redactor,
    _write_capture,
    judge,
)
from ucnb.errors import InfrastructureError, ParameterError
from ucnb.host import netns
from ucnb.lab.lab import NETWORK_PREFIXES
from ucnb.lab.ssh import CommandResult, GuestShell
from ucnb.markers import parse_text

ACTIVE = "desired-system-active"
LOG_NAME = "ssh-capture.log"


class HostShell(GuestShell):
    """GuestShell's deadline-bound `run` over a connection with a given user, port, key and host keys."""

    def __init__(self, host: str, *, user: str, port: int, key_file: Path,
                 host_keys: paramiko.HostKeys, lab: bool) -> None:
        self.node, self.address = host, host
        self._user, self._port, self._lab = user, port, lab
        try:
            self._pkey = paramiko.PKey.from_path(str(key_file))  # type: ignore[assignment]
        except (OSError, paramiko.SSHException) as exc:
            raise ParameterError(f"ssh_key_file: cannot load {key_file}: {exc}") from None
        self._known = host_keys
        self._log = None
        self._client: paramiko.SSHClient | None = None
        self._connecting = threading.Lock()   # as GuestShell's: one caller (re)connects

    def connect(self, timeout: float = 5.0) -> None:
        if self._lab:
            netns.require_inside(self.address)
        client = paramiko.SSHClient()
        for name, keys in self._known.items():
            for key in keys.values():
                client.get_host_keys().add(name, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.address, port=self._port, username=self._user, pkey=self._pkey, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, allow_agent=False, look_for_keys=False)
        self._client = client


def _lab_node(host: str) -> bool:
    """Whether `host` is a node address of a live lab on this host."""
    from ucnb.lab.registry import list_labs

    return any(info.get("address") == host for lab in list_labs() for info in lab.nodes.values())


def _in_lab_ranges(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(f"{prefix}.0.0/16") for prefix in NETWORK_PREFIXES)


def open_shell(host: str, params: HardwareSmokeParams, *, user: str | None = None,
               key_file: Path | None = None) -> HostShell:
    """A shell to `host`: a lab node from inside the lab namespace (pinned lab host key), else a
    host whose key `ssh_known_hosts` holds. A lab-range address that is no live lab node is refused:
    outside the namespace it would leave the machine."""
    from ucnb.image.keys import lab_keys

    user = user or params.ssh_user
    if _lab_node(host):
        keys = lab_keys()
        key_type, key_data = keys.host_public.split()[:2]
        known = paramiko.HostKeys()
        known.add(host, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)))
        netns.enter()
        return HostShell(host, user=user, port=params.ssh_port, key_file=key_file or params.ssh_key_file
                         or keys.client_private, host_keys=known, lab=True)
    if _in_lab_ranges(host):
        raise ParameterError(f"--ssh {host}: a lab address, but no live lab on this host has that node "
                             "(`ucnb lab status` lists them)")
    if params.ssh_known_hosts is None:
        raise ParameterError(f"--ssh {host}: give ssh_known_hosts (a known_hosts file holding {host}'s key); "
                             "an unknown host key is never accepted")
    try:
        known = paramiko.HostKeys(str(params.ssh_known_hosts))
    except OSError as exc:
        raise ParameterError(f"ssh_known_hosts: cannot read {params.ssh_known_hosts}: "
                             f"{exc.strerror}") from None
    key = key_file or params.ssh_key_file
    if key is None:
        raise ParameterError(f"--ssh {host}: give ssh_key_file (the private key to log in with)")
    return HostShell(host, user=user, port=params.ssh_port, key_file=key, host_keys=known, lab=False)


def parse_status(text: str) -> dict[str, str]:
    """key=value lines (the node agent's status) as a dict; other lines are ignored."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def capture_ssh(run_dir: Path, host: str, *, expected: Sequence[str] = EXPECTED_MARKERS,
                node: str | None = None, user: str | None = None, key_file: Path | None = None,
                environ: Mapping[str, str] | None = None, timeout_s: float = 20.0) -> CaptureResult:
    """Collect the marker log and the node agent's status from `host` over SSH, check the marker
    sequence (see the module doc) and record the verdict in `run_dir` (`ssh-capture.log`,
    `capture.json`, `markers.csv`, `status.env`)."""
    params = HardwareSmokeParams.model_validate_json((run_dir / "parameters.json").read_text())
    shell = open_shell(host, params, user=user, key_file=key_file)
    try:
        markers = _run(shell, params.ssh_marker_command, timeout_s)
        status_out = _run(shell, params.ssh_status_command, timeout_s)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise InfrastructureError(f"--ssh {host}: {type(exc).__name__}: {exc}") from None
    finally:
        shell.close()
    redactor = _redactor(run_dir, environ)
    marker_text = _redact_console(markers.stdout, redactor)
    status_text = _redact_console(status_out.stdout, redactor)
    status = parse_status(status_text)
    seen = parse_text(marker_text)
    agent_active = status.get("agent") == "running" and status.get("status") == "active"
    if not agent_active:
        seen = [m for m in seen if not m.matches(ACTIVE)]
    result = judge(seen, expected)
    why = "" if agent_active else (f"node agent {status.get('agent', 'unknown')}, last status "
                                   f"{status.get('status', 'none')}: {ACTIVE} is not confirmed")
    log = (f"# ssh {shell._user}@{host}:{params.ssh_port}\n$ {params.ssh_marker_command}\n{marker_text}"
           f"\n$ {params.ssh_status_command}\n{status_text}")
    extra: dict[str, Any] = {"ssh": f"{shell._user}@{host}:{params.ssh_port}", "node_agent": status,
                             "node_agent_confirms_active": agent_active, "why": why}
    _write_capture(run_dir, log, result, node or _node_name(run_dir) or host, LOG_NAME, extra)
    if why and result.first_missing:
        files.update_kv(run_dir / "status.env", {"reason": why}, shell_quoted=True)
    return result


def _run(shell: HostShell, command: str, timeout_s: float) -> CommandResult:
    result = shell.run(command, timeout=timeout_s)
    if result.exit_status is None:
        raise InfrastructureError(f"`{command}` on {shell.address} did not finish within {timeout_s:.0f}s")
    return result
