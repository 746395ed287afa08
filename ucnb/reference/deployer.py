"""The reference deployer: a real HTTP endpoint standing in for UltraCloud's deployer in the lab.

It speaks the part of the deployer contract the bare-metal and rollout lanes exercise:

- `POST /api/v1/phone-home` (bootstrap token): the installer's identity in, its install plan,
  bundle URL and desired system out;
- `GET /api/v1/bundles/<name>` (bootstrap token): the bundle directory `<bundle_dir>/<name>` as a
  deterministic tar.gz (the "system" the installer copies);
- `GET|PUT /api/v1/nodes/<id>/desired-system`, `POST /api/v1/nodes/<id>/status`,
  `GET /api/v1/nodes/<id>`: what the node agent converges to and what it observed;
- `POST /api/v1/admin/nodes/pre-register`, `GET /api/v1/admin/nodes` (admin token);
- `GET /healthz` (no token), for readiness waits.

Node-facing endpoints take `Authorization: Bearer <bootstrap token>` (or the admin token) unless the
deployer runs with `allow_unauthenticated` (lab only); publishing a desired system (`PUT`) and the
admin API always need the admin token. State lives in `<state_dir>/state.json`, replaced
atomically on every change, so it survives a restart; every request is one line of
`<state_dir>/requests.jsonl`. Token values never reach the state, the log or a response.

HTTPS with `tls=TlsFiles(cert, key)` (the lab's per-run private CA, `ucnb.reference.pki`); a
handshake that fails (a client that does not trust the certificate) is a `TLS` line of the
request log. Plain HTTP only on loopback or with `allow_unauthenticated`.

CLI: `python -m ucnb.reference.deployer --state-dir D --cluster FILE --bind HOST:PORT
[--allow-unauthenticated] [--token-file F] [--admin-token-file F] [--bundle-dir D]
[--tls-cert F --tls-key F]`; tokens come
from `ULTRACLOUD_BOOTSTRAP_TOKEN` / `ULTRACLOUD_DEPLOYER_ADMIN_TOKEN` or the files, never from a
command-line value (argv is world-readable in /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import hmac
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ucnb.errors import HarnessError, InfrastructureError, ParameterError, UcnbError
from ucnb.evidence.redact import Redactor
from ucnb.files import atomic_write_bytes, atomic_write_text
from ucnb.reference.cluster import (
    NAME_PATTERN,
    Cluster,
    ResolvedNode,
    describe_validation_error,
    load_cluster,
)
from ucnb.reference.serving import serve_in_thread, stop_serving

BOOTSTRAP_TOKEN_ENV = "ULTRACLOUD_BOOTSTRAP_TOKEN"
ADMIN_TOKEN_ENV = "ULTRACLOUD_DEPLOYER_ADMIN_TOKEN"
STATE_FILE = "state.json"
REQUEST_LOG = "requests.jsonl"
ENDPOINT_FILE = "endpoint.json"
STATE_SCHEMA = "ucnb.reference-deployer.state/v1"
MAX_BODY = 1 << 20
HANDSHAKE_TIMEOUT_S = 10.0
OP_PRIORITIZE_CHACHA = 0x00200000  # OpenSSL's SSL_OP_PRIORITIZE_CHACHA (no constant in Python's ssl)
NAME_RE = re.compile(NAME_PATTERN)


# --------------------------------------------------------------------------------------------
# Small shared helpers


def read_secret(env_name: str, file: Path | None = None,
                environ: Mapping[str, str] | None = None) -> str | None:
    """A secret from `file` when given (trailing newline dropped), else from `env_name`, else None."""
    if file is not None:
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            raise ParameterError(f"cannot read secret file {file}: {exc.strerror}") from None
        if not value:
            raise ParameterError(f"secret file {file} is empty")
        return value
    return (environ if environ is not None else os.environ).get(env_name) or None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Request bodies (unknown keys are errors, as in the cluster file)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


IdentitySource = Literal["kernel-parameter", "dmi-serial", "node-id"]


class PhoneHomeRequest(_Body):
    node_id: str = Field(pattern=NAME_PATTERN)
    hostname: str = Field(pattern=NAME_PATTERN)
    mac: str | None = None
    disks: list[Any] | None = None
    # Where the installer took each identity from (`ultracloud.node_id=` / `ultracloud.hostname=`
    # win over the DMI serial and the default hostname): recorded with the phone-home.
    node_id_source: IdentitySource | None = None
    hostname_source: IdentitySource | None = None
    # sha256 of the CA certificate the installer verified this connection with (None: none given).
    ca_cert_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class PreRegisterRequest(_Body):
    node_id: str = Field(pattern=NAME_PATTERN)
    hostname: str = Field(pattern=NAME_PATTERN)
    node_class: str = Field(alias="class")
    mac: str | None = None


class DesiredSystemUpdate(_Body):
    target_system: str = Field(min_length=1)
    health_check_command: str | None = None


class StatusReport(_Body):
    generation: int = Field(ge=1)
    status: Literal["active", "rolled-back", "activating", "failed"]
    detail: str | None = None
    # Where the node agent took the system from (a binary cache or the deployer's bundles) and
    # the archive's checksum as it verified it.
    source: str | None = Field(None, max_length=300)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# Responses and errors


class ApiError(Exception):
    """An HTTP error answered as `{"error": code, "reason": ...}`."""

    def __init__(self, status: HTTPStatus, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


@dataclass
class Response:
    status: HTTPStatus
    body: Any = None
    file: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestContext:
    """What one request carries into a route, and what the route leaves for the request log."""

    method: str
    path: str
    params: dict[str, str]
    body: bytes
    authorization: str | None
    base_url: str
    client: str
    node_id: str | None = None
    auth: str = "not-required"


AuthKind = Literal["none", "node", "admin"]


# --------------------------------------------------------------------------------------------
# Bundles


class BundleStore:
    """Serves `<bundle_dir>/<name>/` as a reproducible tar.gz, rebuilt only when the tree changes."""

    def __init__(self, bundle_dir: Path, cache_dir: Path) -> None:
        self.bundle_dir, self.cache_dir = bundle_dir, cache_dir
        self._cache: dict[str, tuple[str, Path, str]] = {}   # name -> (fingerprint, archive, sha256)
        self._lock = threading.Lock()

    def archive(self, name: str) -> tuple[Path, str] | None:
        """The archive of bundle `name` and its sha256, or None when there is no such bundle."""
        if not NAME_RE.match(name):
            return None
        source = self.bundle_dir / name
        if not source.is_dir():
            return None
        with self._lock:
            fingerprint = self._fingerprint(source)
            cached = self._cache.get(name)
            if cached and cached[0] == fingerprint and cached[1].exists():
                return cached[1], cached[2]
            target = self.cache_dir / f"{name}.tar.gz"
            data = self._build(source)
            atomic_write_bytes(target, data)
            digest = hashlib.sha256(data).hexdigest()
            self._cache[name] = (fingerprint, target, digest)
            return target, digest

    @staticmethod
    def _entries(source: Path) -> list[Path]:
        return sorted(source.rglob("*"), key=lambda p: p.relative_to(source).as_posix())

    def _fingerprint(self, source: Path) -> str:
        digest = hashlib.sha256()
        for path in self._entries(source):
            stat = path.lstat()
            digest.update(f"{path.relative_to(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
                          f"{stat.st_mode}\n".encode())
        return digest.hexdigest()

    def _build(self, source: Path) -> bytes:
        # Fixed owner, mtime and order: the same tree always gives the same bytes and checksum.
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in self._entries(source):
                    info = tar.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0
                    if info.isfile():
                        with path.open("rb") as handle:
                            tar.addfile(info, handle)
                    else:
                        tar.addfile(info)
            raw.seek(0)
            return raw.read()


# --------------------------------------------------------------------------------------------
# Persistent state


class StateStore:
    """The deployer's mutable state, one JSON document replaced atomically on every change.

    `nodes[node_id]` holds what the cluster file cannot: a pre-registration, phone-homes, a
    published desired-system override and the observed status history.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"schema": STATE_SCHEMA, "nodes": {}}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(f"deployer state {self.path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
            raise HarnessError(f"deployer state {self.path} is not a {STATE_SCHEMA} document")
        return data

    def node(self, node_id: str) -> dict[str, Any]:
        """The record of `node_id` (created empty, not yet saved)."""
        nodes: dict[str, Any] = self.data["nodes"]
        return nodes.setdefault(node_id, {"registration": None, "phone_homes": [],
                                          "desired": None, "observed": []})

    def peek(self, node_id: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.data["nodes"].get(node_id)
        return record

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# The application: routes over state, independent of the HTTP plumbing


Route = tuple[str, re.Pattern[str], AuthKind, Callable[["DeployerApp", RequestContext], Response]]


class DeployerApp:
    """Authentication, routing and the deployer's semantics; the HTTP layer only moves bytes."""

    def __init__(self, state_dir: Path, cluster: Cluster, *, bootstrap_token: str | None,
                 admin_token: str | None, allow_unauthenticated: bool, bundle_dir: Path,
                 public_url: str | None = None, bundle_cache_dir: Path | None = None) -> None:
        self.state_dir, self.cluster = state_dir, cluster
        self.bootstrap_token, self.admin_token = bootstrap_token, admin_token
        self.allow_unauthenticated = allow_unauthenticated
        self.public_url = public_url.rstrip("/") if public_url else None
        self.redactor = Redactor([t for t in (bootstrap_token, admin_token) if t])
        self.state = StateStore(state_dir / STATE_FILE)
        self.bundles = BundleStore(bundle_dir, bundle_cache_dir or state_dir / "bundle-cache")
        self._log_lock = threading.Lock()

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, ctx: RequestContext) -> Response:
        """Answer one request; never raises (an unexpected error is a 500 without details)."""
        try:
            route, params = self._route(ctx)
            ctx.params = params
            ctx.node_id = params.get("node_id") or _claimed_node_id(ctx.body)
            self._authenticate(ctx, route[2])
            return route[3](self, ctx)
        except ApiError as exc:
            return Response(exc.status, {"error": exc.code, "reason": exc.reason})
        except Exception as exc:  # a bug here must not kill the server thread or leak a traceback
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR,
                            {"error": "internal", "reason": type(exc).__name__})

    def _route(self, ctx: RequestContext) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in ROUTES:
            match = route[1].fullmatch(ctx.path)
            if match:
                if route[0] == ctx.method:
                    return route, match.groupdict()
                allowed.append(route[0])
        if allowed:
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method-not-allowed",
                           f"{ctx.method} is not allowed on {ctx.path} (allowed: {', '.join(allowed)})")
        raise ApiError(HTTPStatus.NOT_FOUND, "not-found", f"no endpoint {ctx.path}")

    def _authenticate(self, ctx: RequestContext, kind: AuthKind) -> None:
        if kind == "none":
            return
        presented = _bearer(ctx.authorization)
        if self.admin_token and presented and _same(presented, self.admin_token):
            ctx.auth = "admin"
            return
        if kind == "admin":
            ctx.auth = "missing" if presented is None else "invalid"
            if not self.admin_token:
                raise ApiError(HTTPStatus.FORBIDDEN, "admin-disabled",
                               f"this deployer has no admin token ({ADMIN_TOKEN_ENV} unset)")
            raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "admin token missing" if presented is None else "admin token rejected")
        if self.bootstrap_token and presented and _same(presented, self.bootstrap_token):
            ctx.auth = "bootstrap"
            return
        if self.allow_unauthenticated:
            ctx.auth = "unauthenticated-allowed"
            return
        ctx.auth = "missing" if presented is None else "invalid"
        raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                       "bearer token missing" if presented is None
                       else "bearer token does not match the deployer's bootstrap token")

    # -- request log ---------------------------------------------------------------------------
    def log_request(self, ctx: RequestContext, status: int, started: float,
                    error: str | None = None) -> None:
        """Append one JSON line to requests.jsonl (the path without its query string)."""
        entry = {"time": _now(), "method": ctx.method, "path": ctx.path, "node_id": ctx.node_id,
                 "status": status, "auth": ctx.auth, "client": ctx.client,
                 "duration_ms": round((time.monotonic() - started) * 1000, 2), "error": error}
        line = self.redactor.text(json.dumps(entry, sort_keys=True))
        with self._log_lock, (self.state_dir / REQUEST_LOG).open("a") as handle:
            handle.write(line + "\n")

    def log_tls_failure(self, client: str, reason: str) -> None:
        """A connection that never became a request: its TLS handshake failed (e.g. the client did
        not trust our certificate). One line of requests.jsonl, method `TLS`."""
        entry = {"time": _now(), "method": "TLS", "path": "", "node_id": None, "status": 0,
                 "auth": "none", "client": client, "duration_ms": None, "error": f"tls: {reason}"}
        line = self.redactor.text(json.dumps(entry, sort_keys=True))
        with self._log_lock, (self.state_dir / REQUEST_LOG).open("a") as handle:
            handle.write(line + "\n")

    # -- node views ------------------------------------------------------------------------------
    def _identity(self, node_id: str) -> dict[str, Any] | None:
        """hostname/class/source of a node from the cluster file, else from its pre-registration."""
        resolved = self.cluster.by_node_id().get(node_id)
        if resolved is not None:
            return {"node_id": node_id, "hostname": resolved.hostname, "class": resolved.node_class,
                    "name": resolved.name, "source": "cluster"}
        record = self.state.peek(node_id)
        registration = record and record["registration"]
        if registration:
            return {"node_id": node_id, "hostname": registration["hostname"],
                    "class": registration["class"], "name": node_id, "source": "pre-registered"}
        return None

    def _require_node(self, node_id: str) -> dict[str, Any]:
        identity = self._identity(node_id)
        if identity is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown-node",
                           f"node {node_id!r} is neither in the cluster state nor pre-registered")
        return identity

    def _all_node_ids(self) -> list[str]:
        registered = [n for n, r in self.state.data["nodes"].items() if r["registration"]]
        return sorted(set(self.cluster.by_node_id()) | set(registered))

    def _desired(self, node_id: str, node_class: str) -> dict[str, Any] | None:
        record = self.state.peek(node_id)
        if record and record["desired"]:
            desired: dict[str, Any] = record["desired"]
            return dict(desired)
        spec = self.cluster.node_classes[node_class].desired_system
        if spec is None:
            return None
        return {"target_system": spec.target_system, "health_check_command": spec.health_check_command,
                "generation": 1}

    def _with_checksum(self, desired: dict[str, Any] | None) -> dict[str, Any] | None:
        """The desired system plus `target_sha256`: the checksum of the prebuilt system's archive as
        this deployer would serve it, so a node can verify a copy fetched from anywhere (a binary
        cache over plain HTTP) against what it learnt over the authenticated channel."""
        if desired is None:
            return None
        found = self.bundles.archive(str(desired["target_system"]))
        return {**desired, "target_sha256": found[1]} if found else desired

    def _node_view(self, node_id: str) -> dict[str, Any]:
        identity = self._require_node(node_id)
        record = self.state.peek(node_id) or {"registration": None, "phone_homes": [], "observed": []}
        observed = record["observed"]
        return {**identity,
                "install_plan": self.cluster.node_classes[identity["class"]].install_plan.model_dump(),
                "desired_system": self._desired(node_id, identity["class"]),
                "registration": record["registration"],
                "phone_homes": record["phone_homes"],
                "observed_status": observed[-1] if observed else None,
                "observed_history": observed}

    def _bundle_url(self, ctx: RequestContext, name: str) -> str:
        return f"{self.public_url or ctx.base_url}/api/v1/bundles/{name}"

    # -- routes ------------------------------------------------------------------------------
    def healthz(self, ctx: RequestContext) -> Response:
        return Response(HTTPStatus.OK, {"status": "ok"})

    def phone_home(self, ctx: RequestContext) -> Response:
        request = _parse(PhoneHomeRequest, ctx.body)
        ctx.node_id = request.node_id
        with self.state.lock:
            identity = self._require_node(request.node_id)
        plan = self.cluster.node_classes[identity["class"]].install_plan
        bundle = self.bundles.archive(plan.nixos_configuration)
        with self.state.lock:
            self.state.node(request.node_id)["phone_homes"].append(
                {"time": _now(), "client": ctx.client, **request.model_dump(exclude_none=True)})
            self.state.save()
            desired = self._desired(request.node_id, identity["class"])
        return Response(HTTPStatus.OK, {
            "node_id": request.node_id, "hostname": identity["hostname"], "node_class": identity["class"],
            "install_plan": plan.model_dump(),
            "bundle_url": self._bundle_url(ctx, plan.nixos_configuration),
            "bundle_sha256": bundle[1] if bundle else None,
            "desired_system": self._with_checksum(desired)})

    def bundle(self, ctx: RequestContext) -> Response:
        name = ctx.params["name"].removesuffix(".tar.gz")
        found = self.bundles.archive(name)
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "unknown-bundle", f"no bundle named {name!r}")
        path, digest = found
        return Response(HTTPStatus.OK, file=path, headers={
            "Content-Type": "application/gzip", "X-Bundle-SHA256": digest, "ETag": f'"{digest}"',
            "Content-Disposition": f'attachment; filename="{name}.tar.gz"'})

    def get_node(self, ctx: RequestContext) -> Response:
        with self.state.lock:
            return Response(HTTPStatus.OK, self._node_view(ctx.params["node_id"]))

    def get_desired(self, ctx: RequestContext) -> Response:
        node_id = ctx.params["node_id"]
        with self.state.lock:
            identity = self._require_node(node_id)
            desired = self._desired(node_id, identity["class"])
        if desired is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "no-desired-system",
                           f"no desired system is published for node {node_id!r}")
        return Response(HTTPStatus.OK, {"node_id": node_id, **(self._with_checksum(desired) or {})})

    def put_desired(self, ctx: RequestContext) -> Response:
        node_id = ctx.params["node_id"]
        update = _parse(DesiredSystemUpdate, ctx.body)
        with self.state.lock:
            identity = self._require_node(node_id)
            current = self._desired(node_id, identity["class"])
            same = current is not None and all(current[k] == v for k, v in update.model_dump().items())
            if current is not None and same:
                return Response(HTTPStatus.OK, {"node_id": node_id, **current})  # a replay: no new generation
            desired = {**update.model_dump(), "generation": (current["generation"] if current else 0) + 1,
                       "published_at": _now()}
            self.state.node(node_id)["desired"] = desired
            self.state.save()
        return Response(HTTPStatus.OK, {"node_id": node_id, **desired})

    def post_status(self, ctx: RequestContext) -> Response:
        node_id = ctx.params["node_id"]
        report = _parse(StatusReport, ctx.body)
        with self.state.lock:
            identity = self._require_node(node_id)
            desired = self._desired(node_id, identity["class"])
            published = desired["generation"] if desired else 0
            if report.generation > published:
                raise ApiError(HTTPStatus.CONFLICT, "unknown-generation",
                               f"generation {report.generation} was never published for {node_id!r} "
                               f"(latest is {published})")
            entry = {"time": _now(), **report.model_dump()}
            self.state.node(node_id)["observed"].append(entry)
            self.state.save()
        return Response(HTTPStatus.OK, {"node_id": node_id, "recorded": entry})

    def pre_register(self, ctx: RequestContext) -> Response:
        request = _parse(PreRegisterRequest, ctx.body)
        ctx.node_id = request.node_id
        wanted = request.model_dump(by_alias=True)
        with self.state.lock:
            record = self.state.peek(request.node_id)
            existing = record["registration"] if record else None
            if existing is not None:
                return self._replay(existing, wanted)
            self._check_registration(request)
            result = {**wanted, "registered_at": _now()}
            self.state.node(request.node_id)["registration"] = result
            self.state.save()
        return Response(HTTPStatus.CREATED, result)

    def _replay(self, existing: dict[str, Any], wanted: dict[str, Any]) -> Response:
        differing = sorted(k for k, v in wanted.items() if existing.get(k) != v)
        if differing:
            raise ApiError(HTTPStatus.CONFLICT, "conflict",
                           f"node {wanted['node_id']!r} is already pre-registered with a different "
                           f"{', '.join(differing)}")
        return Response(HTTPStatus.OK, existing)   # identical replay: same answer, nothing written

    def _check_registration(self, request: PreRegisterRequest) -> None:
        if request.node_class not in self.cluster.node_classes:
            raise ApiError(HTTPStatus.BAD_REQUEST, "unknown-class",
                           f"class {request.node_class!r} is not one of the cluster's node classes")
        declared: ResolvedNode | None = self.cluster.by_node_id().get(request.node_id)
        if declared and (declared.hostname, declared.node_class) != (request.hostname, request.node_class):
            raise ApiError(HTTPStatus.CONFLICT, "conflict",
                           f"node {request.node_id!r} is declared in the cluster state with another "
                           "hostname or class")
        for other in self._all_node_ids():
            identity = self._identity(other)
            if other != request.node_id and identity and identity["hostname"] == request.hostname:
                raise ApiError(HTTPStatus.CONFLICT, "conflict",
                               f"hostname {request.hostname!r} already belongs to node {other!r}")

    def list_nodes(self, ctx: RequestContext) -> Response:
        with self.state.lock:
            nodes = []
            for node_id in self._all_node_ids():
                view = self._node_view(node_id)
                nodes.append({k: view[k] for k in ("node_id", "hostname", "class", "source",
                                                   "registration", "desired_system", "observed_status")}
                             | {"phone_home_count": len(view["phone_homes"])})
        return Response(HTTPStatus.OK, {"nodes": nodes})


_NODE = r"/api/v1/nodes/(?P<node_id>[^/]+)"
ROUTES: list[Route] = [
    ("GET", re.compile(r"/healthz"), "none", DeployerApp.healthz),
    ("POST", re.compile(r"/api/v1/phone-home"), "node", DeployerApp.phone_home),
    ("GET", re.compile(r"/api/v1/bundles/(?P<name>[^/]+)"), "node", DeployerApp.bundle),
    ("GET", re.compile(_NODE), "node", DeployerApp.get_node),
    ("GET", re.compile(_NODE + "/desired-system"), "node", DeployerApp.get_desired),
    ("PUT", re.compile(_NODE + "/desired-system"), "admin", DeployerApp.put_desired),
    ("POST", re.compile(_NODE + "/status"), "node", DeployerApp.post_status),
    ("POST", re.compile(r"/api/v1/admin/nodes/pre-register"), "admin", DeployerApp.pre_register),
    ("GET", re.compile(r"/api/v1/admin/nodes"), "admin", DeployerApp.list_nodes),
]


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def _claimed_node_id(body: bytes) -> str | None:
    """The node_id a body claims, for the request log only (even when the request is refused)."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    claimed = document.get("node_id") if isinstance(document, dict) else None
    return claimed if isinstance(claimed, str) and NAME_RE.fullmatch(claimed) else None


def _same(presented: str, expected: str) -> bool:
    # Constant time, so response timing does not reveal how much of a guess was right.
    return hmac.compare_digest(presented.encode(), expected.encode())


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: bytes) -> M:
    try:
        document = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad-json", "request body is not JSON") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid-request", describe_validation_error(exc)) from None


# --------------------------------------------------------------------------------------------
# HTTP plumbing


def _http_url(address: tuple[Any, ...], scheme: str = "http") -> str:
    host, port = str(address[0]), address[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: DeployerApp
    scheme = "http"


class _TlsServer(_Server):
    """HTTPS: each connection's handshake runs in its own request thread (a client that stalls or
    rejects the certificate holds up nobody else), and a failed one is a line of requests.jsonl."""

    scheme = "https"
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.app.log_tls_failure(str(client_address[0]), _tls_reason(exc))
            return
        tls.settimeout(None)
        try:
            handler = _Handler(tls, client_address, self)
            if not getattr(handler, "served", 0):
                # TLS 1.3 completes the server's side of the handshake before the client checks the
                # certificate; a client that rejects it then closes without a word (GnuTLS sends no
                # alert), so an empty connection is the server's only sign of it.
                self.app.log_tls_failure(str(client_address[0]), "the client closed the connection after the "
                                         "handshake without a request (it did not accept the certificate?)")
        except ssl.SSLError as exc:  # an alert from the client (e.g. unknown CA)
            self.app.log_tls_failure(str(client_address[0]), _tls_reason(exc))
        finally:
            with contextlib.suppress(OSError):
                tls.close()


def _tls_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return str(reason)


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the certificate and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Honour a client that puts ChaCha20-Poly1305 first (one without AES instructions: guests
    # under TCG, small boards) instead of the server's AES-GCM preference.
    context.options |= OP_PRIORITIZE_CHACHA
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ParameterError(f"cannot load the deployer's TLS certificate {cert_file}: {exc}") from None
    return context


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ucnb-reference-deployer/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: requests.jsonl is the log (the stdlib line would carry raw paths to stderr)."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    served = 0   # requests answered on this connection (an HTTPS connection with none is logged)

    def _serve(self) -> None:
        self.served += 1
        started = time.monotonic()
        app = self.server.app
        ctx = RequestContext(method=self.command, path=urlsplit(self.path).path, params={}, body=b"",
                             authorization=self.headers.get("Authorization"),
                             base_url=self._base_url(), client=self.client_address[0])
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else MAX_BODY + 1
        if length > MAX_BODY:
            response = Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                {"error": "too-large", "reason": f"body over {MAX_BODY} bytes"})
            self.close_connection = True
        else:
            ctx.body = self.rfile.read(length) if length else b""
            response = app.handle(ctx)
        error = response.body.get("error") if isinstance(response.body, dict) else None
        # Logged before the answer goes out: whoever has seen a response can find its log line.
        app.log_request(ctx, int(response.status), started, error)
        self._send(response, app.redactor)

    def _base_url(self) -> str:
        # The Host header is what the client reached us by (a NAT address, say); fall back to the
        # bound address when it is absent or not a plain host[:port].
        host = self.headers.get("Host") or ""
        if re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            return f"{self.server.scheme}://{host}"
        return _http_url(self.server.server_address, self.server.scheme)

    def _send(self, response: Response, redactor: Redactor) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.file is not None:
            self.send_header("Content-Length", str(response.file.stat().st_size))
            self.end_headers()
            with response.file.open("rb") as handle:
                shutil.copyfileobj(handle, self.wfile)
            return
        payload = redactor.text(json.dumps(response.body, indent=1, sort_keys=True)).encode() + b"\n"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


# --------------------------------------------------------------------------------------------
# The public object


@dataclass(frozen=True)
class TlsFiles:
    """The deployer's certificate (PEM, chain as clients need it) and private key files."""

    cert_file: Path
    key_file: Path


class Deployer:
    """A reference deployer serving one cluster from `state_dir`; start/stop or use as a context.

    `cluster` is a validated `Cluster` or a path to a cluster file; bundles are the directories
    of `bundle_dir` (default: `bundles/` beside the cluster file, else `<state_dir>/bundles`),
    archived into `bundle_cache_dir` (default `<state_dir>/bundle-cache`; keep big archives out of
    a state dir that is evidence).

    `tls` (certificate and key files) serves HTTPS. Plain HTTP is refused on any address but
    loopback unless `allow_unauthenticated` (a lab deployer that takes no token): a bearer token
    never crosses a network in the clear.
    """

    def __init__(self, state_dir: Path, cluster: Cluster | Path, *,
                 bind: tuple[str, int] = ("127.0.0.1", 0), allow_unauthenticated: bool = False,
                 bootstrap_token: str | None = None, admin_token: str | None = None,
                 bundle_dir: Path | None = None, public_url: str | None = None,
                 bundle_cache_dir: Path | None = None, tls: TlsFiles | None = None) -> None:
        if tls is None and not allow_unauthenticated and not _loopback(bind[0]):
            raise ParameterError(f"plain HTTP on {bind[0]} would carry the bootstrap token in the clear: "
                                 "give the deployer a TLS certificate, or allow_unauthenticated (lab only)")
        self.tls = tls
        if not allow_unauthenticated and not bootstrap_token:
            raise ParameterError("the deployer needs a bootstrap token unless allow_unauthenticated is set "
                                 f"(lab only); supply it through {BOOTSTRAP_TOKEN_ENV} or a token file")
        for name, token in (("bootstrap", bootstrap_token), ("admin", admin_token)):
            if token is not None and (len(token) < 8 or any(c.isspace() for c in token)):
                raise ParameterError(f"the {name} token must be at least 8 characters without whitespace")
        self.state_dir = Path(state_dir)
        if isinstance(cluster, Cluster):
            default_bundles = self.state_dir / "bundles"
        else:
            default_bundles = Path(cluster).parent / "bundles"
            cluster = load_cluster(Path(cluster))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.bind = bind
        self.app = DeployerApp(self.state_dir, cluster, bootstrap_token=bootstrap_token,
                               admin_token=admin_token, allow_unauthenticated=allow_unauthenticated,
                               bundle_dir=bundle_dir or default_bundles, public_url=public_url,
                               bundle_cache_dir=bundle_cache_dir)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http(s)://host:port` of the running server (the real port when bound to port 0)."""
        if self._server is None:
            raise HarnessError("the deployer is not running")
        return _http_url(self._server.server_address, self._server.scheme)

    def start(self) -> Deployer:
        """Bind and serve in a background thread; writes `<state_dir>/endpoint.json`."""
        if self._server is not None:
            return self
        context = tls_context(self.tls.cert_file, self.tls.key_file) if self.tls else None
        try:
            server = _TlsServer(self.bind, _Handler) if context else _Server(self.bind, _Handler)
        except OSError as exc:
            raise InfrastructureError(f"deployer cannot bind {self.bind[0]}:{self.bind[1]}: "
                                      f"{exc.strerror}") from None
        server.app = self.app
        if isinstance(server, _TlsServer) and context is not None:
            server.context = context
        self._server = server
        self._thread = serve_in_thread(server, "reference-deployer")
        atomic_write_text(self.state_dir / ENDPOINT_FILE,
                          json.dumps({"url": self.url, "pid": os.getpid()}) + "\n")
        return self

    def stop(self) -> None:
        """Stop serving and release the port; state is already on disk."""
        if self._server is None:
            return
        stop_serving(self._server, self._thread)
        self._server = self._thread = None
        (self.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Deployer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# CLI


def parse_bind(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) to a bind tuple."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ParameterError(f"--bind must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ucnb.reference.deployer", allow_abbrev=False,
                                     description="Serve the ucnb reference deployer.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cluster", type=Path, required=True, help="cluster file (YAML or JSON)")
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="accept node requests without the bootstrap token (lab only)")
    parser.add_argument("--token-file", type=Path, help=f"bootstrap token file (else ${BOOTSTRAP_TOKEN_ENV})")
    parser.add_argument("--admin-token-file", type=Path, help=f"admin token file (else ${ADMIN_TOKEN_ENV})")
    parser.add_argument("--bundle-dir", type=Path,
                        help="bundle directories (default: bundles/ beside the cluster file)")
    parser.add_argument("--public-url", help="base URL announced in bundle URLs (default: the Host header)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    return parser.parse_args(argv)


def _cli_tls(cert: Path | None, key: Path | None) -> TlsFiles | None:
    if (cert is None) != (key is None):
        raise ParameterError("--tls-cert and --tls-key go together")
    return TlsFiles(cert, key) if cert is not None and key is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; prints one JSON line `{"event": "listening", "url": ...}`."""
    args = _arguments(argv)
    try:
        deployer = Deployer(args.state_dir, args.cluster, bind=parse_bind(args.bind),
                            allow_unauthenticated=args.allow_unauthenticated,
                            bootstrap_token=read_secret(BOOTSTRAP_TOKEN_ENV, args.token_file),
                            admin_token=read_secret(ADMIN_TOKEN_ENV, args.admin_token_file),
                            bundle_dir=args.bundle_dir, public_url=args.public_url,
                            tls=_cli_tls(args.tls_cert, args.tls_key))
        deployer.start()
    except UcnbError as exc:
        print(f"deployer: {exc}", file=sys.stderr)
        return exc.exit_code
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(json.dumps({"event": "listening", "url": deployer.url, "state_dir": str(args.state_dir)}),
          flush=True)
    stopping.wait()
    deployer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
