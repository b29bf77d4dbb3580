"""Gradient checking: automatic vs hand-written vs central finite differences.

Three entry points share one comparison core (`compare`) and one report (`Report`):

* `check(model, x, y, loss)`: the `MLP`'s `tf.GradientTape` gradients, its hand-written
  (`backprop.manual_gradients`) gradients and central differences of the loss, all in float64
  (a float32 model is checked on a float64 copy of its weights).
* `gradcheck(fn, inputs)`: any TensorFlow callable; the gradients `tf.GradientTape` computes
  (so a `tf.custom_gradient` inside `fn` is what gets checked) vs central differences.
* `check_model(model, x, y, loss_fn)`: any Keras model; tape vs central differences of the
  loss per trainable variable (custom layers included).

Modes:
  full  perturbs every element: the whole gradient (MLP) or the whole Jacobian
        (output elements × input elements).  For small problems.
  fast  per variable or input, `directions` random directions v (the directional derivative
        from two evaluations, against gᵀv, or uᵀJv for a random unit u: one backward and two
        forwards per direction) plus `samples` random single elements.  Millions of
        parameters check in seconds.  A variable with at most directions + samples elements
        is checked element by element.  The MLP's directions have unit norm (a step of eps
        moves few pre-activations across a ReLU kink); a function's have unit RMS entries, so
        each element moves by about eps, as in the element checks.

Thresholds.  An element fails when |a − b| / max(|a|, |b|, atol / rtol) > rtol (the details,
and why tape ↔ manual scales atol, in `report`):

  comparison                          dtype     eps    rtol    atol
  tape ↔ manual (`EXACT`)             float64   -      1e-9    1e-12 × max(1, max |g|)
  analytic ↔ numeric (`FLOAT64`)      float64   1e-6   1e-5    1e-8, or the round-off floor
  analytic ↔ numeric (`FLOAT32`)      float32   1e-3   1e-2    1e-3, or the round-off floor

`FLOAT32` applies only when `fn` does not run in float64 (it raises on float64 inputs, or
returns a lower-precision output); the report then says so.

Kinks.  A central difference across a point where the derivative jumps (ReLU at 0) is not a
valid reference.  A failing element whose difference crossed a kink is counted as a kink, not
as a failure, and left out of max abs and max rel.  How a crossing is recognised: for the MLP
a pre-activation changes sign (`mlp`), for any function the one-sided differences disagree
(`function`).

Modules, each importing only those above it:
  report       tolerances, `compare`, the report and its text and JSON
  options      the shared arguments, validated
  perturb      the flat layout of several tensors, perturbation plans, compiled row maps
  mlp          `check`, `random_batch`
  function     `gradcheck`, and the engine `check_model` shares
  keras_model  `check_model`
"""

from tf_backprop.gradcheck.function import MAX_FULL_JACOBIAN, gradcheck
from tf_backprop.gradcheck.keras_model import check_model
from tf_backprop.gradcheck.mlp import GradientFn, check, random_batch
from tf_backprop.gradcheck.options import MODES
from tf_backprop.gradcheck.perturb import ROW_BUDGET
from tf_backprop.gradcheck.report import (
    EPS,
    EXACT,
    FLOAT32,
    FLOAT64,
    NUMERIC_TOLERANCES,
    ROUNDOFF_FACTOR,
    Comparison,
    Element,
    Entry,
    Location,
    Report,
    Tolerance,
    compare,
)

__all__ = [
    "EPS",
    "EXACT",
    "FLOAT32",
    "FLOAT64",
    "MAX_FULL_JACOBIAN",
    "MODES",
    "NUMERIC_TOLERANCES",
    "ROUNDOFF_FACTOR",
    "ROW_BUDGET",
    "Comparison",
    "Element",
    "Entry",
    "GradientFn",
    "Location",
    "Report",
    "Tolerance",
    "check",
    "check_model",
    "compare",
    "gradcheck",
    "random_batch",
]
