"""Gradient checking: automatic vs hand-written vs central finite differences, to second order.

Three entry points share one comparison core (`compare`) and one report (`Report`):

* `check(model, x, y, loss)`: the `MLP`'s `tf.GradientTape` gradients, its hand-written
  (`backprop.manual_gradients`) gradients and central differences of the loss, all in float64
  (a float32 model is checked on a float64 copy of its weights).
* `gradcheck(fn, inputs)`: any TensorFlow callable; the gradients `tf.GradientTape` computes
  (so a `tf.custom_gradient` inside `fn` is what gets checked) vs central differences.
* `check_model(model, x, y, loss_fn)`: any Keras model; tape vs central differences of the
  loss per trainable variable (custom layers included).

Each takes order=2 (the derivative of the gradient: Hessian-vector products from nested tapes,
and for the MLP the hand-written R-operator, against central differences of the gradient);
`gradcheck` and `check_model` take check_forward=True (tf.autodiff.ForwardAccumulator against
the differences and against reverse mode; at order 2, forward over reverse).

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
valid reference.  A failing element is counted as a kink, not a failure, only when the kink is
shown from its one-sided differences and the source's own derivative on each side (`kinks`);
for the MLP a pre-activation must also sit at 0 or change sign along the step.  An eps larger
than 1% of an input's scale is refused (`options.check_step`).

Verdicts: PASS, FAIL, or INCONCLUSIVE when too little was checked (`report`); only PASS is
`Report.passed`.

Modules, each importing only those above it:
  render        a report as text
  report        tolerances, `compare`, the report and its JSON
  options       the shared arguments, validated; the largest step
  kinks         when a disagreement is a kink: the rule, shown on both sides
  perturb       the flat layout of several tensors, perturbation plans, compiled row maps
  problem       a function at a point and its compiled evaluations (reverse, forward, perturbed)
  engine        full Jacobians and projections of a problem, compared per input
  second_order  a function's gradient as the function checked at order 2
  function      `gradcheck`, and the entry `check_model` shares
  keras_model   `check_model`
  mlp_second    the MLP's Hessian: tape over tape vs R-operator vs differences of the gradient
  mlp           `check`, `random_batch`
"""

from tf_backprop.gradcheck.function import MAX_FULL_JACOBIAN, gradcheck
from tf_backprop.gradcheck.keras_model import check_model
from tf_backprop.gradcheck.kinks import MAX_PROBES
from tf_backprop.gradcheck.mlp import GradientFn, check, random_batch
from tf_backprop.gradcheck.options import MAX_STEP_FRACTION, MODES, ORDERS
from tf_backprop.gradcheck.perturb import ROW_BUDGET
from tf_backprop.gradcheck.report import (
    EPS,
    EXACT,
    FLOAT32,
    FLOAT64,
    MAX_ROUNDOFF_FRACTION,
    MAX_UNCHECKED_FRACTION,
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
    "MAX_PROBES",
    "MAX_ROUNDOFF_FRACTION",
    "MAX_STEP_FRACTION",
    "MAX_UNCHECKED_FRACTION",
    "MODES",
    "NUMERIC_TOLERANCES",
    "ORDERS",
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
