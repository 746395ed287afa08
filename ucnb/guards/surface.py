"""Supported-surface guard: scan a tree for wording, stubs and helpers the product must not ship.

The rules live in `surface_rules.yaml` next to this module (seed: "Regression Guards" ->
supported-surface-guard); this module only knows how to walk a tree and apply them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ucnb.errors import ParameterError

DEFAULT_RULES = Path(__file__).resolve().with_name("surface_rules.yaml")

# Never scanned whatever the rules say: VCS data, the virtualenv, runtime state and evidence.
ALWAYS_SKIP_DIRS = frozenset({".git", ".venv", "work", "outputs", "node_modules"})

# A NUL byte in the first block is how git and grep decide a file is binary.
_BINARY_PROBE = 8192


@cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: `*`/`?` stay in one segment, `**/` spans zero or more directories."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            char = pattern[i]
            out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def matches_any(path: str, globs: tuple[str, ...]) -> bool:
    """True when the relative posix `path` matches one of `globs`."""
    return any(glob_regex(g).fullmatch(path) for g in globs)


@cache
def _compile(regex: str | None, literal: str | None, ignore_case: bool) -> re.Pattern[str]:
    source = regex if regex is not None else re.escape(literal or "")
    return re.compile(source, re.IGNORECASE if ignore_case else 0)


class Rule(BaseModel):
    """One guard rule: what to look for and in which files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    regex: str | None = None
    literal: str | None = None
    ignore_case: bool = False
    paths: tuple[str, ...] = Field(min_length=1)
    exclude: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_pattern(self) -> Rule:
        if (self.regex is None) == (self.literal is None):
            raise ValueError(f"rule {self.id!r}: give exactly one of `regex` or `literal`")
        if self.literal == "" or self.regex == "":
            raise ValueError(f"rule {self.id!r}: empty pattern would match every line")
        try:
            self.pattern  # noqa: B018 - compile now so a bad regex fails at load time
        except re.error as exc:
            raise ValueError(f"rule {self.id!r}: bad regex: {exc}") from exc
        return self

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled pattern (cached per distinct pattern)."""
        return _compile(self.regex, self.literal, self.ignore_case)

    def applies_to(self, path: str) -> bool:
        """True when the relative posix `path` is in this rule's scope."""
        return matches_any(path, self.paths) and not matches_any(path, self.exclude)


class RuleSet(BaseModel):
    """A whole rules file: extra skipped directory names, global excludes and the rules."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_name: str = Field(alias="schema", pattern=r"^ucnb\.surface-rules/v1$")
    skip_dirs: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True, order=True)
class Finding:
    """One match: sorted by path, then line, then rule."""

    path: str
    line: int
    rule: str
    text: str
    message: str

    def format(self) -> str:
        """`path:line: [rule-id] message: text`, the compiler-style line editors jump to."""
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}: {self.text}"


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file (default: the shipped `surface_rules.yaml`)."""
    source = path or DEFAULT_RULES
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        return RuleSet.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read surface rules {source}: {exc}") from exc
    except ValidationError as exc:
        raise ParameterError(f"invalid surface rules {source}: {exc}") from exc


def _walk(root: Path, skip_dirs: frozenset[str]) -> Iterator[tuple[str, Path]]:
    """Yield (relative posix path, absolute path) of regular files, in a stable order."""
    if root.is_file():
        yield root.name, root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk descending; symlinked dirs are never followed.
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        base = Path(dirpath)
        for name in sorted(filenames):
            file = base / name
            if not file.is_symlink():
                yield file.relative_to(root).as_posix(), file


def _read_text(file: Path) -> str | None:
    """The file's text, or None for binary or unreadable files."""
    try:
        data = file.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:_BINARY_PROBE]:
        return None
    return data.decode("utf-8", errors="replace")


def _scan_text(rel: str, text: str, rules: list[Rule]) -> Iterator[Finding]:
    for number, line in enumerate(text.splitlines(), start=1):
        for rule in rules:
            for match in rule.pattern.finditer(line):
                yield Finding(rel, number, rule.id, match.group(0), rule.description)


def scan(root: Path, rules: RuleSet | None = None) -> list[Finding]:
    """Apply `rules` (default: the shipped rules) to every text file under `root`."""
    ruleset = rules or load_rules()
    skip = ALWAYS_SKIP_DIRS | frozenset(ruleset.skip_dirs)
    findings: list[Finding] = []
    for rel, file in _walk(root, skip):
        if matches_any(rel, ruleset.exclude):
            continue
        applicable = [r for r in ruleset.rules if r.applies_to(rel)]
        # Read a file only when some rule cares about it: most of a checkout is out of scope.
        text = _read_text(file) if applicable else None
        if text is not None:
            findings.extend(_scan_text(rel, text, applicable))
    return sorted(findings)
