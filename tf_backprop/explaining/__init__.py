"""Explaining: one backward pass with its numbers, the article's errata made numeric, a picture of the net.

`explain(model, x, y, loss, l2=0.0)` (also `tf_backprop.explain`) returns a `Trace`: per layer
z, h, ∂L/∂h, δ, ∂L/∂W and ∂L/∂b with their formulas, each gradient checked against
`tf.GradientTape`, and for nets shaped like the article's the article's errata evaluated on the
same numbers.  Modules: `trace` (the pass), `errata`, `api` (`explain`), `render` (text,
Markdown, JSON) and `svg` (the picture).
"""

from tf_backprop.explaining.api import ERRATA_MODES, default_sample, explain, float64_copy
from tf_backprop.explaining.errata import Erratum
from tf_backprop.explaining.trace import LayerTrace, TapeCheck, Term, Trace

__all__ = [
    "ERRATA_MODES",
    "Erratum",
    "LayerTrace",
    "TapeCheck",
    "Term",
    "Trace",
    "default_sample",
    "explain",
    "float64_copy",
]
