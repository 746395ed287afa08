"""Redaction: secrets are masked in every encoding an artifact gives them (pure: no VMs)."""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import html
import io
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from ucnb.evidence.redact import (
    MASK,
    MIN_SECRET_LENGTH,
    SECRETS_ENV,
    Redactor,
    SecretTooShort,
    from_environment,
)

ESCAPING = "pä<ss\"w\\rd&'x"            # a double quote, a backslash before `rd`, <, &, ', non-ASCII
TOKEN = secrets.token_urlsafe(30)       # 40 characters, like the tokens a run generates
CANARIES = pytest.mark.parametrize("secret", [ESCAPING, TOKEN], ids=["escaping", "token"])


def _wrapped_console(secret: str) -> str:
    """A serial console log that wraps a line inside the secret, once at every position."""
    lines = []
    for i in range(1, len(secret)):
        newline = "\r\n" if i % 2 else "\n"
        lines.append(f"[{i:4d}] cmdline: token={secret[:i]}{newline}{secret[i:]} quiet{newline}")
    return "".join(lines)


def _write_artifacts(root: Path, secret: str) -> list[Path]:
    """The secret written the ways lanes, nbconvert, loggers and HTTP clients write it."""
    root.mkdir(parents=True)
    doc = {"token": secret, "note": f"before {secret} after"}
    basic = [base64.b64encode(f"{user}:{secret}".encode()).decode() for user in ("u", "us", "usr", "user")]
    files = {
        "ascii.json": json.dumps(doc, ensure_ascii=True),
        "utf8.json": json.dumps(doc, ensure_ascii=False, indent=1),
        "events.jsonl": json.dumps({"table": "steps", "row": {"detail": json.dumps(doc)}}) + "\n",
        "table.csv": _csv([["name", "detail"], ["token", secret], ["quoted", f'say "{secret}" now']]),
        "page.html": (f"<p>{html.escape(secret)}</p>\n<p title=\"{html.escape(secret, quote=True)}\">"
                      f"{html.escape(secret, quote=False)}</p>\n"),
        "url.txt": (f"https://deployer/phone-home?token={quote_plus(secret)}\n"
                    f"https://deployer/{quote(secret)}/x\n{quote(secret, safe='')}\n"),
        "base64.txt": "\n".join([
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(secret.encode()).decode().rstrip("="),
            base64.urlsafe_b64encode(secret.encode()).decode(),
            base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
            *(f"Authorization: Basic {b}" for b in basic),
            *(base64.urlsafe_b64encode(f"{u}:{secret}".encode()).decode().rstrip("=") for u in "ab"),
        ]) + "\n",
        "repr.txt": f"{secret!r}\n{doc!r}\n{secret.encode()!r}\n{secret!a}\nkwargs={({'t': secret})}\n",
        "console.log": _wrapped_console(secret),
        "result.json": json.dumps({"error": {"message": "console:\n" + _wrapped_console(secret)[:2000]}},
                                  indent=2),
    }
    for name, content in files.items():
        (root / name).write_text(content, encoding="utf-8", newline="")
    nb = new_notebook(cells=[new_code_cell("run()", outputs=[
        new_output("stream", name="stdout", text=_wrapped_console(secret)[:3000]),
        new_output("execute_result", execution_count=1,
                   data={"application/json": doc, "text/plain": repr(doc)}),
        new_output("display_data", data={"text/plain": json.dumps(doc)}),   # a JSON string holding JSON
        new_output("display_data", data={"text/html": f"<td>{html.escape(secret)}</td>"}),  # a table
        new_output("display_data", data={"text/plain": json.dumps({"html": html.escape(secret)})}),
        new_output("error", ename="LaneFailure", evalue=f"refused {secret}",
                   traceback=[f"LaneFailure: refused {secret[:5]}\n{secret[5:]}"]),
    ])])
    nbformat.write(nb, root / "lane.ipynb")
    return sorted(root.iterdir())


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, recursively through strings that are JSON themselves; a
    list of strings (nbformat's multi-line text) also as one joined string."""
    if isinstance(value, str):
        yield value
        try:
            inner = json.loads(value)
        except ValueError:
            return
        if not isinstance(inner, str | int | float | bool | None):
            yield from _strings(inner)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            yield "".join(value)
        for item in value:
            yield from _strings(item)


def _unbroken(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def _base64_words(text: str) -> Iterator[bytes]:
    """Each token-looking word decoded as base64 (both alphabets) at each 4-character phase."""
    for word in re.findall(r"[A-Za-z0-9+/_=-]{8,}", text):
        for skip in range(4):
            piece = word[skip:].rstrip("=")
            piece = piece[:len(piece) - len(piece) % 4] if len(piece) % 4 == 1 else piece
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded = decode(piece + "=" * (-len(piece) % 4))
                except (binascii.Error, ValueError):
                    continue
                yield decoded


def _python_literals(text: str) -> Iterator[str]:
    for literal in re.findall(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*\"""", text):
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue
        yield value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decodings(text: str) -> Iterator[tuple[str, str | bytes]]:
    """(how, what) a reader gets from `text` by one decoding."""
    yield "raw", text
    yield "html-unescaped", html.unescape(text)
    yield "url-unquoted", unquote(text)
    yield "url-unquoted-plus", unquote_plus(text)
    for row in csv.reader(io.StringIO(text, newline="")):
        for field in row:
            yield "csv-parsed", field
    for decoded in _base64_words(text):
        yield "base64-decoded", decoded
    for value in _python_literals(text):
        yield "python-literal", value


def _leaks(path: Path, secret: str) -> list[str]:
    """How the secret can still be read from the file (empty: it cannot): the decodings of its
    text, and of every string in it when it is JSON (JSON Lines), recursively."""
    text = path.read_bytes().decode("utf-8", "replace")
    texts = [("", text)]
    if path.suffix in (".json", ".ipynb", ".jsonl"):
        docs = [json.loads(line) for line in text.splitlines() if line] if path.suffix == ".jsonl" \
            else [json.loads(text)]   # still valid JSON after redaction
        texts += [("json-decoded ", s) for d in docs for s in _strings(d)]
    found = set()
    for prefix, content in texts:
        for how, value in _decodings(content):
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if secret in value or secret in _unbroken(value):
                found.add(prefix + how)
    return sorted(found)


@CANARIES
def test_tree_masks_every_encoding(tmp_path: Path, secret: str) -> None:
    files = _write_artifacts(tmp_path / "root", secret)
    for path in files:   # the checks do see the secret before redaction
        assert _leaks(path, secret), f"{path.name}: the test's decoders cannot see the secret"
    redactor = Redactor([secret])
    assert redactor.tree(tmp_path / "root") == files
    for path in files:
        assert _leaks(path, secret) == [], path.name
        assert MASK.encode() in path.read_bytes()
    assert nbformat.validate(nbformat.read(tmp_path / "root" / "lane.ipynb", as_version=4)) is None
    assert redactor.tree(tmp_path / "root") == []   # nothing left for a second pass


@CANARIES
def test_surrounding_text_survives(secret: str) -> None:
    redactor = Redactor([secret])
    assert redactor.text(f"before {secret} after") == f"before {MASK} after"
    assert redactor.data(f"before {secret} after".encode()) == f"before {MASK} after".encode()
    for i in range(1, len(secret)):
        for newline in ("\n", "\r\n"):
            wrapped = f"line one\nbefore {secret[:i]}{newline}{secret[i:]} after\nline three\n"
            assert redactor.text(wrapped) == f"line one\nbefore {MASK}{newline} after\nline three\n"
    escaped = json.dumps({"message": f"console: {secret[:7]}\n{secret[7:]} end"})
    assert json.loads(redactor.text(escaped)) == {"message": f"console: {MASK}\n end"}
    assert redactor.text("no secret here\r\n" * 3) == "no secret here\r\n" * 3
    backslash_n = json.dumps(f"{secret[:6]}\\n{secret[6:]}")   # a literal backslash-n is no line break
    assert redactor.text(backslash_n) == backslash_n


def test_secret_across_many_wraps_and_mime_base64() -> None:
    redactor = Redactor([TOKEN])
    narrow = "\r\n".join(TOKEN[i:i + 7] for i in range(0, len(TOKEN), 7))   # a 7-column console
    assert redactor.text(f"x {narrow} y") == f"x {MASK}" + "\r\n" * narrow.count("\r\n") + " y"
    mime = base64.encodebytes(("k" * 70 + TOKEN).encode()).decode()          # wrapped at 76 columns
    assert TOKEN.encode() not in b"".join(_base64_words(redactor.text(mime)))


def test_short_secrets_are_refused_without_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    value = "s3cr3t!"
    assert len(value) < MIN_SECRET_LENGTH
    monkeypatch.setenv("BMC_PASSWORD", value)
    with pytest.raises(SecretTooShort) as refused:
        Redactor().add_env("BMC_PASSWORD")
    assert isinstance(refused.value, ValueError)
    assert "environment variable BMC_PASSWORD" in str(refused.value) and value not in str(refused.value)
    with pytest.raises(SecretTooShort, match="secret #2") as refused:
        Redactor(["long-enough-secret", value])
    assert value not in str(refused.value)
    redactor = Redactor([None, ""])
    redactor.add(None)
    redactor.add("")
    monkeypatch.delenv("UNSET_TOKEN", raising=False)
    assert redactor.add_env("UNSET_TOKEN") is None
    assert not redactor.active
    assert redactor.text("unchanged") == "unchanged"


def test_from_environment_and_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", TOKEN)
    monkeypatch.setenv(SECRETS_ENV, "OPERATOR_TOKEN,UNSET_VARIABLE_X")
    monkeypatch.delenv("UNSET_VARIABLE_X", raising=False)
    redactor = from_environment()
    assert from_environment({SECRETS_ENV: "T", "T": TOKEN}).text(TOKEN) == MASK
    with pytest.raises(SecretTooShort, match="environment variable T"):
        from_environment({SECRETS_ENV: "T", "T": "short"})
    generated = tmp_path / "generated"
    generated.write_text("uc-run-0123456789abcdef\n\nuc-admin-fedcba9876543210\n")
    redactor.add_file(generated)
    redactor.add_file(tmp_path / "missing")
    assert redactor.text(f"{TOKEN} uc-run-0123456789abcdef uc-admin-fedcba9876543210") == \
        f"{MASK} {MASK} {MASK}"
    generated.write_text("uc-run-0123456789abcdef\nshort\n")
    with pytest.raises(SecretTooShort, match="line 2 of"):
        redactor.add_file(generated)


def test_tree_keeps_modes_and_never_follows_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "logs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(f"token {TOKEN}\n")
    (root / "logs" / "node.log").write_text(f"token {TOKEN}\n")
    (root / "logs" / "node.log").chmod(0o640)
    (root / "readonly.txt").write_text(f"{TOKEN}\n")
    (root / "readonly.txt").chmod(0o444)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "fifo")
    changed = Redactor([TOKEN]).tree(root)
    assert changed == [root / "logs" / "node.log", root / "readonly.txt"]
    assert stat.S_IMODE((root / "logs" / "node.log").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "readonly.txt").stat().st_mode) == 0o444
    assert (root / "logs" / "node.log").read_text() == f"token {MASK}\n"
    assert TOKEN in (outside / "secret.txt").read_text()          # not reached through either link
    assert (root / "link.txt").is_symlink() and (root / "linked-dir").is_symlink()
    assert sorted(p.name for p in root.rglob("*")) == sorted(
        ["logs", "node.log", "readonly.txt", "link.txt", "linked-dir", "fifo"])   # no temporary left


@CANARIES
def test_stream_catches_a_secret_split_over_writes(secret: str) -> None:
    redactor = Redactor([secret])
    for i in range(len(secret) + 1):
        out: list[str] = []
        writer = redactor.stream(out.append)
        writer.write("booting...\n" * 20 + f"cmdline token={secret[:i]}")
        writer.write(f"{secret[i:]} quiet\n")
        assert secret not in "".join(out)
        writer.flush()
        assert "".join(out) == "booting...\n" * 20 + f"cmdline token={MASK} quiet\n"
    out = []
    with redactor.stream(out.append) as writer:
        for char in f"{'x' * 500} {secret[:9]}\r\n{secret[9:]} {'y' * 500}\n":
            writer.write(char)
        assert len("".join(out)) > 400   # long output is not held back whole
    assert "".join(out) == f"{'x' * 500} {MASK}\r\n {'y' * 500}\n"


def test_stream_without_secrets_passes_through() -> None:
    out: list[str] = []
    writer = Redactor().stream(out.append)
    writer.write("hello\n")
    assert out == ["hello\n"]


def test_tree_on_ten_megabytes_of_console(tmp_path: Path) -> None:
    """Not a timed assertion: prints how long the pass takes (`pytest -s`)."""
    other = secrets.token_urlsafe(24)
    redactor = Redactor([TOKEN, ESCAPING, other])
    line = "[  12.345678] systemd[1]: Started Some Service with a fairly long description text.\r\n"
    block = line * 1000
    chunks = []
    for i in range(10 * 1024 * 1024 // len(block)):
        chunks.append(block)
        if i % 10 == 0:
            chunks.append(f"cmdline ultracloud.bootstrap_token={TOKEN[:17]}\r\n{TOKEN[17:]} quiet\r\n")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "node-serial.log"
    log.write_text("".join(chunks), newline="")
    size = log.stat().st_size
    started = time.perf_counter()
    assert redactor.tree(tmp_path) == [log]
    took = time.perf_counter() - started
    assert TOKEN not in _unbroken(log.read_text())
    print(f"\ntree() over {size / 2**20:.1f} MiB of console log, 3 secrets, "
          f"{len(redactor._data_forms().flat)} forms: {took:.2f} s")


def test_tree_redacts_the_other_files_when_one_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a.log", "b.log", "c.log"):
        (tmp_path / name).write_text(f"{TOKEN}\n")
    redactor = Redactor([TOKEN])
    real_file = Redactor.file

    def failing(self: Redactor, path: Path) -> bool:
        if path.name == "a.log":
            raise PermissionError(13, "Permission denied")
        return real_file(self, path)

    monkeypatch.setattr(Redactor, "file", failing)
    with pytest.raises(OSError, match=r"could not redact 1 file\(s\).*a\.log"):
        redactor.tree(tmp_path)
    assert [(tmp_path / n).read_text() for n in ("b.log", "c.log")] == [f"{MASK}\n"] * 2
