"""A trace as an aligned text table, as Markdown, or as strict JSON.

Numbers are printed with `DIGITS` significant digits (−0 as 0); a matrix prints one row per
line.  JSON carries every value in full (repr precision); a non-finite value becomes null and the
object holding it lists that field under "non_finite".
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from tf_backprop.explaining.errata import Erratum, Evaluated
from tf_backprop.explaining.trace import LayerTrace, Term, Trace

DIGITS = 6


def number(value: float, digits: int = DIGITS) -> str:
    """A number with `digits` significant digits; 0 for ±0; nan, inf, -inf as such."""
    value = float(value)
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def matrix_lines(value: np.ndarray | None, digits: int = DIGITS) -> list[str]:
    """A scalar, vector or matrix as aligned lines, one per matrix row: ['[ 1  -0.5 ]', ...]."""
    if value is None:
        return ["—"]
    array = np.asarray(value, dtype=np.float64)
    rows = array.reshape(1, -1) if array.ndim <= 1 else array.reshape(array.shape[0], -1)
    cells = [[number(v, digits) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(rows.shape[1])] if rows.size else []
    return ["[ " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)) + " ]" for row in cells]


def inline(value: np.ndarray | None, digits: int = DIGITS) -> str:
    """A value on one line, nested like a Python list: [[1, -0.5], [2, 0]]."""
    if value is None:
        return "—"
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return number(array, digits)
    return "[" + ", ".join(inline(row, digits) for row in array) + "]"


# --- text ------------------------------------------------------------------------------------
def to_text(trace: Trace, title: str | None = None, per_row: bool = False) -> str:
    """The trace as aligned tables: a header, one table per layer, then the errata if any."""
    lines = _header(trace, title)
    for layer in trace.layers:
        lines += ["", f"layer {layer.index}: {layer.kernel.shape[0]} → {layer.units}, {layer.activation}"]
        lines += _table(["term", "formula", "value", "tape"], _term_rows(trace, layer, per_row), indent=2)
    if trace.errata:
        lines += ["", "The article's errata on these numbers (docs/backprop.md §7):"]
        for number_, erratum in enumerate(trace.errata, start=1):
            lines += ["", f"{number_}. {erratum.title}"]
            rows, remarks = _erratum_rows(erratum)
            table = _table(None, rows, indent=3)
            label_width = max(len(row[0]) for row in rows + remarks)
            lines += table + [f"   {label.ljust(label_width)}  {text}" for label, text in remarks]
    return "\n".join(lines) + "\n"


def _header(trace: Trace, title: str | None) -> list[str]:
    sizes = "-".join(map(str, trace.layer_sizes))
    activations = f"{trace.activations[0]} → {trace.activations[-1]}"
    rows = trace.batch_size
    l2 = f", l2 {trace.l2:g}" if trace.l2 else ""
    lines = [title] if title else []
    lines.append(
        f"MLP {sizes} ({activations}), loss {trace.loss}{l2}, {trace.dtype}, "
        f"{rows} sample{'s' if rows != 1 else ''}" + (" (gradients summed over the rows)" if rows > 1 else "")
    )
    lines.append(
        f"x = {inline(trace.x)}   y = {inline(trace.y)}   ŷ = {inline(trace.output)}{_probabilities(trace)}   "
        f"L = {number(trace.loss_value)}{_penalty(trace)}"
    )
    rtol, atol = trace.tolerance
    verdict = "every gradient agrees with" if trace.agreed else "SOME GRADIENTS DISAGREE with"
    lines.append(
        f"tape check: {verdict} tf.GradientTape "
        f"(|Δ| ≤ {rtol:g}·max(|manual|, |tape|) + {atol:g}·max(1, max |tape|))"
    )
    return lines


def _probabilities(trace: Trace) -> str:
    """For a loss that takes logits (ŷ is the logits): the probabilities they give."""
    if trace.loss == "binary_crossentropy":
        return f" (logits; σ(ŷ) = {inline(1.0 / (1.0 + np.exp(-trace.output)))})"
    if trace.loss == "categorical_crossentropy":
        shifted = np.exp(trace.output - trace.output.max(axis=-1, keepdims=True))
        return f" (logits; softmax(ŷ) = {inline(shifted / shifted.sum(axis=-1, keepdims=True))})"
    return ""


def _penalty(trace: Trace) -> str:
    """With L2: L's two parts, the data term and λ/2 Σ‖W‖²."""
    if not trace.l2:
        return ""
    penalty = trace.l2 / 2 * sum(float(np.sum(np.square(layer.kernel))) for layer in trace.layers)
    return f" (data {number(trace.loss_value - penalty)} + L2 {number(penalty)})"


def _check_text(term: Term) -> str:
    if term.check is None:
        return ""
    verdict = "agreed" if term.check.agreed else "DISAGREED"
    return f"{verdict}, max |Δ| {number(term.check.max_abs_difference, 2)}"


def _term_rows(trace: Trace, layer: LayerTrace, per_row: bool) -> list[list[Any]]:
    rows = []
    for term in layer.terms:
        rows.append([term.symbol, term.formula, matrix_lines(term.value), _check_text(term)])
        if per_row and term.per_row is not None and trace.batch_size > 1:
            below = "x" if layer.index == 1 else f"h_{layer.index - 1}"
            formula = f"{below}[i]ᵀ δ_{layer.index}[i]" if term.key == "dL_dW" else f"δ_{layer.index}[i]"
            for i, contribution in enumerate(term.per_row, start=1):
                rows.append([f"  row {i}", formula.replace("[i]", f"[{i}]"), matrix_lines(contribution), ""])
    return rows


def _erratum_rows(erratum: Erratum) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    """The table rows (formula and value, the article's then the right one) and the remarks."""
    evaluated = [("article", erratum.wrong), ("right", erratum.right)]
    evaluated += [("article", erratum.wrong_gradient), ("right", erratum.right_gradient)]
    rows = [_evaluated_row(side, value) for side, value in evaluated if value is not None]
    remarks = [("breaks", erratum.breaks)]
    if erratum.step is not None:
        step = erratum.step
        remarks.append(
            (
                "one step",
                f"θ − {step.rate:g}·g: L {number(step.before)} → {number(step.after_right)} "
                f"with the right g, → {number(step.after_wrong)} with the article's",
            )
        )
    return rows, remarks + [("note", note) for note in erratum.notes]


def _evaluated_row(side: str, evaluated: Evaluated) -> list[Any]:
    value = matrix_lines(evaluated.value) if evaluated.value is not None else ["(no value)"]
    return [side, f"{evaluated.symbol} = {evaluated.formula}", value]


def _table(header: list[str] | None, rows: list[list[Any]], indent: int) -> list[str]:
    """Aligned columns; a cell may be a list of lines (a matrix), which continues below."""
    rows = ([header] if header else []) + rows
    cells = [[c if isinstance(c, list) else [c] for c in row] for row in rows]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(cells[0]))]
    out = []
    for row in cells:
        for k in range(max(len(cell) for cell in row)):
            parts = [(cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(row, widths)]
            out.append((" " * indent + "  ".join(parts)).rstrip())
    return out


# --- Markdown --------------------------------------------------------------------------------
def to_markdown(trace: Trace, title: str | None = None, per_row: bool = False) -> str:
    """The trace as Markdown: the header as a list, one table per layer, the errata as tables."""
    lines = [f"**{title}**", ""] if title else []
    lines += [f"- {line}" for line in _header(trace, None)]
    for layer in trace.layers:
        lines += [
            "",
            f"**Layer {layer.index}** ({layer.kernel.shape[0]} → {layer.units}, {layer.activation})",
            "",
        ]
        lines += ["| term | formula | value | tape |", "|---|---|---|---|"]
        for symbol, formula, value, check in _term_rows(trace, layer, per_row):
            lines.append(f"| {_md(symbol.strip())} | `{formula}` | {_md_lines(value)} | {_md(check)} |")
    if trace.errata:
        lines += ["", "**The article's errata on these numbers** (docs/backprop.md §7)"]
        for index, erratum in enumerate(trace.errata, start=1):
            lines += ["", f"{index}. {erratum.title}", "", "   | | formula | value |", "   |---|---|---|"]
            rows, remarks = _erratum_rows(erratum)
            for label, formula, value in rows:
                lines.append(f"   | {label} | `{formula}` | {_md_lines(value)} |")
            lines += [f"   | {label} | {_md(text)} | |" for label, text in remarks]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text for a Markdown table cell."""
    return text.replace("|", "\\|").replace("*", "\\*")


def _md_lines(lines: list[str]) -> str:
    """A matrix in a Markdown table cell: one code span per row, rows joined by <br>."""
    return "<br>".join(f"`{line}`" for line in lines)


# --- JSON ------------------------------------------------------------------------------------
def to_dict(trace: Trace, title: str | None = None) -> dict[str, Any]:
    """A JSON-ready dict of the whole trace (strict: non-finite values are null, listed)."""
    rtol, atol = trace.tolerance
    out = {
        "title": title,
        "net": {
            "layer_sizes": list(trace.layer_sizes),
            "activations": list(trace.activations),
            "loss": trace.loss,
            "l2": trace.l2,
            "dtype": trace.dtype,
        },
        "batch_size": trace.batch_size,
        "tape_check": {"agreed": trace.agreed, "rtol": rtol, "atol": atol},
    }
    out.update(_arrays(x=trace.x, y=trace.y, output=trace.output, loss=trace.loss_value))
    out["layers"] = [_layer_dict(layer) for layer in trace.layers]
    out["errata"] = [_erratum_dict(erratum) for erratum in trace.errata]
    return out


def to_json(trace: Trace, title: str | None = None, indent: int | None = 2) -> str:
    """`to_dict` as strict JSON (allow_nan=False)."""
    return json.dumps(to_dict(trace, title), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


def _arrays(**values) -> dict[str, Any]:
    """{name: nested lists with None for non-finite values}, plus "non_finite": [names]."""
    out, non_finite = {}, []
    for name, value in values.items():
        if value is None:
            out[name] = None
            continue
        array = np.asarray(value, dtype=np.float64)
        finite = np.isfinite(array)
        if not finite.all():
            non_finite.append(name)
        out[name] = _nulls(array.tolist())
    out["non_finite"] = non_finite
    return out


def _nulls(value):
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return None if not math.isfinite(value) else float(value)


def _layer_dict(layer: LayerTrace) -> dict[str, Any]:
    out = {"layer": layer.index, "inputs": int(layer.kernel.shape[0]), "units": layer.units}
    out["activation"] = layer.activation
    out.update(_arrays(kernel=layer.kernel, bias=layer.bias))
    out["terms"] = [_term_dict(term) for term in layer.terms]
    return out


def _term_dict(term: Term) -> dict[str, Any]:
    out = {"key": term.key, "symbol": term.symbol, "formula": term.formula}
    check = term.check
    out.update(_arrays(value=term.value, per_row=term.per_row, tape=None if check is None else check.tape))
    out["max_abs_difference"] = None if check is None else _nulls(check.max_abs_difference)
    out["agreed"] = None if check is None else check.agreed
    return out


def _erratum_dict(erratum: Erratum) -> dict[str, Any]:
    out = {"key": erratum.key, "title": erratum.title}
    for name in ("wrong", "right", "wrong_gradient", "right_gradient"):
        evaluated = getattr(erratum, name)
        out[name] = None
        if evaluated is not None:
            out[name] = {"symbol": evaluated.symbol, "formula": evaluated.formula}
            out[name].update(_arrays(value=evaluated.value))
    out["breaks"] = erratum.breaks
    out["notes"] = list(erratum.notes)
    step = erratum.step
    out["step"] = None
    if step is not None:
        out["step"] = {"rate": step.rate}
        out["step"].update(
            _arrays(before=step.before, after_right=step.after_right, after_wrong=step.after_wrong)
        )
    return out
