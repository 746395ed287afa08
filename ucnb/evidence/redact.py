"""Secrets never reach an artifact: every known secret value is masked, in every encoding it takes.

A registered secret is masked as it appears raw and in the forms artifacts give it (see
`encoded_forms`): JSON-escaped (both `ensure_ascii` modes, and JSON inside JSON as an .ipynb holds
it), CSV-quoted, HTML/XML-escaped (named and numeric entities; also inside JSON, as a notebook's
HTML table output holds it), URL-encoded, Python repr/ascii (str and bytes), shell-quoted, hex, and
base64 (standard and urlsafe, padded or not, and inside a longer base64 text such as `user:secret`
Basic auth, at each of the three byte alignments).

A form is also found when line breaks cut it (a serial console wraps long lines at a fixed width,
base64 is wrapped at 76 columns): the search runs over the text with every CR and LF removed and
maps what it finds back, and again over JSON/repr text with its escaped breaks removed (`\\n`,
`\\r\\n`, and nbformat's split of a multi-line string into a list of lines). The match is replaced
by MASK followed by the line breaks it spanned, so the text around it and the line count survive.

Limits (what is not caught):
- base64 inside a longer text: the 1-2 characters at each end of the secret's stretch also depend
  on the neighbouring bytes and stay visible; each carries at most 4 bits of the secret's first or
  last byte. Base64 (and hex, URL) is applied to the raw secret only, not to its escaped forms.
- A form cut by anything but line breaks (another line interleaved into it, a timestamp prefix on
  the continuation line, ANSI colour codes inside it) is not recognised.
- Escaped breaks are recognised one JSON/repr level deep: a wrapped secret inside JSON inside JSON
  is not; a break right next to a backslash of the secret may hide it from the escaped-break pass.
- Not covered: encodings other than UTF-8 (Latin-1, UTF-16 files), compressed or archived files,
  other encoders' spellings (`\\u00E4`, `\\/`, Go's `\\u003c`), layers beyond those listed in
  `encoded_forms` (URL-encoded JSON, base64 of an escaped form), and file names.
- `file`/`tree` read each file whole into memory.

Secrets shorter than MIN_SECRET_LENGTH are refused (`SecretTooShort`): masking them would shred
ordinary words, and their base64 stretches would be too short to be specific.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import re
import shlex
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import AnyStr, Generic
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 8   # shorter values are refused: they would mask ordinary words
STREAM_SLACK = 64       # extra characters a streaming writer holds back for line breaks inside a form


class SecretTooShort(ValueError):
    """A secret too short to mask safely was registered; the message names its source, not its value."""

    def __init__(self, source: str, length: int) -> None:
        super().__init__(f"the secret from {source} has {length} characters: secrets shorter than "
                         f"{MIN_SECRET_LENGTH} cannot be masked safely in artifacts, so it is refused "
                         "(use a longer one)")
        self.source, self.length = source, length


# -- the encoded forms of one secret ---------------------------------------------------------------

def _json(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)[1:-1]


def _repr_forms(value: str) -> set[str]:
    """Python's repr/ascii of a str or its UTF-8 bytes, without the quotes: the style with `'`
    quotes always (a longer string holding `"` gets it), the `"` style when the secret has no `"`."""
    out: set[str] = set()
    raw = value.encode()
    for text in (repr, ascii):
        out.add(text(value + '"')[1:-2])
        if '"' not in value:
            out.add(text(value + "'")[1:-2])
    out.add(repr(raw + b'"')[2:-2])
    if '"' not in value:
        out.add(repr(raw + b"'")[2:-2])
    return out


def _html_forms(value: str, full: bool) -> set[str]:
    """HTML/XML escapes: `& < >` always; `"` and `'` raw or as the entities html.escape, markupsafe
    (jinja, nbconvert), ElementTree and XML use (every pairing when `full`, the common ones else);
    non-ASCII raw or as numeric character references."""
    base = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    pairs = [(q, a) for q in ('"', "&quot;", "&#34;") for a in ("'", "&#x27;", "&#39;", "&apos;")] if full \
        else [("&quot;", "&#x27;"), ('"', "'"), ("&#34;", "&#39;"), ("&quot;", "'")]
    out: set[str] = set()
    for q, a in pairs:
        escaped = base.replace('"', q).replace("'", a)
        out |= {escaped, escaped.encode("ascii", "xmlcharrefreplace").decode()}
        if full:
            out.add(escaped.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#09;"))
    return out


def _url_forms(value: str) -> set[str]:
    out = {quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="/")}
    return out | {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in out}


def _base64_forms(value: str) -> set[str]:
    """The secret's base64 alone (padded or not) and the stretch of a longer base64 text that only
    the secret's bytes determine, for each of the three alignments of the secret in that text."""
    raw = value.encode()
    standard: set[bytes] = set()
    whole = base64.b64encode(raw)
    standard |= {whole, whole.rstrip(b"=")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        first = -(-8 * offset // 6)           # the first character made of the secret's bits only
        end = 8 * (offset + len(raw)) // 6     # past the last one
        standard.add(encoded[first:end])
    urlsafe = {f.replace(b"+", b"-").replace(b"/", b"_") for f in standard}
    return {f.decode() for f in standard | urlsafe}


def encoded_forms(secret: str) -> frozenset[str]:
    """Every spelling of `secret` that redaction masks.

    Layers: how code quotes it (raw, repr/ascii of str and bytes, shell); that JSON-escaped; that
    JSON-escaped again (an .ipynb holding a JSON string or a repr). CSV and HTML escaping apply to
    the first two layers, and their results are JSON-escaped once or twice (an HTML table in a
    notebook's output); URL, base64 and hex encodings apply to the raw secret.
    """
    quoted = {secret, shlex.quote(secret).removeprefix("'").removesuffix("'")} | _repr_forms(secret)
    once = quoted | {_json(f, a) for f in quoted for a in (True, False)}
    forms = once | {_json(f, a) for f in once for a in (True, False)}
    markup: set[str] = set()
    for form in once:
        markup.add(form.replace('"', '""'))        # CSV quoting
        markup |= _html_forms(form, full=form == secret)
    # Markup inside JSON, one or two levels: an .ipynb output holding an HTML table, a JSON
    # string holding a CSV row.
    in_json = {_json(f, a) for f in markup - once for a in (True, False)}
    forms |= markup | in_json | {_json(f, a) for f in in_json for a in (True, False)}
    forms |= _url_forms(secret)
    forms |= _base64_forms(secret)
    forms |= {secret.encode().hex(), secret.encode().hex().upper()}
    return frozenset(f for f in forms if len(f) >= MIN_SECRET_LENGTH)


# -- finding forms, through line breaks ---------------------------------------------------------------

@dataclass(frozen=True)
class _Syntax(Generic[AnyStr]):
    """The few constants the search needs, as str or as bytes."""

    empty: AnyStr
    cr: AnyStr
    lf: AnyStr
    escaped_breaks: tuple[AnyStr, AnyStr]  # a text without both has no escaped break to remove
    mask: AnyStr
    line_breaks: re.Pattern[AnyStr]
    # An escaped line break (optionally with nbformat's `",\n   "` between two lines of a list),
    # group `b`, after an even run of backslashes (escaped backslashes): `\\n` is no break.
    escapes: re.Pattern[AnyStr]
    escapes_split: re.Pattern[AnyStr]   # the same, splitting around a break but keeping the backslashes


_BREAK = r'(?:\\r\\n|\\n|\\r)(?:"\s*,\s*")?'
_ESCAPES = rf"(?<!\\)(?:\\\\)*(?P<b>{_BREAK})"
# Starts with a literal backslash (a fast scan): the first of the run, then the escaped backslashes,
# kept as the group (all backslashes look alike), then the break without its own backslash.
_ESCAPES_SPLIT = r'\\(?<!\\\\)((?:\\\\)*)(?:r\\n|n|r)(?:"\s*,\s*")?'
_STR = _Syntax("", "\r", "\n", ("\\n", "\\r"), MASK, re.compile(r"[\r\n]+"), re.compile(_ESCAPES),
               re.compile(_ESCAPES_SPLIT))
_BYTES = _Syntax(b"", b"\r", b"\n", (b"\\n", b"\\r"), MASK.encode(), re.compile(rb"[\r\n]+"),
                 re.compile(_ESCAPES.encode()), re.compile(_ESCAPES_SPLIT.encode()))

# A match: [start, end) of the original text, and the line breaks inside it (position, text) that
# are written back after the mask.
_Span = tuple[int, int, tuple[tuple[int, AnyStr], ...]]


@dataclass(frozen=True)
class _Stripped(Generic[AnyStr]):
    """A text with some tokens removed, and the map back to the original's positions."""

    text: AnyStr
    at: list[int]                      # where each removed token was, as a position in `text`
    removed: list[int]                 # characters removed up to and including each token
    tokens: list[tuple[int, AnyStr]]   # (position in the original, token)

    def span(self, start: int, end: int) -> _Span[AnyStr]:
        first, last = bisect.bisect_right(self.at, start), bisect.bisect_right(self.at, end - 1)
        begin = start + (self.removed[first - 1] if first else 0)
        stop = end + (self.removed[last - 1] if last else 0)
        return begin, stop, tuple(self.tokens[first:last])


def _strip(data: AnyStr, pattern: re.Pattern[AnyStr], group: str | int) -> _Stripped[AnyStr]:
    pieces: list[AnyStr] = []
    at: list[int] = []
    removed: list[int] = []
    tokens: list[tuple[int, AnyStr]] = []
    last = total = 0
    for m in pattern.finditer(data):
        start, end = m.span(group)
        if start < 0:
            continue
        pieces.append(data[last:start])
        at.append(start - total)
        total += end - start
        removed.append(total)
        tokens.append((start, data[start:end]))
        last = end
    pieces.append(data[last:])
    return _Stripped(data[:0].join(pieces), at, removed, tokens)


class _Unbroken(Generic[AnyStr]):
    """A text without its CR and LF, mapped back to the original only where a match needs it:
    consoles hold a line break every 80 characters, and most files hold no secret."""

    BLOCK = 4096

    def __init__(self, data: AnyStr, syntax: _Syntax[AnyStr]) -> None:
        self.data: AnyStr = data
        self.syntax: _Syntax[AnyStr] = syntax
        self.text: AnyStr = data.replace(syntax.cr, syntax.empty).replace(syntax.lf, syntax.empty)
        self._starts: list[int] = []   # the position in `text` where each block of `data` begins

    def _original(self, i: int) -> int:
        data, s = self.data, self.syntax
        if len(self.text) == len(data):
            return i
        if not self._starts:
            kept = 0
            for start in range(0, len(data), self.BLOCK):
                self._starts.append(kept)
                end = start + self.BLOCK
                kept += len(data[start:end]) - data.count(s.cr, start, end) - data.count(s.lf, start, end)
        block = bisect.bisect_right(self._starts, i) - 1
        position, kept = block * self.BLOCK, self._starts[block]
        for m in s.line_breaks.finditer(data, position):
            if i < kept + m.start() - position:
                break
            kept += m.start() - position
            position = m.end()
        return position + i - kept

    def span(self, start: int, end: int) -> _Span[AnyStr]:
        begin, stop = self._original(start), self._original(end - 1) + 1
        return begin, stop, tuple((m.start(), m.group()) for m in self.syntax.line_breaks.finditer(
            self.data, begin, stop))


def _find_all(haystack: AnyStr, needle: AnyStr) -> list[int]:
    found = []
    i = haystack.find(needle)
    while i >= 0:
        found.append(i)
        i = haystack.find(needle, i + 1)
    return found


@dataclass(frozen=True)
class _Forms(Generic[AnyStr]):
    """Every form of every secret, prepared for each pass of the search."""

    syntax: _Syntax[AnyStr]
    exact: tuple[AnyStr, ...]      # forms holding a CR or LF themselves, searched as they are
    flat: tuple[AnyStr, ...]       # every form without CR/LF, searched in the text without CR/LF
    unescaped: tuple[AnyStr, ...]  # every form without escaped breaks, searched in the text without them
    every: frozenset[AnyStr]
    longest: int

    @classmethod
    def of(cls, forms: Iterable[AnyStr], syntax: _Syntax[AnyStr]) -> _Forms[AnyStr]:
        forms = sorted(set(forms), key=len, reverse=True)
        flat = {f.replace(syntax.cr, syntax.empty).replace(syntax.lf, syntax.empty) for f in forms}
        unescaped = {_strip(f, syntax.escapes, "b").text for f in forms}
        return cls(syntax, tuple(f for f in forms if syntax.cr in f or syntax.lf in f),
                   tuple(f for f in flat if len(f) >= MIN_SECRET_LENGTH),
                   tuple(f for f in unescaped if len(f) >= MIN_SECRET_LENGTH),
                   frozenset(forms), max(map(len, forms), default=0))

    def spans(self, data: AnyStr) -> list[_Span[AnyStr]]:
        s = self.syntax
        spans: list[_Span[AnyStr]] = []
        for form in self.exact:
            spans += [(i, i + len(form), ()) for i in _find_all(data, form)]
        unbroken = _Unbroken(data, s)
        spans += [unbroken.span(i, i + len(f)) for f in self.flat for i in _find_all(unbroken.text, f)]
        if any(e in data for e in s.escaped_breaks):
            text = s.empty.join(s.escapes_split.split(data))
            hits = [(i, i + len(f)) for f in self.unescaped for i in _find_all(text, f)] \
                if len(text) < len(data) else []
            if hits:   # the map back is built only for a file that holds a match
                unescaped = _strip(data, s.escapes, "b")
                for a, b in hits:
                    start, end, tokens = unescaped.span(a, b)
                    # A form that is all there, unbroken, had `\\n` or `\\r` of its own (a raw
                    # backslash-n in the secret): nothing of it is a line break to keep.
                    spans.append((start, end, () if data[start:end] in self.every else tokens))
        return spans

    def render(self, data: AnyStr, spans: Sequence[_Span[AnyStr]]) -> AnyStr:
        """`data` with each (merged) span replaced by the mask and the line breaks it held."""
        out: list[AnyStr] = []
        last = 0
        for start, end, tokens in _merge(spans):
            out += [data[last:start], self.syntax.mask]
            kept_to = start
            for position, token in sorted(tokens, key=lambda t: (t[0], -len(t[1]))):
                if position >= kept_to:   # a CR/LF inside an nbformat line split is kept once
                    out.append(token)
                    kept_to = position + len(token)
            last = end
        out.append(data[last:])
        return data[:0].join(out)


def _merge(spans: Iterable[_Span[AnyStr]]) -> list[_Span[AnyStr]]:
    merged: list[_Span[AnyStr]] = []
    for start, end, tokens in sorted(spans, key=lambda s: (s[0], s[1])):
        if merged and start <= merged[-1][1]:
            s0, e0, t0 = merged[-1]
            merged[-1] = (s0, max(e0, end), t0 + tokens)
        else:
            merged.append((start, end, tokens))
    return merged


# -- the redactor ---------------------------------------------------------------------------------------

class Redactor:
    """Holds the secret values of one run and removes them, in every form, from text, bytes and files."""

    def __init__(self, secrets: Iterable[str | None] | None = None) -> None:
        # Lanes side by side add to one suite's redactor while others print through it: `add`
        # swaps in a new set under the lock; the compiled forms remember the set they were built
        # from, so a reader never keeps forms that miss a secret added meanwhile.
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._text: tuple[frozenset[str], _Forms[str]] | None = None
        self._data: tuple[frozenset[str], _Forms[bytes]] | None = None
        for number, s in enumerate(secrets or [], start=1):
            self.add(s, source=f"secret #{number} given to Redactor()")

    def add(self, secret: str | None, source: str = "a registered secret") -> None:
        """Register a secret; empty or None means "not set". Raises SecretTooShort (naming `source`,
        never the value) for a value shorter than MIN_SECRET_LENGTH."""
        if not secret:
            return
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretTooShort(source, len(secret))
        with self._lock:
            if secret not in self._secrets:
                self._secrets = self._secrets | {secret}

    def update(self, other: Redactor) -> None:
        """Register every secret `other` holds (e.g. each lane's, for a suite's own files)."""
        for secret in other._secrets:
            self.add(secret)

    def add_file(self, path: Path) -> None:
        """Register every non-empty line of a generated-secrets file."""
        if path.exists():
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                self.add(line, source=f"line {number} of {path}")

    def add_env(self, name: str) -> str | None:
        """Register the value of environment variable `name` as a secret and return it."""
        value = os.environ.get(name)
        self.add(value, source=f"environment variable {name}")
        return value

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def _text_forms(self) -> _Forms[str]:
        secrets, cached = self._secrets, self._text
        if cached is None or cached[0] is not secrets:
            cached = self._text = (secrets, _Forms.of((f for s in secrets for f in encoded_forms(s)), _STR))
        return cached[1]

    def _data_forms(self) -> _Forms[bytes]:
        secrets, cached = self._secrets, self._data
        if cached is None or cached[0] is not secrets:
            cached = self._data = (secrets, _Forms.of(
                (f.encode() for s in secrets for f in encoded_forms(s)), _BYTES))
        return cached[1]

    def text(self, value: str) -> str:
        if not self._secrets:
            return value
        forms = self._text_forms()
        spans = forms.spans(value)
        return forms.render(value, spans) if spans else value

    def data(self, value: bytes) -> bytes:
        if not self._secrets:
            return value
        forms = self._data_forms()
        spans = forms.spans(value)
        return forms.render(value, spans) if spans else value

    def file(self, path: Path) -> bool:
        """Redact a regular file in place; True when it changed. A symlink, FIFO, socket or device
        is left alone (never followed or opened); the clean copy replaces the file atomically and
        keeps its mode (and owner, as root)."""
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        try:   # O_NOFOLLOW: the path was not swapped for a symlink since
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            if os.path.islink(path):
                return False
            raise
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return False
            raw = f.read()
        clean = self.data(raw)
        if clean == raw:
            return False
        _replace(path, clean, info)
        return True

    def tree(self, root: Path) -> list[Path]:
        """Redact every regular file under root (symlinks are never followed); returns the files
        that held a secret."""
        if not self._secrets:
            return []
        files: list[Path] = []
        for directory, _, names in os.walk(root, followlinks=False):
            files += [Path(directory) / n for n in names]
        changed: list[Path] = []
        failed: list[tuple[Path, OSError]] = []
        for path in sorted(files):   # one unreadable file does not leave the others unredacted
            try:
                if self.file(path):
                    changed.append(path)
            except FileNotFoundError:
                continue   # removed meanwhile: no longer an artifact
            except OSError as exc:
                failed.append((path, exc))
        if failed:
            raise OSError(f"could not redact {len(failed)} file(s) under {root}: "
                          + "; ".join(f"{p}: {e.strerror or e}" for p, e in failed))
        return changed

    @property
    def hold(self) -> int:
        """How many trailing characters a streaming writer keeps back."""
        return self._text_forms().longest + STREAM_SLACK if self._secrets else 0

    def stream(self, write: Callable[[str], object], flush: Callable[[], object] | None = None,
               ) -> RedactingWriter:
        """A file-like writer that redacts what it is given before passing it to `write`."""
        return RedactingWriter(self, write, flush)


def _replace(path: Path, content: bytes, info: os.stat_result) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".redact", dir=path.parent)
    except PermissionError:   # a directory we may not write: rewrite the file itself
        with open(os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC), "wb") as f:
            f.write(content)
        return
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode))
            if os.geteuid() == 0:
                os.fchown(out.fileno(), info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RedactingWriter:
    """Console output through a redactor: a secret never reaches `write`, even when it is split
    over two writes or wrapped by line breaks.

    It holds back the last `Redactor.hold` characters (the longest form of any secret, plus
    STREAM_SLACK for line breaks inside it) until more text comes or `flush`/`close` is called:
    call `flush` where the output must be seen (a prompt). A secret cut by more line breaks than
    the slack covers, or left incomplete at `flush`, is not caught.
    """

    def __init__(self, redactor: Redactor, write: Callable[[str], object],
                 flush: Callable[[], object] | None = None) -> None:
        self._redactor, self._write, self._flush = redactor, write, flush
        self._pending = ""
        self._lock = threading.Lock()   # lanes side by side print through one suite console

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            hold = self._redactor.hold
            if len(self._pending) > hold:
                self._emit(len(self._pending) - hold)
        return len(text)

    def _emit(self, cut: int) -> None:
        pending = self._pending
        if not self._redactor.active:
            out, self._pending = pending[:cut], pending[cut:]
        else:
            forms = self._redactor._text_forms()
            spans = _merge(forms.spans(pending))
            for start, end, _ in spans:
                if start < cut < end:
                    cut = end   # a match across the cut goes out whole, masked
            out = forms.render(pending[:cut], [s for s in spans if s[0] < cut])
            self._pending = pending[cut:]
        if out:
            self._write(out)

    def flush(self) -> None:
        with self._lock:
            self._emit(len(self._pending))
        if self._flush is not None:
            self._flush()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> RedactingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SECRETS_ENV = "UCNB_SECRET_ENV_NAMES"  # the runner tells the kernel which variables hold secrets


def generated_secrets_file(run_id: str) -> Path:
    """Where a run's kernel lists the secrets it generated, for the runner's redaction pass.

    Outside the proof root, readable by root only, deleted once the run is sealed.
    """
    from ucnb import paths

    directory = paths.work_root() / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory / run_id


def from_environment(environ: Mapping[str, str] | None = None) -> Redactor:
    """A redactor for the secrets the runner declared (comma-separated variable names) in `environ`
    (the process environment by default)."""
    environ = os.environ if environ is None else environ
    redactor = Redactor()
    for name in filter(None, environ.get(SECRETS_ENV, "").split(",")):
        redactor.add(environ.get(name), source=f"environment variable {name}")
    return redactor
