"""Debian packages fetched and unpacked into the cache, never installed on the host."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

from ucnb import files, paths
from ucnb.errors import InfrastructureError
from ucnb.files import atomic_write_text


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise InfrastructureError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}")
    return result.stdout


APT_LISTS = Path("/var/lib/apt/lists")


def resolve_dependency(metapackage: str, prefix: str) -> str:
    """The concrete package a metapackage points at today (kernel ABI numbers move: never pin).

    Remembered until the package lists change (`apt-get update`): apt-cache costs half a second.
    """
    memo = paths.cache_dir("debs") / f"{metapackage}.resolved.json"
    lists = APT_LISTS.stat().st_mtime_ns if APT_LISTS.exists() else 0
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(memo.read_text())
        if saved["lists"] == lists and saved["prefix"] == prefix:
            return str(saved["package"])
    out = _run(["apt-cache", "depends", metapackage])
    for match in re.finditer(r"Depends:\s+(\S+)", out):
        if match.group(1).startswith(prefix):
            atomic_write_text(memo, json.dumps({"lists": lists, "prefix": prefix, "package": match.group(1)}))
            return match.group(1)
    raise InfrastructureError(
        f"apt-cache knows no {prefix}* dependency of {metapackage}: run `apt-get update`")


def unpacked(package: str) -> Path:
    """`apt-get download` a package and `dpkg -x` it into the cache; returns the unpacked root."""
    root = paths.cache_dir("debs") / package
    if (root / ".unpacked").exists():
        return root
    from ucnb.lab.leases import temp_dir

    with temp_dir(paths.cache_dir("debs"), "deb-unpack") as tmp:
        _run(["apt-get", "download", "-q", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise InfrastructureError(f"apt-get download {package} produced {debs}")
        staging = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
        for modules in staging.glob("lib/modules/*/modules.order"):  # a kernel: its module index
            # is built here, so builds reading the cache never write into it (and never race)
            _run(["busybox", "depmod", "-b", str(staging), modules.parent.name])
        (staging / ".unpacked").write_text(debs[0].name + "\n")
        files.publish_dir(staging, root, complete=".unpacked")
    return root
