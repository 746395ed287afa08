"""The small file habits every layer shares: atomic writes, `latest` links, key=value files, ids.

One home so that a proof root, a lab's state, the product's work root and hardware-smoke's run
folders are all written the same way: a reader (or a crash) sees the old file or the new one,
never half, and `latest` is never absent.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file renamed over it (fsynced first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Text flavour of `atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode(), mode)


def publish_dir(staging: Path, directory: Path, complete: str) -> None:
    """Move a fully built cache folder into place. A concurrent build of the same key may have
    won the race: its folder (holding `complete`) is kept; a half-made leftover is replaced."""
    try:
        staging.rename(directory)
    except OSError:
        if (directory / complete).exists():
            return
        shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            if not (directory / complete).exists():  # not a third build's result either
                raise


def point_link(link: Path, target: str) -> Path:
    """Point the symlink `link` at `target` (relative, so the tree can be moved whole) atomically:
    a new link is made beside the old one and renamed over it."""
    temp = link.with_name(f".{link.name}.{os.getpid()}.{secrets.token_hex(4)}")
    os.symlink(target, temp)
    os.replace(temp, link)
    return link


def refresh_latest(root: Path) -> Path:
    """`<parent>/latest` -> this dated folder."""
    return point_link(root.parent / "latest", root.name)


def new_run_id() -> str:
    """8 hex characters: short enough to read aloud, random enough for one host's runs."""
    return secrets.token_hex(4)


def utc_stamp() -> str:
    """`20261201T120000Z`: the dated-folder prefix, sortable."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def read_kv(path: Path, shell_quoted: bool = False) -> dict[str, str]:
    """`key=value` lines (environment.txt, status.env); comments and blank lines skipped; with
    `shell_quoted` the values are shell words (status.env is sourceable)."""
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, raw = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            if shell_quoted:
                words = shlex.split(raw)
                raw = words[0] if words else ""
            values[key.strip()] = raw
    return values


def update_kv(path: Path, values: dict[str, object], shell_quoted: bool = False) -> dict[str, str]:
    """Merge `values` into a key=value file (later values win; None removes a key), atomically."""
    current = read_kv(path, shell_quoted)
    for key, value in values.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = str(value).replace("\n", " ")
    quote = shlex.quote if shell_quoted else str
    atomic_write_text(path, "".join(f"{k}={quote(v)}\n" for k, v in current.items()))
    return current
