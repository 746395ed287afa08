"""Supported-surface guard: every rule fires on a planted violation, nothing fires on clean trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucnb.errors import ParameterError
from ucnb.guards import Finding, load_rules, scan
from ucnb.guards.surface import matches_any

from ..conftest import ROOT, Cli

# rule id -> (file, its lines, the 1-based line holding the violation, the matched text).
# Trees are generated here rather than checked in, so the ucnb tree never carries violations.
PLANTED: dict[str, tuple[str, list[str], int, str]] = {
    "stub-response": (
        "iam/crates/iam-server/src/api.rs",
        ["fn list() -> Result<(), Status> {", "    let _ = 1;",
         '    Err(Status::unimplemented("list"))', "}"],
        3, "Status::unimplemented",
    ),
    "completeness-marker": (
        "fiberlb/crates/fiberlb-server/src/listener.rs",
        ["fn drain() {", "    // TODO: drain backends", "}"],
        2, "TODO:",
    ),
    "unfinished-wording": (
        "docs/fiberlb.md",
        ["# FiberLB", "", "Native BGP peering is coming soon."],
        3, "coming soon",
    ),
    "archived-helper": (
        "flake.nix",
        ["{", "  outputs = { self }: {",
         "    nixosConfigurations.netboot-worker = self.lib.mk {};", "  };", "}"],
        3, "netboot-worker",
    ),
}

# Near misses: the right words in the wrong place, or the wrong words in the right place.
CLEAN: dict[str, list[str]] = {
    "fiberlb/crates/fiberlb-server/src/listener.rs": ["fn drain() {", "    let todo: Vec<u8> = vec![];", "}"],
    "iam/crates/iam-server/src/lib.rs": ["// TODO: not a named server path, so allowed"],
    "fiberlb/crates/fiberlb-server/tests/it.rs": ["#[test] fn later() { todo!() }"],
    "docs/testing.md": ["netboot-worker and k8shost-cni are archived non-product helpers."],
    "nix/archive/netboot-worker.nix": ["{ netboot-worker = 1; }"],
    "flake.nix": ["{ nixosConfigurations.my-netboot-worker-notes = {}; }"],
    "work/tmp/notes.md": ["coming soon"],
    "outputs/lane/README.md": ["coming soon"],
    ".git/COMMIT_EDITMSG": ["coming soon"],
    "tests/fixtures/README.md": ["coming soon"],
    "ucnb/guards/surface_rules.yaml": ["regex: 'netboot-worker'"],
}


def _write(root: Path, rel: str, lines: list[str]) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    root = tmp_path / "dirty"
    for rel, lines, _, _ in PLANTED.values():
        _write(root, rel, lines)
    return root


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    for rel, lines in CLEAN.items():
        _write(root, rel, lines)
    # A binary file in scope that happens to contain a stub: skipped, not decoded.
    (root / "iam/crates/iam-server/src/blob.rs").write_bytes(b"\0\x01todo!()\n")
    return root


def test_every_shipped_rule_has_a_planted_violation() -> None:
    assert {r.id for r in load_rules().rules} == set(PLANTED)


def test_dirty_tree_finds_each_planted_violation(dirty: Path) -> None:
    found = {(f.rule, f.path, f.line, f.text) for f in scan(dirty)}
    expected = {(rule, rel, line, text) for rule, (rel, _, line, text) in PLANTED.items()}
    assert found == expected


def test_clean_tree_has_no_findings(clean: Path) -> None:
    assert scan(clean) == []


def test_own_tree_is_clean() -> None:
    findings = scan(ROOT)
    assert findings == [], "\n".join(f.format() for f in findings)


def test_finding_format() -> None:
    finding = Finding("docs/a.md", 7, "unfinished-wording", "coming soon", "unfinished wording")
    assert finding.format() == "docs/a.md:7: [unfinished-wording] unfinished wording: coming soon"


def test_glob_semantics() -> None:
    assert matches_any("flake.nix", ("flake.nix",))
    assert matches_any("README.md", ("**/README.*",))
    assert matches_any("a/b/fiberlb-server/src/x.rs", ("**/fiberlb*/**/*.rs",))
    assert matches_any("fiberlb/x.rs", ("**/fiberlb*/**/*.rs",))
    assert not matches_any("src/fiberlb.rs", ("**/fiberlb*/**/*.rs",))
    assert not matches_any("nix/a/b.nix", ("nix/*.nix",))


def test_custom_rules_with_literal_and_scan_of_one_file(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "schema: ucnb.surface-rules/v1\n"
        "rules:\n"
        "  - {id: no-wip, description: work in progress, literal: 'W.I.P', paths: ['*.txt']}\n"
    )
    target = _write(tmp_path, "notes.txt", ["fine", "this is W.I.P", "WxIxP"])
    assert [(f.path, f.line) for f in scan(target, load_rules(rules_file))] == [("notes.txt", 2)]


@pytest.mark.parametrize("body", [
    "rules: []\n",
    "schema: ucnb.surface-rules/v1\nrules: [{id: x, description: d, regex: '(', paths: ['*']}]\n",
    "schema: ucnb.surface-rules/v1\nrules: [{id: x, description: d, paths: ['*']}]\n",
    "schema: ucnb.surface-rules/v1\nrules: [{id: x, description: d, literal: a, paths: ['*']},"
    " {id: x, description: d, literal: b, paths: ['*']}]\n",
    ": not yaml: [\n",
])
def test_bad_rules_are_parameter_errors(tmp_path: Path, body: str) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(body)
    with pytest.raises(ParameterError):
        load_rules(rules_file)


def test_missing_rules_file_is_a_parameter_error(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")


def test_cli_dirty_exits_1_and_prints_findings(dirty: Path, cli: Cli) -> None:
    result = cli.invoke("guard", "surface", str(dirty))
    assert result.exit_code == 1
    assert "flake.nix:3: [archived-helper]" in result.stdout
    assert "fiberlb/crates/fiberlb-server/src/listener.rs:2: [completeness-marker]" in result.stdout


def test_cli_clean_exits_0(clean: Path, cli: Cli) -> None:
    result = cli.invoke("guard", "surface", str(clean))
    assert result.exit_code == 0, result.output


def test_cli_missing_path_exits_2(tmp_path: Path, cli: Cli) -> None:
    assert cli.invoke("guard", "surface", str(tmp_path / "absent")).exit_code == 2


def test_cli_bad_rules_exits_2(clean: Path, tmp_path: Path, cli: Cli) -> None:
    result = cli.invoke("guard", "surface", str(clean), "--rules", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
