"""A read-only HTTP file server for the lab gateway (the binary cache, the published CA certificate).

The stdlib's SimpleHTTPRequestHandler over one directory (no listings, GET/HEAD only), bound where
the caller says (the lab network's gateway, inside the lab namespace); every request is one JSON
line of `log_path`, which is evidence.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from ucnb.errors import HarnessError, InfrastructureError
from ucnb.reference.serving import serve_in_thread, stop_serving


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    directory: str
    log_path: Path
    log_lock: threading.Lock


class _Handler(SimpleHTTPRequestHandler):
    server: _Server
    server_version = "ucnb-static/1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=args[2].directory, **kwargs)

    def list_directory(self, path: str | Any) -> None:
        """No listings: a client asks for a file by name."""
        self.send_error(HTTPStatus.NOT_FOUND, "no such file")
        return None

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "client": self.client_address[0], "method": self.command,
                 "path": self.path.split("?", 1)[0], "status": int(code) if str(code).isdigit() else code}
        with self.server.log_lock, self.server.log_path.open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the JSON log is the record."""


class StaticServer:
    """Serve `directory` read-only on `bind`; start/stop or use as a context manager."""

    def __init__(self, directory: Path, bind: tuple[str, int], log_path: Path) -> None:
        self.directory, self.bind, self.log_path = directory, bind, log_path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise HarnessError("the file server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StaticServer:
        if self._server is not None:
            return self
        try:
            server = _Server(self.bind, _Handler)
        except OSError as exc:
            raise InfrastructureError(f"cannot bind {self.bind[0]}:{self.bind[1]}: {exc.strerror}") from None
        server.directory, server.log_path = str(self.directory), self.log_path
        server.log_lock = threading.Lock()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._server = server
        self._thread = serve_in_thread(server, f"static-{self.directory.name}")
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        stop_serving(self._server, self._thread)
        self._server = self._thread = None

    def requests(self) -> list[dict[str, Any]]:
        """Every request served so far (the JSON log, parsed)."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def __enter__(self) -> StaticServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
