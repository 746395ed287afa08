"""hardware-smoke: the bring-up pack for a physical node (seed: "Hardware Bring-Up Pack").

- `preflight` writes what an operator needs under `<work>/hardware-smoke/<run-id>` (kernel
  parameters, expected and failure markers, a handoff note, `status.env`) and refreshes `latest`;
  without a usable transport (USB media or BMC/Redfish access) the run is `blocked` and
  `missing-requirements.txt` names exactly the inputs that are missing.
- `capture` checks a supplied serial log for the same marker sequence as baremetal-iso and
  records `passed` or `failed` with the first missing or failed marker; `capture_ssh`
  (`ucnb.baremetal.ssh_capture`) collects the same evidence over SSH from the installed host: its
  marker log and the node agent's desired-system status.
- `run` presents the ISO to the machine: written to USB media (a block device, or an image file
  standing in for one), or inserted as Redfish virtual media followed by a power-on; the ISO is
  built with the token substituted only in a private temporary directory, removed afterwards.

The bootstrap token is never written: `kernel-params.txt` carries a reference to where it comes
from (`${ULTRACLOUD_BOOTSTRAP_TOKEN}` or `${file:/path}`), substituted only when the ISO is booted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ucnb import files, paths
from ucnb.errors import LaneFailure, ParameterError
from ucnb.evidence.redact import MASK, MIN_SECRET_LENGTH, Redactor
from ucnb.files import atomic_write_text
from ucnb.installer.build import InstallerArtifacts, build_iso
from ucnb.lab import leases
from ucnb.markers import Marker, SequenceCheck, check_sequence, is_failure, parse_text
from ucnb.reference.cluster import NAME_PATTERN, describe_validation_error
from ucnb.reference.deployer import BOOTSTRAP_TOKEN_ENV, read_secret

# The proven sequence from verify-baremetal-iso.sh; hardware expects the same (seed).
EXPECTED_MARKERS: tuple[str, ...] = (
    "pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
    "install.disko.complete", "install.nixos-install.complete", "reboot", "post-install.boot",
    "desired-system-active",
)
# Any marker with a `failed` segment ends the run (`ucnb.markers.is_failure`); these are the
# stage failures an operator should expect to see named.
FAILURE_MARKERS: tuple[str, ...] = (
    "pre-install.phone-home.failed", "install.bundle-download.failed", "install.disko.failed",
    "install.nixos-install.failed", "post-install.failed", "desired-system.failed",
)
REDFISH_PASSWORD_ENV = "ULTRACLOUD_REDFISH_PASSWORD"
LANE_DIR = "hardware-smoke"
# A kernel command line echoed on the console (the kernel prints it at boot) carries the token.
TOKEN_PARAM_RE = re.compile(r"(ultracloud\.bootstrap_token=)\S+")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Status = Literal["blocked", "ready", "media-presented", "passed", "failed"]


class HardwareSmokeParams(BaseModel):
    """Inputs of a hardware bring-up; secrets are named (env var, file), never given as values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployer_url: str | None = None                     # routable from the machine's live ISO
    bootstrap_token_env: str = Field(BOOTSTRAP_TOKEN_ENV, pattern=ENV_NAME_PATTERN)
    bootstrap_token_file: Path | None = None            # wins over the env var when set
    deployer_allows_unauthenticated: bool = False       # lab-only deployer: no token parameter
    ca_cert_url: str | None = None                      # deployer TLS with a private CA
    binary_cache_url: str | None = None                 # fetch host-built closures
    node_id: str | None = Field(None, pattern=NAME_PATTERN)    # override DMI-derived identity
    hostname: str | None = Field(None, pattern=NAME_PATTERN)
    transport: Literal["auto", "usb", "redfish"] = "auto"
    usb_device: Path | None = None                      # block device, or an image file in the lab
    redfish_url: str | None = None                      # BMC Redfish service root
    redfish_username: str | None = None
    redfish_password_env: str = Field(REDFISH_PASSWORD_ENV, pattern=ENV_NAME_PATTERN)
    redfish_system_id: str | None = None                # default: the BMC's only (or first) system
    redfish_boot_override: bool = False                 # PATCH Boot to Cd (else firmware order decides)
    # The address the BMC fetches the ISO from (this host's); default: ours on the route to the BMC.
    redfish_media_address: str | None = None
    extra_kernel_params: list[str] = Field(default_factory=list)  # e.g. a static ultracloud.ip=
    # capture over SSH from the installed host (`capture --ssh HOST`)
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_key_file: Path | None = None                    # private key; a lab node: the lab's key
    ssh_port: int = Field(22, ge=1, le=65535)
    ssh_known_hosts: Path | None = None                 # a host outside the lab (lab host keys are pinned)
    # What the installed host answers (the reference node agent's; the product's nix-agent differs).
    ssh_marker_command: str = Field("cat /disk/var/log/ultracloud/markers.log", min_length=1)
    ssh_status_command: str = Field("ultracloud-node-agent status", min_length=1)

    @field_validator("redfish_media_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)   # a ValueError names the parameter
        return value

    @field_validator("extra_kernel_params")
    @classmethod
    def _kernel_params(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+(=[^\s'\"\\]*)?", value):
                raise ValueError(f"{value!r} is not one kernel parameter (name[=value], no spaces or quotes)")
        return values

    @field_validator("deployer_url", "ca_cert_url", "binary_cache_url", "redfish_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        # Kernel parameters are space-separated, so a URL with whitespace would split in two.
        if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", value):
            raise ValueError("must be an http(s)://host[:port][/path] URL without spaces")
        return value.rstrip("/")


def load_params(values: Mapping[str, Any]) -> HardwareSmokeParams:
    """Validate parameters (a parameter file's mapping); problems raise ParameterError."""
    try:
        return HardwareSmokeParams.model_validate(values)
    except ValidationError as exc:
        raise ParameterError(f"hardware-smoke parameters: {describe_validation_error(exc)}") from None


# --------------------------------------------------------------------------------------------
# Kernel parameters and requirements


def token_reference(params: HardwareSmokeParams) -> str:
    """Where the bootstrap token comes from, as written into kernel-params.txt."""
    if params.bootstrap_token_file is not None:
        return f"${{file:{params.bootstrap_token_file}}}"
    return f"${{{params.bootstrap_token_env}}}"


def kernel_params(params: HardwareSmokeParams, *, reveal: bool = False,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """The installer's `ultracloud.*` kernel parameters, in the seed's order.

    With `reveal` the token reference is replaced by the secret itself: only for the moment the
    ISO is booted (never write that result to disk).
    """
    result = [f"ultracloud.deployer_url={params.deployer_url or '<missing: deployer_url>'}"]
    if not params.deployer_allows_unauthenticated:
        token = token_reference(params)
        if reveal:
            token = read_secret(params.bootstrap_token_env, params.bootstrap_token_file, environ) or ""
            if not token:
                raise ParameterError(f"no bootstrap token: {token_reference(params)} is empty or unset")
        result.append(f"ultracloud.bootstrap_token={token}")
    optional = {"ca_cert_url": params.ca_cert_url, "binary_cache_url": params.binary_cache_url,
                "node_id": params.node_id, "hostname": params.hostname}
    result += [f"ultracloud.{key}={value}" for key, value in optional.items() if value]
    return result + list(params.extra_kernel_params)


def _usb_problems(params: HardwareSmokeParams) -> list[str]:
    device = params.usb_device
    if device is None:
        return ["usb_device: no USB device given (e.g. /dev/disk/by-id/usb-<vendor>_<model>_<serial>-0:0)"]
    try:
        mode = device.stat().st_mode
    except OSError:
        return [f"usb_device: {device} does not exist"]
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        return [f"usb_device: {device} is neither a block device nor an image file"]
    if not os.access(device, os.W_OK):
        return [f"usb_device: {device} is not writable by this user"]
    return []


def _redfish_problems(params: HardwareSmokeParams, environ: Mapping[str, str]) -> list[str]:
    problems = []
    if not params.redfish_url:
        problems.append("redfish_url: no BMC Redfish endpoint given (e.g. https://bmc.example/redfish/v1)")
    if not params.redfish_username:
        problems.append("redfish_username: no BMC user given")
    password = environ.get(params.redfish_password_env)
    if not password:
        problems.append(f"redfish password: environment variable {params.redfish_password_env} is not set")
    elif len(password) < MIN_SECRET_LENGTH:
        problems.append(f"redfish password: {params.redfish_password_env} {_too_short(password)}")
    return problems


def _too_short(secret: str) -> str:
    return (f"has {len(secret)} characters: secrets shorter than {MIN_SECRET_LENGTH} cannot be masked "
            "safely in artifacts, so it is refused (use a longer one)")


def _token_problems(params: HardwareSmokeParams, environ: Mapping[str, str]) -> list[str]:
    if params.deployer_allows_unauthenticated:
        return []
    if params.bootstrap_token_file is not None:
        try:
            token = params.bootstrap_token_file.read_text().strip()
        except OSError:
            return [f"bootstrap token: file {params.bootstrap_token_file} is not readable"]
        if token and len(token) < MIN_SECRET_LENGTH:
            return [f"bootstrap token: file {params.bootstrap_token_file} {_too_short(token)}"]
        return [] if token else [f"bootstrap token: file {params.bootstrap_token_file} is empty"]
    token = environ.get(params.bootstrap_token_env, "")
    if token and len(token) < MIN_SECRET_LENGTH:
        return [f"bootstrap token: {params.bootstrap_token_env} {_too_short(token)}"]
    if token:
        return []
    return [f"bootstrap token: environment variable {params.bootstrap_token_env} is not set "
            "(or give bootstrap_token_file)"]


def requirements(params: HardwareSmokeParams,
                 environ: Mapping[str, str] | None = None) -> tuple[str | None, list[str]]:
    """The transport a run would use (`usb`/`redfish`, None when neither works) and what is missing."""
    env = os.environ if environ is None else environ
    usb = _usb_problems(params) if params.transport in ("auto", "usb") else None
    redfish = _redfish_problems(params, env) if params.transport in ("auto", "redfish") else None
    transport = "usb" if usb == [] else "redfish" if redfish == [] else None
    missing = [] if transport else [*(usb or []), *(redfish or [])]
    deployer = [] if params.deployer_url else [
        "deployer_url: no deployer URL given (the address the live ISO phones home to, "
        "e.g. http://10.0.0.5:8088)"]
    return transport, deployer + missing + _token_problems(params, env)


# --------------------------------------------------------------------------------------------
# Run directory, status.env, latest


def new_run_id() -> str:
    """`<UTC stamp>-<run id>`: the dated folder name every proof root uses."""
    return f"{files.utc_stamp()}-{files.new_run_id()}"


def read_status(run_dir: Path) -> dict[str, str]:
    """The key=value pairs of `<run_dir>/status.env` (empty when there is none)."""
    return files.read_kv(run_dir / "status.env", shell_quoted=True)


def write_status(run_dir: Path, **updates: object) -> dict[str, str]:
    """Merge `updates` into status.env (shell-sourceable; a None value removes the key)."""
    return files.update_kv(run_dir / "status.env",
                           {**updates, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")},
                           shell_quoted=True)


# --------------------------------------------------------------------------------------------
# Preflight


def preflight(work_root: Path | None, params: HardwareSmokeParams, *, run_id: str | None = None,
              environ: Mapping[str, str] | None = None) -> Path:
    """Write the bring-up pack for one run and return its directory.

    `status.env` says `status=ready` with the chosen transport, or `status=blocked` with
    `missing-requirements.txt` listing each missing input. `work_root` defaults to ucnb's.
    """
    run_id = run_id or new_run_id()
    if not re.match(NAME_PATTERN, run_id):
        raise ParameterError(f"run id {run_id!r} must be a plain name (letters, digits, . _ -)")
    lane_dir = (work_root or paths.work_root()) / LANE_DIR
    run_dir = lane_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ParameterError(f"run {run_id!r} already exists under {lane_dir}") from None
    transport, missing = requirements(params, environ)
    status: Status = "blocked" if missing else "ready"

    atomic_write_text(run_dir / "parameters.json", params.model_dump_json(indent=2) + "\n")
    atomic_write_text(run_dir / "kernel-params.txt", " ".join(kernel_params(params)) + "\n")
    atomic_write_text(run_dir / "expected-markers.txt", "".join(f"{m}\n" for m in EXPECTED_MARKERS))
    atomic_write_text(run_dir / "failure-markers.txt", _failure_markers_text())
    if missing:
        atomic_write_text(run_dir / "missing-requirements.txt", "".join(f"{m}\n" for m in missing))
    atomic_write_text(run_dir / "operator-handoff.md", _handoff(run_id, params, status, transport, missing))
    write_status(run_dir, status=status, stage="preflight", run_id=run_id, transport=transport or "none",
                 missing_count=len(missing))
    files.point_link(lane_dir / "latest", run_id)
    return run_dir


def _failure_markers_text() -> str:
    return ("# Any ULTRACLOUD_MARKER whose name has a `failed` segment ends the run at once\n"
            "# (e.g. `install.disko.failed.node01`). Stage failures:\n"
            + "".join(f"{m}\n" for m in FAILURE_MARKERS))


def _handoff(run_id: str, params: HardwareSmokeParams, status: Status, transport: str | None,
             missing: Sequence[str]) -> str:
    cmdline = " ".join(kernel_params(params))
    deployer = params.deployer_url or "not given yet"
    if params.deployer_allows_unauthenticated:
        token_text = ("The deployer accepts unauthenticated phone-home (lab only), so no "
                      "`ultracloud.bootstrap_token=` parameter is set.")
    else:
        token_text = (
            f"`ultracloud.bootstrap_token={token_reference(params)}` is a reference, not the token: "
            "the secret is never written into this pack. "
            + (f"It is read from the file `{params.bootstrap_token_file}`"
               if params.bootstrap_token_file else
               f"It is read from the environment variable `{params.bootstrap_token_env}`")
            + " when the ISO is booted (the `run` step substitutes it into the kernel command line "
            "for USB or virtual media). Booting by hand, type the value in place of the reference at "
            "the boot loader; the kernel echoes its command line on the console, and `capture` "
            "redacts it from the saved serial log.")
    blocked = ""
    if missing:
        blocked = ("\n## Blocked: missing inputs\n\nThis run cannot present the ISO to the machine "
                   "until these are supplied (also in `missing-requirements.txt`):\n\n"
                   + "".join(f"- {m}\n" for m in missing))
    markers = "".join(f"{i}. `ULTRACLOUD_MARKER {m}.*`\n" for i, m in enumerate(EXPECTED_MARKERS, 1))
    return f"""# hardware-smoke handoff: {run_id}

Status: **{status}**; transport: **{transport or "none"}**.
{blocked}
## 1. Prepare

- Build `nixosConfigurations.ultracloud-iso` and the install profiles the node class names.
- Publish cluster state whose node class owns `install_plan.nixos_configuration`,
  `install_plan.disko_config_path` and a stable `install_plan.target_disk_by_id` selector
  (server, NVMe or RAID-controller `/dev/disk/by-id/...`), plus `desired_system.target_system`
  when the installer can reach a binary cache.
- Make the deployer (`{deployer}`) and the optional binary cache reachable from the
  live ISO (DHCP or equivalent before Disko starts).

## 2. Boot the ISO (USB or BMC virtual media) with

```
{cmdline}
```

{token_text}

## 3. Watch the console (serial-over-LAN, BMC console or physical console)

Expected, in order:

{markers}
Any marker with a `failed` segment (see `failure-markers.txt`) ends the run at once.

## 4. Capture

Save the console log and run `ucnb hardware-smoke capture --serial-log <file> <this directory>`,
or collect the evidence from the installed host with `ucnb hardware-smoke capture --ssh <host>
<this directory>` (user `{params.ssh_user}`, key and known_hosts from the parameters). Either
checks the sequence, writes `capture.json` and `markers.csv`, and sets `status.env` to `passed` or
`failed` with the first missing or failed marker.
"""


# --------------------------------------------------------------------------------------------
# Capture


class CaptureResult(BaseModel):
    """The verdict of one capture: the marker checks and, when failed, the first culprit."""

    status: Literal["passed", "failed"]
    checks: list[dict[str, Any]]
    first_missing: str | None = None
    failure_marker: str | None = None
    failure_line: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def raise_for_failure(self) -> None:
        """Raise LaneFailure naming the failure marker or the first missing marker."""
        if self.failure_marker:
            raise LaneFailure(f"hardware-smoke: failure marker {self.failure_marker!r}: {self.failure_line}")
        if self.first_missing:
            raise LaneFailure(f"hardware-smoke: marker {self.first_missing!r} was not seen in order")


def capture(run_dir: Path, serial_log: Path | None = None, *,
            expected: Sequence[str] = EXPECTED_MARKERS, node: str | None = None,
            environ: Mapping[str, str] | None = None) -> CaptureResult:
    """Check the marker sequence in a supplied serial log and record the verdict in `run_dir`.

    Writes a redacted copy `serial.log`, `capture.json`, `markers.csv` and updates `status.env`.
    """
    if serial_log is None:
        raise ParameterError("capture needs serial_log=<console log file> (or capture over SSH: "
                             "ucnb.baremetal.ssh_capture.capture_ssh)")
    try:
        raw = Path(serial_log).read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read serial log {serial_log}: {exc.strerror}") from None
    text = _redact_console(raw.decode("utf-8", "replace"), _redactor(run_dir, environ))
    result = judge(parse_text(text), expected)
    _write_capture(run_dir, text, result, node or _node_name(run_dir))
    return result


def judge(seen: Sequence[Marker], expected: Sequence[str] = EXPECTED_MARKERS) -> CaptureResult:
    """The verdict on markers in the order they were seen."""
    seen = list(seen)
    failure = next((m for m in seen if is_failure(m.name)), None)
    # A failure marker ends the run: later markers (a retry, a reboot loop) do not count.
    checks = check_sequence(expected, seen[:seen.index(failure)] if failure else seen)
    first_missing = next((c.expected for c in checks if not c.ok), None)
    return CaptureResult(
        status="failed" if failure or first_missing else "passed", checks=[_check_row(c) for c in checks],
        first_missing=first_missing, failure_marker=failure.name if failure else None,
        failure_line=failure.line if failure else None)


def _redactor(run_dir: Path, environ: Mapping[str, str] | None) -> Redactor:
    """Knows the run's token value when this host has it, so it is removed wherever it appears."""
    redactor = Redactor()
    saved = run_dir / "parameters.json"
    if saved.exists():
        params = HardwareSmokeParams.model_validate_json(saved.read_text())
        env = os.environ if environ is None else environ
        if not _token_problems(params, env):
            redactor.add(read_secret(params.bootstrap_token_env, params.bootstrap_token_file, env))
    return redactor


def _redact_console(text: str, redactor: Redactor) -> str:
    return TOKEN_PARAM_RE.sub(lambda m: m.group(1) + MASK, redactor.text(text))


def _node_name(run_dir: Path) -> str:
    saved = run_dir / "parameters.json"
    if not saved.exists():
        return ""
    params = json.loads(saved.read_text())
    return str(params.get("hostname") or params.get("node_id") or "")


def _check_row(check: SequenceCheck) -> dict[str, Any]:
    marker: Marker | None = check.seen
    return {"expected": check.expected, "seen": marker.name if marker else None,
            "offset": marker.offset if marker else None, "in_order": check.in_order, "ok": check.ok}


def _write_capture(run_dir: Path, serial_text: str, result: CaptureResult, node: str,
                   log_name: str = "serial.log", extra: Mapping[str, Any] | None = None) -> None:
    previous = read_status(run_dir).get("status")
    atomic_write_text(run_dir / log_name, serial_text)
    document = {"node": node, "preflight_status": previous, "source": log_name, **(extra or {}),
                **result.model_dump()}
    atomic_write_text(run_dir / "capture.json", json.dumps(document, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["node", "expected", "seen", "offset", "in_order", "ok"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({"node": node, **row} for row in result.checks)
    atomic_write_text(run_dir / "markers.csv", buffer.getvalue())
    write_status(run_dir, status=result.status, stage="capture", first_missing=result.first_missing,
                 failure_marker=result.failure_marker)


# --------------------------------------------------------------------------------------------
# Run: present the ISO to the machine


def run(run_dir: Path, *, artifacts: InstallerArtifacts | None = None, iso: Path | None = None,
        environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Present the installer ISO over the transport preflight chose; returns what was done.

    `iso` is used as is (the product's ultracloud-iso: type the parameters at its boot loader);
    otherwise the reference installer ISO is built from `artifacts` with the token substituted,
    in a private temporary directory removed afterwards. Writes `run.json` (never the token or
    the BMC password) and sets `status.env` to `media-presented`.
    """
    env = os.environ if environ is None else environ
    params = HardwareSmokeParams.model_validate_json((run_dir / "parameters.json").read_text())
    transport, missing = requirements(params, env)   # short secrets are refused here, before anything
    if missing or transport is None:
        write_status(run_dir, status="blocked", stage="run", missing_count=len(missing))
        raise ParameterError("hardware-smoke run is blocked: " + "; ".join(missing))
    redactor = _redactor(run_dir, environ)
    if transport == "redfish":
        redactor.add(env.get(params.redfish_password_env), source=params.redfish_password_env)
    # The ISO holds the token: built in a leased 0700 folder under the work root (reclaimed by
    # `ucnb lab clean` if this process is killed), removed afterwards.
    with leases.temp_dir(paths.work_root() / "tmp", "hw-media") as private:
        if iso is None:
            if artifacts is None:
                raise ParameterError("run needs iso=<the installer ISO> or the reference installer artifacts")
            iso = build_iso(artifacts, kernel_params(params, reveal=True, environ=env),
                            private / "ultracloud-installer.iso")
        done: dict[str, Any] = {"transport": transport, "iso_bytes": iso.stat().st_size,
                                "iso_sha256": _sha256(iso)}
        if transport == "usb":
            assert params.usb_device is not None
            done["usb"] = write_usb(iso, params.usb_device)
        else:
            done["redfish"] = redfish_present(params, env[params.redfish_password_env], iso, redactor)
    atomic_write_text(run_dir / "run.json", redactor.text(json.dumps(done, indent=2)) + "\n")
    write_status(run_dir, status="media-presented", stage="run", transport=transport)
    return done


def _sha256(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    with path.open("rb") as f:
        while remaining > 0:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def write_usb(iso: Path, device: Path) -> dict[str, Any]:
    """Write the hybrid ISO to the start of `device` (block device or image file), fsync, verify."""
    size = iso.stat().st_size
    if stat.S_ISREG(device.stat().st_mode) and device.stat().st_size and device.stat().st_size < size:
        raise ParameterError(f"usb_device {device} holds {device.stat().st_size} bytes, the ISO needs {size}")
    started = time.monotonic()
    with iso.open("rb") as src, open(device, "r+b") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    verified = _sha256(device, size) == _sha256(iso)
    if not verified:
        raise LaneFailure(f"usb_device {device}: read-back of the written ISO does not match")
    return {"device": str(device), "bytes": size, "verified": verified,
            "seconds": round(time.monotonic() - started, 3)}


def redfish_present(params: HardwareSmokeParams, password: str, iso: Path,
                    redactor: Redactor | None = None) -> dict[str, Any]:
    """Insert the ISO as virtual media, optionally override the boot to Cd, and power the system
    on (or force-restart it when it is already on).

    The ISO is served at a one-time random path (registered with `redactor`: it is as good as the
    token while served) on `redfish_media_address`, by default this host's address on the route
    to the BMC; the BMC copies it during InsertMedia."""
    from ucnb.reference.redfish import RedfishClient, address_toward, serve_file

    assert params.redfish_url and params.redfish_username
    bmc = urlsplit(params.redfish_url)
    bind = params.redfish_media_address or address_toward(bmc.hostname or "", bmc.port or 443)
    client = RedfishClient(params.redfish_url, params.redfish_username, password)
    members = [m["@odata.id"] for m in client.get("/redfish/v1/Systems").get("Members", [])]
    if params.redfish_system_id:
        members = [m for m in members if m.rstrip("/").endswith("/" + params.redfish_system_id)]
    if not members:
        raise LaneFailure(f"Redfish {params.redfish_url}: no system {params.redfish_system_id or ''} to boot")
    system = members[0]
    with serve_file(iso, bind) as url:  # the BMC copies the image during InsertMedia
        if redactor is not None:
            redactor.add(url.secret, source="the media URL")
        client.request("POST", f"{system}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
                       {"Image": url, "Inserted": True, "WriteProtected": True})
    if params.redfish_boot_override:
        client.request("PATCH", system, {"Boot": {"BootSourceOverrideTarget": "Cd",
                                                  "BootSourceOverrideEnabled": "Once"}})
    power = client.get(system).get("PowerState")
    reset = "On" if power == "Off" else "ForceRestart"
    client.request("POST", f"{system}/Actions/ComputerSystem.Reset", {"ResetType": reset})
    return {"system": system, "power_before": power, "reset": reset, "actions": client.actions}
