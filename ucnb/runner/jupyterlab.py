"""`ucnb jupyter` (`make lab`): JupyterLab for stepping through a lane with the `ucnb` kernel.

The server runs on this host, beside libvirtd, so its kernels reach the lab (a kernel joins the
lab's network namespace itself when it makes or attaches a lab). It always asks for a token, one
made for this server unless given; the token reaches the server through a config file only root
can read, never its command line (which every user of the host can read). It listens on loopback
unless told otherwise; from another machine, an SSH tunnel reaches it (the printed hint).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ucnb.errors import InfrastructureError, ParameterError

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0   # the server shuts its kernels down first (they remove their labs)
AUTOSAVE_SETTINGS = "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings"
NEWS_SETTINGS = "@jupyterlab/apputils-extension/notification.jupyterlab-settings"
MIN_TOKEN_CHARS = 16


@dataclass
class Server:
    """A running JupyterLab; `stop()` ends it (and with it its kernels)."""

    process: subprocess.Popen[bytes]
    ip: str
    port: int
    token: str = field(repr=False)
    private_dir: Path

    @property
    def base_url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open, token included (print it only where the user reads it)."""
        return f"{self.base_url}/lab?token={self.token}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.private_dir, ignore_errors=True)   # the token's config file with it


def free_port(ip: str, port: int = 0) -> int:
    """`port` if nothing listens on it (0: any free one); a port in use is refused, named."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise ParameterError(f"cannot listen on {ip}:{port} ({exc.strerror}): choose another "
                                 f"--port (0 picks a free one)") from None
        return int(probe.getsockname()[1])


def check_address(ip: str) -> str:
    """`ip` must be an address of this host's (no names: what it resolves to could change)."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise ParameterError(f"--ip {ip!r} is not an IP address (e.g. 127.0.0.1)") from None


def server_argv(root_dir: Path, ip: str, port: int, config: Path, as_root: bool,
                settings_dir: Path | None = None, workspaces_dir: Path | None = None) -> list[str]:
    """The server's command line: the address, the folder it serves, the config file with the token."""
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--config={config}",
            f"--ServerApp.ip={ip}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}"]
    if as_root:
        argv.append("--allow-root")
    if settings_dir is not None:
        argv.append(f"--LabApp.user_settings_dir={settings_dir}")
    if workspaces_dir is not None:
        argv.append(f"--LabApp.workspaces_dir={workspaces_dir}")
    return argv


def start(root_dir: Path, ip: str = "127.0.0.1", port: int = 0, token: str | None = None,
          autosave: bool = True) -> Server:
    """Start JupyterLab serving `root_dir` and wait until it answers with the token.

    `port` 0 picks a free one. `autosave=False` (tests) keeps the notebooks it opens unchanged on
    disk, and its runtime files, workspaces and user settings in its private folder."""
    ip = check_address(ip)
    token = token or secrets.token_urlsafe(24)
    if len(token) < MIN_TOKEN_CHARS:
        raise ParameterError(f"a JupyterLab token needs at least {MIN_TOKEN_CHARS} characters")
    if not root_dir.is_dir():
        raise ParameterError(f"{root_dir} is not a folder to serve")
    port = free_port(ip, port)
    private = Path(tempfile.mkdtemp(prefix="ucnb-jupyter-"))   # 0700, removed by stop()
    try:
        config = private / "jupyter_server_config.json"
        config.write_text(json.dumps({"IdentityProvider": {"token": token}}))
        config.chmod(0o600)
        env = dict(os.environ)
        settings = workspaces = None
        if not autosave:
            settings, workspaces = private / "settings", private / "workspaces"
            env["JUPYTER_RUNTIME_DIR"] = str(private / "runtime")
            for name, values in ((AUTOSAVE_SETTINGS, {"autosave": False}),   # nor asks about news
                                 (NEWS_SETTINGS, {"fetchNews": "false", "checkForUpdates": False})):
                (settings / name).parent.mkdir(parents=True, exist_ok=True)
                (settings / name).write_text(json.dumps(values))
            workspaces.mkdir()
        argv = server_argv(root_dir.resolve(), ip, port, config, os.geteuid() == 0, settings, workspaces)
        with (private / "server.log").open("wb") as log:
            process = subprocess.Popen(argv, env=env, cwd=root_dir, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=log)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    server = Server(process, ip, port, token, private)
    try:
        _wait_up(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    request = urllib.request.Request(f"{server.base_url}/api/status",
                                     headers={"Authorization": f"token {server.token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through a proxy
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.private_dir / "server.log").read_text(errors="replace")[-2000:]
            raise InfrastructureError(f"JupyterLab exited ({server.process.returncode}) on start:\n{log}")
        with contextlib.suppress(urllib.error.URLError, OSError), opener.open(request, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise InfrastructureError(f"JupyterLab did not answer on {server.base_url} within {START_TIMEOUT_S:g}s")


def how_to_reach(server: Server, host: str | None = None) -> list[str]:
    """What to tell the user: the URL and token, and (as root, or off loopback) how to reach it."""
    lines = [f"JupyterLab: {server.url}", f"token: {server.token}",
             "kernel: Python (ucnb); the lane notebooks are under notebooks/"]
    host = host or socket.gethostname()
    if os.geteuid() == 0:
        lines.append("running as root (libvirt and the lab's network namespace need it)")
    if ipaddress.ip_address(server.ip).is_loopback:
        lines.append(f"listening on {server.ip} only; from a browser on another machine: "
                     f"ssh -N -L {server.port}:{server.ip}:{server.port} <user>@{host}, "
                     f"then open the URL above there")
    else:
        lines.append(f"listening on {server.ip}: anyone who can reach it needs the token")
    return lines


def serve(root_dir: Path, ip: str, port: int, say: Callable[[str], None]) -> None:
    """Start the server, say how to reach it, and keep it until Ctrl-C (or SIGTERM)."""
    import signal

    def terminated(*_: object) -> None:
        raise KeyboardInterrupt

    server = start(root_dir, ip=ip, port=port)
    signal.signal(signal.SIGTERM, terminated)
    try:
        for line in how_to_reach(server):
            say(line)
        server.process.wait()
    except KeyboardInterrupt:
        say("stopping JupyterLab (its kernels remove their labs unless kept)")
    finally:
        server.stop()
