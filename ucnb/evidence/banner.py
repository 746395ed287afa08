"""The verdict banner: what a reviewer reads first, built from result.json alone.

It is written at seal time (so a notebook that stopped early still opens with it) and shown by
`run.finish()`: the verdict in words (PASSED, PASSED WITH GAPS, FAILED, INCOMPLETE), what was and
was not covered, the failing step and its last observation, the accelerator and why, when it ran,
how long it took and with which harness commit.
"""

from __future__ import annotations

import html as html_mod
from typing import Any

from ucnb.evidence.tables import number_text

# label, foreground, background
TONES = {"passed": ("PASSED", "#ffffff", "#1a7f37"),
         "passed with gaps": ("PASSED WITH GAPS", "#3d2e00", "#f2cc60"),
         "failed": ("FAILED", "#ffffff", "#cf222e"),
         "incomplete": ("INCOMPLETE", "#ffffff", "#6e7781")}
ACCELERATORS = {"tcg": "TCG, QEMU's software emulation (no hardware virtualisation: guests run several "
                       "times slower than under KVM)",
                "kvm": "KVM, hardware virtualisation"}
MAX_OBSERVATION = 700   # characters of the last observation in the banner (result.json has all)
MAX_FIGURES = 8


def label(result: dict[str, Any]) -> str:
    """PASSED / PASSED WITH GAPS / FAILED / INCOMPLETE."""
    return TONES.get(_key(result), TONES["incomplete"])[0]


def _key(result: dict[str, Any]) -> str:
    verdict = str(result.get("verdict") or "incomplete")
    if verdict == "passed" and result.get("gaps"):
        return "passed with gaps"
    return verdict if verdict in TONES else "incomplete"


def title(result: dict[str, Any]) -> str:
    """The page title: `lane · verdict · date`."""
    date = str(result.get("started_utc") or "")[:10] or "no date"
    return f"{result.get('lane', 'lane')} · {label(result)} · {date}"


def _reasons(items: list[dict[str, Any]], key: str = "name") -> str:
    return ", ".join(f"{i[key]} ({i['reason']})" if i.get("reason") else str(i[key]) for i in items)


def coverage_lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    """What the run exercised and what it did not, in words: (heading, text), one per subject."""
    lines: list[tuple[str, str]] = []
    covered_steps = set()
    for what, c in (result.get("coverage") or {}).items():
        parts = [f"{len(c['exercised'])} of {c['total']} {what} exercised"]
        if c["skipped"]:
            parts.append(f"{len(c['skipped'])} skipped: {_reasons(c['skipped'], 'item')}")
        if c["failed"]:
            parts.append(f"{len(c['failed'])} failed: {', '.join(c['failed'])}")
        if c["not_reached"]:
            parts.append(f"{len(c['not_reached'])} not reached: {', '.join(c['not_reached'])}")
        lines.append(("coverage", "; ".join(parts)))
        covered_steps |= set(c.get("steps", []))
    steps = result.get("steps") or {}
    skipped = [s for s in result.get("skipped", []) if not s.get("delegated")]
    delegated = [s for s in result.get("skipped", []) if s.get("delegated")]
    others = [s for s in skipped if s["name"] not in covered_steps]
    ran = sum(steps.get(o, 0) for o in ("passed", "failed", "running", "interrupted"))
    if not lines:
        total = ran + len(skipped)
        lines.append(("coverage", "no step ran" if not total else f"{ran} of {total} steps ran" + (
            f"; {len(skipped)} skipped: {_reasons(skipped)}" if skipped else "")))
    elif others:
        lines.append(("also skipped", _reasons(others)))
    if result.get("interrupted"):
        lines.append(("interrupted", _reasons(result["interrupted"])))
    if delegated:
        lines.append(("product covered", f"{len(delegated)} lab steps, by its own commands "
                                         f"({result.get('profile')} profile)"))
    return lines


def accelerator_text(result: dict[str, Any]) -> str:
    mode = result.get("accelerator")
    if not mode:
        return "none recorded (no VM was started by ucnb in this run)"
    words = ACCELERATORS.get(str(mode), str(mode))
    reason = result.get("accelerator_reason")
    return f"{words}; why: {reason}" if reason else words


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return "not recorded"


def facts_text(result: dict[str, Any]) -> str:
    """UTC start, wall time, harness commit and dirty state, run id."""
    harness = result.get("harness") or {}
    commit = str(harness.get("commit") or "unknown")
    dirty = harness.get("dirty")
    state = f" ({dirty})" if dirty and dirty != "clean" else " (clean)" if dirty == "clean" else ""
    started = str(result.get("started_utc") or "not recorded").replace("T", " ").replace("Z", " UTC")
    return (f"started {started} · wall time {_seconds(result.get('wall_time_s'))} · harness "
            f"{commit[:12]}{state} · ucnb {result.get('ucnb_version') or '?'} · run {result.get('run_id')}")


def counts_text(result: dict[str, Any]) -> str:
    s = result.get("steps") or {}
    c = result.get("checks") or {}
    text = (f"steps: {s.get('passed', 0)} passed, {s.get('failed', 0)} failed, "
            f"{s.get('skipped', 0)} skipped")
    if s.get("running"):
        text += f", {s['running']} did not finish"
    if s.get("interrupted"):
        text += f", {s['interrupted']} interrupted by the user"
    return text + f" · checks: {c.get('total', 0)}, {c.get('failed', 0)} failed"


def figures_text(result: dict[str, Any]) -> str:
    figures = list((result.get("figures") or {}).items())
    shown = []
    for name, f in figures[:MAX_FIGURES]:
        value = f.get("value")
        value = number_text(value) if isinstance(value, float) else value
        shown.append(f"{name} {value}{(' ' + f['unit']) if f.get('unit') else ''}")
    more = f" · … {len(figures) - MAX_FIGURES} more in result.json" if len(figures) > MAX_FIGURES else ""
    return " · ".join(str(s) for s in shown) + more


def problem_lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading, text): the failing step and its last observation, failed checks, the error."""
    out = []
    failing = result.get("failing_step")
    if failing:
        where = f" [{failing['node']}]" if failing.get("node") else ""
        out.append(("failing step", f"{failing['name']}{where}"))
        observation = str(failing.get("last_observation") or "nothing recorded")
        if len(observation) > MAX_OBSERVATION:
            observation = observation[:MAX_OBSERVATION] + " … (the rest in result.json)"
        out.append(("last observation", observation))
    for check in (result.get("failed_checks") or [])[:3]:
        out.append(("failed check", f"{check['name']}: expected {check['expected']}, "
                                    f"observed {check['observed']}"))
    error = result.get("error")
    if error and not failing:
        message = str(error.get("message") or "")[:MAX_OBSERVATION]
        out.append(("error", f"{error.get('kind', 'error')} ({error.get('type', '?')}): {message}"))
    elif result.get("verdict") == "incomplete" and not error:
        out.append(("why incomplete", "the run recorded no step"))
    return out


def lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The banner's body, in order, as (heading, text)."""
    body = problem_lines(result)
    body += coverage_lines(result)
    body.append(("accelerator", accelerator_text(result)))
    body.append(("run", facts_text(result)))
    body.append(("counts", counts_text(result)))
    figures = figures_text(result)
    if figures:
        body.append(("figures", figures))
    return body


def _e(text: object) -> str:
    return html_mod.escape(str(text)).replace("\n", "&#10;")


def html(result: dict[str, Any], links: list[tuple[str, str]] | None = None) -> str:
    """The banner as one HTML block with inline styles (no blank line: it sits in a markdown cell)."""
    word, fg, bg = TONES.get(_key(result), TONES["incomplete"])
    head = (f'<div style="display:flex;align-items:center;gap:14px;flex-wrap:wrap">'
            f'<span style="background:{bg};color:{fg};font-weight:700;font-size:22px;'
            f'padding:4px 14px;border-radius:6px;letter-spacing:0.5px">{_e(word)}</span>'
            f'<span style="font-size:20px;font-weight:600">{_e(result.get("lane"))}</span>'
            f'<span style="color:#57606a;font-size:15px">{_e(result.get("profile"))} profile</span></div>')
    rows = "".join(
        f'<tr style="background:transparent"><th style="text-align:left;vertical-align:top;'
        f'padding:2px 12px 2px 0;color:#57606a;font-weight:600;white-space:nowrap;border:none;'
        f'background:none">{_e(h)}</th>'
        f'<td style="text-align:left;vertical-align:top;padding:2px 0;white-space:pre-wrap;'
        f'overflow-wrap:anywhere;border:none;background:none">{_e(t)}</td></tr>'
        for h, t in lines(result))
    table = (f'<table style="border-collapse:collapse;margin:8px 0 4px 0;table-layout:auto;'
             f'font-size:14px;line-height:1.4">{rows}</table>')
    nav = ""
    if links:
        nav = ('<div style="font-size:13px;margin-top:4px">' + " · ".join(
            f'<a href="{_e(href)}">{_e(text)}</a>' for text, href in links) + "</div>")
    return (f'<div id="ucnb-verdict" style="border:2px solid {bg};border-left:10px solid {bg};'
            f'border-radius:6px;padding:10px 14px;margin:0 0 12px 0;background:#ffffff;color:#1f2328">'
            f"{head}{table}{nav}</div>")


def markdown(result: dict[str, Any]) -> str:
    """The banner as markdown (the verdict output's readable fallback)."""
    out = [f"## Verdict: **{label(result)}** — {result.get('lane')} ({result.get('profile')} profile)", ""]
    out += [f"- **{h}**: {t}" for h, t in lines(result)]
    return "\n".join(out)
