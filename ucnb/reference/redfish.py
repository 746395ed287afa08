"""A real Redfish BMC over libvirt domains (sushy-tools' `sushy-emulator`), and a small client.

The emulator listens on 127.0.0.1 only, in whichever network namespace the calling thread is in
(the image server `serve_file` must then bind there too: the emulator downloads inserted media
from its URL). It needs a libvirt storage pool for inserted images: a transient dir pool named
`ucnb-redfish-<id>`, removed by `stop()`. Credentials: an htpasswd file (bcrypt) written 0600;
the password itself comes from the caller (an environment variable), never from argv. The
process and its pool are leased (`ucnb.lab.leases`): `ucnb lab clean` removes them if the
process that started them is killed.

`serve_file` serves one file at an unguessable one-time path (`/<random>/<name>`, anything else
is 404) on the address a BMC can reach: by default this host's own address on the route to the
BMC (loopback for an emulator on loopback).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt

from ucnb.errors import InfrastructureError, LaneFailure
from ucnb.host import netns
from ucnb.host.procs import ProcessId

LISTEN_IP = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LISTEN_IP, 0))
        return int(s.getsockname()[1])


class SushyEmulator:
    """`sushy-emulator` for the given libvirt domain UUIDs; start/stop or use as a context."""

    def __init__(self, state_dir: Path, allowed_uuids: list[str], username: str, password: str,
                 libvirt_uri: str = "qemu:///system") -> None:
        self.state_dir, self.allowed, self.uri = state_dir, allowed_uuids, libvirt_uri
        self.username, self.password = username, password
        self.pool = f"ucnb-redfish-{secrets.token_hex(4)}"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lease: Any = None

    @property
    def url(self) -> str:
        return f"http://{LISTEN_IP}:{self.port}"

    def start(self, timeout: float = 20.0) -> SushyEmulator:
        """Create the image pool, write the config and start the emulator; wait until it answers."""
        from ucnb.lab import leases
        from ucnb.lab.registry import connect

        self.state_dir.mkdir(parents=True, exist_ok=True)
        pool_dir = self.state_dir / "pool"
        pool_dir.mkdir(exist_ok=True)
        # Recorded before it exists: a killed caller's emulator and pool are found by clean.
        self._lease = leases.take("sushy", pools=[leases.Pool(self.pool, str(pool_dir))])
        connect().storagePoolCreateXML(
            f"<pool type='dir'><name>{self.pool}</name><target><path>{pool_dir}</path></target></pool>", 0)
        htpasswd = self.state_dir / "htpasswd"
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        with open(os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"{self.username}:{hashed}\n")
        self.port = _free_port()
        config = self.state_dir / "sushy.conf"
        config.write_text("\n".join([
            f"SUSHY_EMULATOR_LISTEN_IP = {LISTEN_IP!r}", f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}",
            f"SUSHY_EMULATOR_LIBVIRT_URI = {self.uri!r}", f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
            f"SUSHY_EMULATOR_STORAGE_POOL = {self.pool!r}",
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.state_dir / 'state')!r}",
            f"SUSHY_EMULATOR_ALLOWED_INSTANCES = {self.allowed!r}", ""]))
        program = Path(sys.executable).with_name("sushy-emulator")
        log = (self.state_dir / "sushy-emulator.log").open("ab")
        self._proc = subprocess.Popen([str(program), "--config", str(config)], stdout=log, stderr=log,
                                      start_new_session=True)
        started = ProcessId.of(self._proc.pid)
        if started is not None:
            self._lease.processes.append(started)
            self._lease.save()
        atexit.register(self.stop)
        client = RedfishClient(self.url, self.username, self.password)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise InfrastructureError(f"sushy-emulator exited {self._proc.returncode} "
                                          f"(see {self.state_dir / 'sushy-emulator.log'})")
            with contextlib.suppress(OSError):
                client.get("/redfish/v1/Systems")
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise InfrastructureError(f"sushy-emulator did not answer on {self.url} within {timeout:g}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the emulator (its process group, by pid) and remove the image pool."""
        from ucnb.lab.registry import connect

        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            connect().storagePoolLookupByName(self.pool).destroy()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def __enter__(self) -> SushyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedfishClient:
    """Minimal Redfish over HTTP basic auth; every call is logged without credentials."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/")
        if self.base.endswith("/redfish/v1"):
            self.base = self.base[: -len("/redfish/v1")]
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.actions: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call; a non-2xx answer is a LaneFailure naming the call and the BMC's message."""
        started = time.monotonic()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        status, text = 0, ""
        try:
            with netns.urlopen(req, timeout=60) as response:   # guarded: a BMC may sit at a lab address
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        finally:
            self.actions.append({"method": method, "path": path, "body": body, "status": status,
                                 "duration_s": round(time.monotonic() - started, 3)})
        if not 200 <= status < 300:
            raise LaneFailure(f"Redfish {method} {path} answered {status}: {text[-500:]}")
        answer: dict[str, Any] = json.loads(text) if text.strip() else {}
        return answer

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)


def address_toward(host: str, port: int = 443) -> str:
    """This host's own address on the route to `host` (what that host can reach us at): the
    source address the kernel picks for a datagram socket connected there; nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(host), port))
        return str(probe.getsockname()[0])


class MediaUrl(str):
    """The URL of served media; `secret` is its random path segment (redact it, like a token)."""

    secret: str


@contextlib.contextmanager
def serve_file(path: Path, bind: str = LISTEN_IP) -> Iterator[MediaUrl]:
    """Serve one file at a one-time random path on `bind` (in this thread's namespace) for a BMC
    to fetch; yields its URL. Any other path is answered 404."""
    secret = secrets.token_urlsafe(24)
    wanted = f"/{secret}/{path.name}"

    class OneFile(SimpleHTTPRequestHandler):
        def translate_path(self, request_path: str) -> str:   # never a listing, never another file
            return str(path) if request_path.split("?", 1)[0] == wanted else str(path.parent / ".absent")

        def log_message(self, *_: Any) -> None:
            return None

    handler = partial(OneFile, directory=str(path.parent))
    server = ThreadingHTTPServer((bind, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="media-server", daemon=True)
    thread.start()
    host = f"[{bind}]" if ":" in bind else bind
    url = MediaUrl(f"http://{host}:{server.server_address[1]}{wanted}")
    url.secret = secret
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
