"""A picture of the net on one sample: every unit with its z, h and δ, every weight's gradient as an edge.

One column per layer (the inputs first, the loss last), laid out deterministically: a layered
MLP needs no general graph layout.  An edge's colour is the sign of its weight's gradient
∂L/∂W_l[k, j] (red +, blue −, grey dashed 0) and its width grows with √(|∂L/∂W| / max |∂L/∂W|)
over the whole net.  A unit that is off (f'(z) = 0 on this sample, e.g. ReLU at z ≤ 0) is drawn
grey and dashed.  A column of more than `MAX_UNITS` units shows the `MAX_UNITS − 1` with the
largest gradient (|δ| for a unit; Σ_j |∂L/∂W_1[k, j]| for an input) and one summary node.

The SVG is self-contained (no scripts, no external fonts or images) and byte-identical for the
same trace: fixed number formatting, no timestamps.  Every element carries its exact numbers in
data-* attributes, and a <title> (a tooltip) with the values to `DIGITS` digits.
"""

from __future__ import annotations

import itertools
import math
from xml.sax.saxutils import escape

import numpy as np

from tf_backprop.explaining.render import number
from tf_backprop.explaining.trace import Trace

MAX_UNITS = 16
SHOWN_VALUES = 8  # of x, y and ŷ in the caption
DIGITS = 4  # significant digits of the labels
COLUMN_GAP, NODE_WIDTH, NODE_HEIGHT, INPUT_HEIGHT, ROW_GAP = 220, 118, 58, 30, 74
MARGIN, TOP, LEGEND = 24, 92, 72
POSITIVE, NEGATIVE, ZERO = "#c0392b", "#2471a3", "#9a9a9a"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"


def render(trace: Trace, title: str | None = None) -> str:
    """The SVG document of a one-sample trace; ValueError for a batch of more than one row."""
    if trace.batch_size != 1:
        raise ValueError(
            f"svg: the picture shows one sample, got a batch of {trace.batch_size} rows; explain one row"
        )
    columns = _columns(trace)
    height = TOP + max(len(shown) + (hidden > 0) for shown, hidden in columns) * ROW_GAP + LEGEND
    width = MARGIN * 2 + (len(columns)) * COLUMN_GAP + NODE_WIDTH
    centres = [_centres(len(shown) + (hidden > 0), height) for shown, hidden in columns]
    scale = max((float(np.max(np.abs(layer.term("dL_dW").value))) for layer in trace.layers), default=0.0)
    heading = escape(_caption(trace) + (f" · {title}" if title else ""))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="12">',
        f"<title>{heading}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="28" font-size="15" font-weight="bold">{heading}</text>',
        f'<text x="{MARGIN}" y="48" font-family="{MONO}">{escape(_sample_line(trace))}</text>',
    ]
    parts += _headers(trace)
    parts += _edges(trace, columns, centres, scale)
    parts += _loss_edges(trace, columns, centres, height)
    parts += _input_nodes(trace, columns[0], centres[0])
    for index in range(1, len(columns)):
        parts += _unit_nodes(trace, index, columns[index], centres[index])
    parts += _loss_node(trace, len(columns), height)
    parts += _legend(scale, height)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _caption(trace: Trace) -> str:
    sizes = "-".join(map(str, trace.layer_sizes))
    return f"MLP {sizes} ({trace.activations[0]} → {trace.activations[-1]}), loss {trace.loss}"


def _values(values) -> str:
    """[a, b, ...] with at most SHOWN_VALUES numbers, then the count."""
    values = np.ravel(values)
    text = ", ".join(number(v, DIGITS) for v in values[:SHOWN_VALUES])
    return f"[{text}, … ({len(values)} values)]" if len(values) > SHOWN_VALUES else f"[{text}]"


def _sample_line(trace: Trace) -> str:
    x, y, y_hat = _values(trace.x[0]), _values(trace.y[0]), _values(trace.output[0])
    return f"x = {x} · y = {y} · ŷ = {y_hat} · L = {number(trace.loss_value, DIGITS)}"


def _columns(trace: Trace) -> list[tuple[list[int], int]]:
    """Per column (inputs, then each layer): the unit indices shown and how many are summarized."""
    scores = [np.sum(np.abs(trace.layers[0].term("dL_dW").value), axis=1)]  # per input [n_0]
    scores += [np.abs(layer.term("delta").value[0]) for layer in trace.layers]  # |δ_l| [n_l]
    columns = []
    for score in scores:
        if len(score) <= MAX_UNITS:
            columns.append((list(range(len(score))), 0))
            continue
        order = sorted(range(len(score)), key=lambda i: (-score[i], i))  # stable: ties by index
        shown = sorted(order[: MAX_UNITS - 1])
        columns.append((shown, len(score) - len(shown)))
    return columns


def _centres(count: int, height: int) -> list[float]:
    """Vertical centres of `count` nodes, centred in the drawing area."""
    area = height - TOP - LEGEND
    first = TOP + (area - (count - 1) * ROW_GAP) / 2
    return [first + i * ROW_GAP for i in range(count)]


def _x(column: int) -> int:
    return MARGIN + column * COLUMN_GAP


def _headers(trace: Trace) -> list[str]:
    names = ["inputs x"] + [f"layer {layer.index}: {layer.activation}" for layer in trace.layers]
    names.append("loss")
    return [
        f'<text x="{_x(i) + NODE_WIDTH / 2:.1f}" y="{TOP - 18}" text-anchor="middle" '
        f'font-weight="bold">{escape(name)}</text>'
        for i, name in enumerate(names)
    ]


def _edges(trace: Trace, columns, centres, scale: float) -> list[str]:
    """One line per weight between shown units, the largest |∂L/∂W| drawn last (on top)."""
    edges = []
    for index, layer in enumerate(trace.layers, start=1):
        grads = layer.term("dL_dW").value  # [n_{l-1}, n_l]
        (sources, _), (targets, _) = columns[index - 1], columns[index]
        for (a, k), (b, j) in itertools.product(enumerate(sources), enumerate(targets)):
            start = (_x(index - 1) + NODE_WIDTH, centres[index - 1][a])
            end = (_x(index), centres[index][b])
            line = _edge(index, k, j, grads[k, j], layer.kernel[k, j], scale, start, end)
            size = abs(float(grads[k, j]))
            edges.append((size if math.isfinite(size) else math.inf, index, k, j, line))
    edges.sort(key=lambda edge: edge[:4])
    return ['<g class="edges">', *(edge[-1] for edge in edges), "</g>"]


def _edge(layer: int, k: int, j: int, grad: float, weight: float, scale: float, start, end) -> str:
    grad, weight = float(grad), float(weight)
    colour = POSITIVE if grad > 0 else NEGATIVE if grad < 0 else ZERO
    width = 0.8 + 5.2 * math.sqrt(abs(grad) / scale) if scale > 0 and math.isfinite(grad) else 0.8
    dash = ' stroke-dasharray="4 3"' if grad == 0 else ""
    where = f"_{layer}[{k + 1}, {j + 1}]"
    tip = f"∂L/∂W{where} = {number(grad)} (W{where} = {number(weight)})"
    return (
        f'<line class="edge" data-layer="{layer}" data-from="{k + 1}" data-to="{j + 1}" '
        f'data-grad="{grad!r}" data-weight="{weight!r}" x1="{start[0]:.1f}" y1="{start[1]:.1f}" '
        f'x2="{end[0]:.1f}" y2="{end[1]:.1f}" stroke="{colour}" stroke-width="{width:.2f}"{dash}>'
        f"<title>{escape(tip)}</title></line>"
    )


def _loss_edges(trace: Trace, columns, centres, height: int) -> list[str]:
    """Each output unit to the loss, labelled with ∂L/∂ŷ (δ_L for a loss on logits)."""
    last = trace.layers[-1]
    term = last.term("dL_dh") or last.term("delta")
    symbol = "∂L/∂ŷ" if term.key == "dL_dh" else term.symbol
    shown, _ = columns[-1]
    x1, x2, y2 = _x(len(columns) - 1) + NODE_WIDTH, _x(len(columns)), _middle(height)
    parts = ['<g class="loss-edges">']
    for a, j in enumerate(shown):
        value, y1 = float(term.value[0, j]), centres[-1][a]
        label = f"{symbol}{f'[{j + 1}]' if last.units > 1 else ''} = {number(value, DIGITS)}"
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#555555" '
            'stroke-width="1"/>'
        )
        parts.append(
            f'<text class="loss-gradient" data-value="{value!r}" x="{x1 + 6:.1f}" '
            f'y="{y1 - 5:.1f}" font-size="11">{escape(label)}</text>'
        )
    parts.append("</g>")
    return parts


def _middle(height: int) -> float:
    """The vertical centre of the drawing area."""
    return TOP + (height - TOP - LEGEND) / 2


def _input_nodes(trace: Trace, column, centres) -> list[str]:
    shown, hidden = column
    parts = ['<g class="inputs">']
    for a, k in enumerate(shown):
        value = float(trace.x[0, k])
        y = centres[a] - INPUT_HEIGHT / 2
        parts.append(
            f'<g class="input" data-unit="{k + 1}" data-x="{value!r}">'
            f"<title>x[{k + 1}] = {escape(number(value, 6))}</title>"
            f'<rect x="{_x(0)}" y="{y:.1f}" width="{NODE_WIDTH}" height="{INPUT_HEIGHT}" rx="6" '
            f'fill="#f7f7f7" stroke="#555555"/>'
            f'<text x="{_x(0) + 10}" y="{y + 20:.1f}" font-family="{MONO}">'
            f"x{k + 1} = {escape(number(value, DIGITS))}</text></g>"
        )
    if hidden:
        parts.append(_summary_node(0, centres[-1], hidden, "inputs"))
    parts.append("</g>")
    return parts


def _unit_nodes(trace: Trace, column: int, shown_hidden, centres) -> list[str]:
    layer = trace.layers[column - 1]
    shown, hidden = shown_hidden
    z, h, delta = (layer.term(key).value[0] for key in ("z", "h", "delta"))
    off = layer.off()[0]
    parts = [f'<g class="layer" data-layer="{layer.index}">']
    for a, j in enumerate(shown):
        parts.append(
            _unit(layer.index, j, float(z[j]), float(h[j]), float(delta[j]), bool(off[j]), column, centres[a])
        )
    if hidden:
        parts.append(_summary_node(column, centres[-1], hidden, "units"))
    parts.append("</g>")
    return parts


def _unit(layer: int, j: int, z: float, h: float, delta: float, off: bool, column: int, centre: float) -> str:
    x, y = _x(column), centre - NODE_HEIGHT / 2
    fill, dash = ("#ececec", ' stroke-dasharray="4 3"') if off else ("#ffffff", "")
    state = " (off)" if off else ""
    tip = f"layer {layer} unit {j + 1}{state}: z = {number(z)}, h = {number(h)}, δ = {number(delta)}"
    lines = [("z", z), ("h", h), ("δ", delta)]
    text = "".join(
        f'<text class="{name if name != "δ" else "delta"}" x="{x + 10}" y="{y + 17 + 16 * i:.1f}" '
        f'font-family="{MONO}">{name} {escape(number(value, DIGITS))}</text>'
        for i, (name, value) in enumerate(lines)
    )
    return (
        f'<g class="unit" data-layer="{layer}" data-unit="{j + 1}" data-z="{z!r}" data-h="{h!r}" '
        f'data-delta="{delta!r}" data-off="{str(off).lower()}"><title>{escape(tip)}</title>'
        f'<rect x="{x}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8" fill="{fill}" '
        f'stroke="#333333"{dash}/>{text}<text x="{x + NODE_WIDTH - 8}" y="{y + 14:.1f}" '
        f'text-anchor="end" font-size="10" fill="#777777">{j + 1}</text></g>'
    )


def _summary_node(column: int, centre: float, hidden: int, what: str) -> str:
    x, y = _x(column), centre - INPUT_HEIGHT / 2
    return (
        f'<g class="summary" data-hidden="{hidden}"><rect x="{x}" y="{y:.1f}" width="{NODE_WIDTH}" '
        f'height="{INPUT_HEIGHT}" rx="6" fill="#ffffff" stroke="#999999" stroke-dasharray="2 2"/>'
        f'<text x="{x + 10}" y="{y + 20:.1f}">+ {hidden} more {what}</text></g>'
    )


def _loss_node(trace: Trace, column: int, height: int) -> list[str]:
    x, y = _x(column), _middle(height) - NODE_HEIGHT / 2
    targets = ", ".join(number(v, DIGITS) for v in np.ravel(trace.y[0]))
    return [
        f'<g class="loss" data-loss="{trace.loss_value!r}">'
        f"<title>{escape(trace.loss)}: L = {escape(number(trace.loss_value))}</title>"
        f'<rect x="{x}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="8" fill="#fff8e1" '
        f'stroke="#333333"/>'
        f'<text x="{x + 10}" y="{y + 24:.1f}" font-family="{MONO}" font-weight="bold">'
        f"L {escape(number(trace.loss_value, DIGITS))}</text>"
        f'<text x="{x + 10}" y="{y + 44:.1f}" font-family="{MONO}">y {escape(targets)}</text></g>'
    ]


def _legend(scale: float, height: int) -> list[str]:
    y = height - LEGEND + 28
    largest = escape(number(scale, DIGITS))
    return [
        '<g class="legend" font-size="11">',
        _swatch(MARGIN, y, POSITIVE, "∂L/∂W &gt; 0 (descent lowers the weight)"),
        _swatch(MARGIN + 300, y, NEGATIVE, "∂L/∂W &lt; 0 (descent raises it)"),
        f'<text x="{MARGIN}" y="{y + 20}">edge width ∝ √|∂L/∂W| (largest {largest}); grey dashed: 0. '
        "Grey dashed unit: off (f'(z) = 0), it passes no gradient. δ = ∂L/∂z.</text>",
        "</g>",
    ]


def _swatch(x: int, y: int, colour: str, label: str) -> str:
    """A short thick line of `colour` and its (escaped) label."""
    return (
        f'<line x1="{x}" y1="{y - 4}" x2="{x + 30}" y2="{y - 4}" stroke="{colour}" stroke-width="3"/>'
        f'<text x="{x + 36}" y="{y}">{label}</text>'
    )
