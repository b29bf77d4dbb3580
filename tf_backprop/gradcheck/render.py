"""A gradient check's report rendered: as text (tables, findings, thresholds, verdict) and as JSON data.

Works on any object shaped like `report.Report` (entries of comparisons); `report` renders with it.
"""

from __future__ import annotations


def report_text(report) -> str:
    """The whole text of a report (`Report.to_text`)."""
    lines = [report.title, f"mode {report.mode}, {report.dtype}, eps {report.eps:g}"]
    lines += [f"note: {note}" for note in report.notes]
    lines += ["", *_norms_table(report.entries), "", *_comparisons_table(report.entries)]
    lines += _details(report)
    lines += ["", "thresholds: an element fails when |a − b| / max(|a|, |b|, atol/rtol) > rtol"]
    lines += [f"  {label}: {tol}" for label, tol in _tolerances(report).items()]
    unchecked = f", {report.unchecked} unchecked" if report.unchecked else ""
    lines.append(
        f"{report.verdict}: {len(report.comparisons)} comparisons, {report.failures} failed elements, "
        f"{report.kinks} kinks{unchecked}"
    )
    return "\n".join(lines)


def format_index(index) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]" if index is not None else "-"


def _format_number(value) -> str:
    return "-" if value is None else f"{value:.3e}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def _norms_table(entries) -> list[str]:
    sources = list(dict.fromkeys(s for e in entries for s in e.norms))
    header = ["name", "shape", *[f"‖{s}‖" for s in sources]]
    rows = [[e.name, str(list(e.shape)), *[_format_number(e.norms.get(s)) for s in sources]] for e in entries]
    return _table(header, rows)


def _comparisons_table(entries) -> list[str]:
    header = ["name", "comparison", "checked", "max abs", "max rel", "worst at", "a", "b", "kinks", "verdict"]
    rows = []
    for e in entries:
        for c in e.comparisons:
            worst = c.worst
            rows.append(
                [
                    e.name,
                    c.label,
                    str(c.checked),
                    f"{c.max_abs:.2e}",
                    f"{c.max_rel:.2e}",
                    str(worst.location) if worst else "-",
                    f"{worst.a:.6g}" if worst else "-",
                    f"{worst.b:.6g}" if worst else "-",
                    str(c.kinks),
                    c.verdict,
                ]
            )
    return _table(header, rows)


def _details(report) -> list[str]:
    lines = []
    for entry, c in report.comparisons:
        if c.error:
            lines.append(f"FAIL {entry.name} {c.label}: {c.error}")
        elif c.failures:
            w = c.worst
            lines.append(
                f"FAIL {entry.name} {c.label}: {c.reason}; worst at "
                f"{w.location}: {c.sources[0]} {w.a:.9g}, {c.sources[1]} {w.b:.9g}, "
                f"abs error {w.abs_error:.3e}, rel error {w.rel_error:.3e}"
            )
        if c.kinks:
            k = c.worst_kink
            lines.append(
                f"kink {entry.name} {c.label}: {c.kinks} finite difference(s) crossed a kink, shown on both "
                f"sides, not counted; e.g. at {k.location}: {c.sources[0]} {k.a:.6g}, {c.sources[1]} {k.b:.6g}"
            )
        if c.unresolved and not c.failures:
            lines.append(f"INCONCLUSIVE {entry.name} {c.label}: {c.reason}")
        if c.unchecked:
            inconclusive = c.verdict == "INCONCLUSIVE" and not c.unresolved
            u, verdict = c.worst_unchecked, "INCONCLUSIVE" if inconclusive else "unchecked"
            beyond = (
                f"; {c.beyond_slopes} of them outside the slopes on either side of their kink, as a "
                "wrong derivative would be"
                if c.beyond_slopes
                else ""
            )
            if c.undefined:
                beyond += (
                    f"; {c.undefined} of them where f is not finite at x ± ε, where a wrong derivative "
                    "would hide (a smaller eps checks them)"
                )
            lines.append(
                f"{verdict} {entry.name} {c.label}: {c.unchecked} of {c.checked} unchecked (f not finite at "
                "x ± ε; or at a kink: no one-sided values, or a value at the point that is neither "
                f"side's){beyond}; e.g. at "
                f"{u.location}: {c.sources[0]} {u.a:.6g}, {c.sources[1]} {u.b:.6g}"
            )
    return ["", *lines] if lines else []


def _tolerances(report) -> dict:
    return {c.label: c.tolerance for _, c in report.comparisons}


# --- JSON data -------------------------------------------------------------------------------
def listed(index):
    """An index tuple as a list (JSON), None as None."""
    return None if index is None else list(index)


def element_dict(element, sources: tuple[str, str]) -> dict | None:
    """A compared pair (`report.Element`) as JSON data, its values named by their sources."""
    if element is None:
        return None
    return {
        **element.location.to_dict(),
        sources[0]: element.a,
        sources[1]: element.b,
        "abs_error": element.abs_error,
        "rel_error": element.rel_error,
    }
