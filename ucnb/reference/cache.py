"""The reference binary cache: host-built bundles and target systems served from the lab gateway.

Stands in for the binary cache of `ultracloud.binary_cache_url=` (seed: `http://cache:8090`, "the
installer fetches host-built closures instead of compiling locally"). The host builds each node
class's install bundle and `desired_system.target_system` once (the same bytes the deployer
serves); the cache serves them over plain HTTP, as a nix cache does:

- `GET /nix-cache-info`: readiness (the file a nix substituter asks for first);
- `GET /<kind>/<name>.json`: `{"name", "sha256", "size", "archive"}` (kind: `systems`, `bundles`);
- `GET /<kind>/<name>.tar.gz`: the archive.

Integrity does not rest on this channel: the deployer's answers, over TLS, carry `bundle_sha256`
and `target_sha256`, and the installer and node agent check every archive against them (as nix
checks a substituted path against the hash it already knows). Every request is a line of
`requests.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ucnb.files import atomic_write_text
from ucnb.reference.cluster import NAME_PATTERN
from ucnb.reference.static import StaticServer

NAME_RE = re.compile(NAME_PATTERN)
KINDS = ("systems", "bundles")
CACHE_INFO = "StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 30\n"


class BinaryCache:
    """A directory of prebuilt system archives and the HTTP server that serves it."""

    def __init__(self, directory: Path, bind: tuple[str, int], log_path: Path) -> None:
        self.directory = directory
        for kind in KINDS:
            (directory / kind).mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "nix-cache-info", CACHE_INFO)
        self.server = StaticServer(directory, bind, log_path)
        self.published: dict[str, dict[str, Any]] = {}

    def publish(self, name: str, archive: Path, kind: str = "systems") -> dict[str, Any]:
        """Put the archive of system (or bundle) `name` in the cache (hard link when possible)."""
        if not NAME_RE.fullmatch(name) or kind not in KINDS:
            raise ValueError(f"{kind} name {name!r} is not a plain name, or {kind!r} not one of {KINDS}")
        target = self.directory / kind / f"{name}.tar.gz"
        target.unlink(missing_ok=True)
        try:
            os.link(archive, target)
        except OSError:
            shutil.copy2(archive, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        entry = {"name": name, "sha256": digest, "size": target.stat().st_size,
                 "archive": f"{kind}/{name}.tar.gz"}
        atomic_write_text(self.directory / kind / f"{name}.json", json.dumps(entry, indent=1) + "\n")
        self.published[f"{kind}/{name}"] = entry
        return entry

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> BinaryCache:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def requests(self) -> list[dict[str, Any]]:
        return self.server.requests()
