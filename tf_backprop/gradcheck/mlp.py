"""The MLP checker: tape vs hand-written gradients vs central differences of the loss, in float64.

Kinks.  The perturbed forward passes here track the sign of every pre-activation of a
`has_kink` activation (ReLU and its kin); only a central difference along which one sits at 0
or changes sign between θ − δ and θ + δ may be a kink, and only if the kink is shown (`kinks`):
from the one-sided differences of the loss, and the gradient source's own derivative at θ ± δ
(tape_fn or manual_fn evaluated on a copy of the model with those weights).

`order=2` is `mlp_second`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop import backprop
from tf_backprop import losses as losses_lib
from tf_backprop.gradcheck import kinks, mlp_second, perturb
from tf_backprop.gradcheck.options import (
    Options,
    check_count,
    check_finite,
    check_positive,
    check_step,
    override_tolerance,
)
from tf_backprop.gradcheck.report import (
    EPS,
    EXACT,
    FLOAT64,
    Entry,
    Report,
    below_atol_notes,
    compare,
    element_locator,
)
from tf_backprop.model import MLP

GradientFn = Callable[..., tuple[tf.Tensor, list[tf.Tensor]]]


def check(
    model: MLP,
    x,
    y,
    loss: str | losses_lib.Loss,
    mode: str = "full",
    l2: float = 0.0,
    eps: float | None = None,
    seed: int = 0,
    *,
    directions: int = 4,
    samples: int = 4,
    atol: float | None = None,
    rtol: float | None = None,
    tape_fn: GradientFn = backprop.tape_gradients,
    manual_fn: GradientFn = backprop.manual_gradients,
    order: int = 1,
    tape_hvp_fn: mlp_second.HvpFn = backprop.tape_hvp,
    manual_hvp_fn: mlp_second.HvpFn = backprop.manual_hvp,
) -> Report:
    """Checks an MLP's tape and hand-written gradients against each other and central differences.

    Everything runs in float64; a float32 model is checked on a float64 copy of its weights.

    Args:
      model: a `tf_backprop.MLP` (use `check_model` for any other Keras model).
      x: inputs [m, n_0]; y: targets for `loss` (see `backprop.prepare`).
      loss: a loss name or `losses.Loss`.
      mode: "full" (every parameter) or "fast" (random directions and sampled elements).
      l2: the L2 coefficient λ of λ/2 Σ‖W‖².
      eps: the finite-difference step; default 1e-6.
      seed: seeds the fast mode's directions and samples.
      directions, samples: per variable, in fast mode.
      atol, rtol: override `FLOAT64` for the comparisons against numeric values.
      tape_fn, manual_fn: the two gradient sources, (model, x, y, loss, l2) -> (loss, grads).
      order: 1, or 2 for the Hessian (`mlp_second`): tape_hvp_fn (tape over tape) and
        manual_hvp_fn (the R-operator), each (model, x, y, loss, v, l2, params=None) -> Hv as
        `backprop.manual_hvp`, against central differences of the hand-written gradient.

    Returns:
      A `Report` with one entry per trainable variable and the comparisons tape ↔ manual,
      tape ↔ numeric and manual ↔ numeric; its verdict is PASS, FAIL or INCONCLUSIVE.

    Raises:
      ValueError: on a bad argument (named in the message), including NaN or inf in x or y.
    """
    options = Options(mode, eps, atol, rtol, seed, directions, samples, order).validated()
    eps, l2 = check_positive("eps", eps, EPS["float64"]), _check_l2(l2)
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a tf_backprop MLP, got {type(model).__name__}; use check_model")
    x_array = check_finite("x", x)
    if x_array.dtype.kind not in "biuf":
        raise ValueError(f"x: expected an array of numbers, got dtype {x_array.dtype}")
    check_finite("y", y)
    model64, notes = _float64_mlp(model)
    x64, y64, loss = backprop.prepare(model64, x, y, loss)
    layout = _mlp_layout(model64)
    check_step(eps, layout.names, [v.numpy() for v in model64.trainable_variables])
    if order == 2:
        title = (
            f"{_mlp_title(model, loss, l2, x64)}, second order: tape over tape vs R-operator vs differences"
        )
        notes.append("numeric: central differences of the hand-written gradient")
        hvp_fns = {"tape": tape_hvp_fn, "manual": manual_hvp_fn}
        return mlp_second.check((model64, x64, y64, loss, l2, layout), options, eps, hvp_fns, title, notes)
    value, tape = tape_fn(model64, x64, y64, loss, l2)
    tape = _check_gradients("tape_fn", tape, layout)
    manual = _check_gradients("manual_fn", manual_fn(model64, x64, y64, loss, l2)[1], layout)
    plans = perturb.plans(layout, options, unit=True)
    targets = _mlp_targets(model64, x64, y64, loss, l2, layout)
    numeric = perturb.run_plans(targets, plans, eps, options.mode)
    base = float(np.asarray(targets[0].run(np.zeros((1, layout.sizes[0])), 0)[0])[0])  # L(θ), same path
    given = override_tolerance(FLOAT64, atol, rtol)
    tolerances = (
        EXACT.scaled(max(float(np.abs(g).max()) for g in tape)),  # round-off grows with max |g|
        given.with_roundoff("float64", float(value), eps),
    )
    sources = {"tape": (tape, tape_fn), "manual": (manual, manual_fn)}
    at_point = _AtPoint(model64, x64, y64, loss, l2)
    entries = [
        _mlp_entry(layout, i, plans[i], sources, numeric[i], base, eps, tolerances, at_point, targets[i])
        for i in range(len(plans))
    ]
    notes += below_atol_notes(entries, given.atol)
    return Report(_mlp_title(model, loss, l2, x64), mode, "float64", eps, tuple(entries), tuple(notes))


def random_batch(model: MLP, loss: str | losses_lib.Loss, batch_size: int, seed: int = 0):
    """A random batch to check `model` with `loss`: (x [batch, n_0], y).

    x ~ N(0, 1); y ~ N(0, 1) [batch, n_L] for the squared errors, {0, 1} [batch, n_L] for
    binary cross-entropy, class labels [batch] for categorical cross-entropy.
    """
    loss = losses_lib.get(loss)
    batch_size = check_count("batch_size", batch_size, 1)
    rng = np.random.default_rng(check_count("seed", seed, 0))
    x = rng.standard_normal((batch_size, model.layer_sizes[0]))
    outputs = model.layer_sizes[-1]
    if loss.sparse_labels:
        return x, rng.integers(0, outputs, batch_size)
    if loss.on_logits:
        return x, rng.integers(0, 2, (batch_size, outputs)).astype(np.float64)
    return x, rng.standard_normal((batch_size, outputs))


def _mlp_layout(model: MLP) -> perturb.Layout:
    variables = model.trainable_variables
    names = [v.path.removeprefix(f"{model.name}/") for v in variables]  # dense_1/kernel, ...
    return perturb.Layout(names, [v.shape for v in variables])


def _check_gradients(name: str, grads, layout: perturb.Layout) -> list[np.ndarray]:
    """grads as float64 arrays; ValueError unless one per variable, each of its shape."""
    grads = list(grads)
    shapes = [None if g is None else tuple(np.shape(g)) for g in grads]
    if shapes != layout.shapes:
        raise ValueError(f"{name}: expected gradients of shapes {layout.shapes}, got {shapes}")
    return [np.asarray(g, np.float64) for g in grads]


def _check_l2(l2) -> float:
    if (
        isinstance(l2, bool)
        or not isinstance(l2, (int, float, np.number))
        or not l2 >= 0
        or not math.isfinite(l2)
    ):
        raise ValueError(f"l2: expected a finite number ≥ 0, got {l2!r}")
    return float(l2)


def _float64_mlp(model: MLP) -> tuple[MLP, list[str]]:
    """The model itself if float64, else a float64 copy with the same weights and activations."""
    if model.compute_dtype == "float64":
        return model, []
    return _copy_mlp(model, "float64"), [f"checked on a float64 copy of the {model.compute_dtype} model"]


def _copy_mlp(model: MLP, dtype: str) -> MLP:
    """A copy of the model in dtype, with its weights and its very activation objects."""
    # The copy is named "mlp", whatever the model's name: _mlp_layout strips the copy's own.
    copy = dataclasses.replace(model.spec, dtype=dtype).build()
    for target, source in zip(copy.weights, model.weights):
        target.assign(tf.cast(source, dtype))
    # Keep the activation objects themselves (a swapped-in one keeps its backward).
    copy.hidden_activation = model.hidden_activation
    copy.output_activation = model.output_activation
    return copy


def _mlp_targets(model: MLP, x, y, loss, l2: float, layout: perturb.Layout) -> list[perturb.Target]:
    """Per variable, a compiled map: perturbation rows δ -> (L(θ+δ), L(θ−δ), crossed a kink,
    crossed several).

    The perturbed forward passes are written out here, apart from the model's, as an
    independent reference.  Layers below a perturbed one do not change: for large nets each
    layer l gets its own map, which starts from the cached h_{l-1} and z_l of an unperturbed
    pass and whose rows cover the parameters of layers l..L only.  Small nets share one map
    (one trace).
    """
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]  # [W_1, b_1, ..., b_L]
    forward = model.forward(x, keep_intermediates=True)
    inputs = [x] + forward.hs[:-1]  # h_0 .. h_{L-1}
    n_layers = len(model.dense_layers)
    firsts = [0] * n_layers if layout.size <= perturb.ROW_BUDGET else list(range(n_layers))
    signature = (tf.TensorSpec([], tf.float64),) * 2 + (tf.TensorSpec([], tf.bool),) * 2
    cost = int(x.shape[0]) * sum(model.layer_sizes[1:])  # one row's activations
    runs = {}
    for first in sorted(set(firsts)):
        size = layout.size - int(layout.offsets[2 * first])
        row = _suffix_row(model, params, (inputs[first], forward.zs), y, loss, l2, first)
        parallel = perturb.parallel_iterations(size)
        runs[first] = (
            perturb.compile_rows(row, size, tf.float64, signature, parallel, vectorize=False),
            size,
        )
    targets = []
    for i in range(len(params)):
        first = firsts[i // 2]
        run, size = runs[first]
        targets.append(perturb.Target(run, size, int(layout.offsets[i] - layout.offsets[2 * first]), cost))
    return targets


def _suffix_row(model: MLP, params, cached, y, loss, l2: float, first: int) -> Callable:
    """row(δ) -> (L(θ+δ), L(θ−δ), crossed a kink, crossed several), δ over [W_first, b_first,
    ..., b_L] (flat).

    cached = (h_{first-1}, [z_1, ..., z_L]) at θ.  z_first is linear in its layer's parameters,
    so z_first(θ ± δ) = z_first ± (h_{first-1} δW + δb): one product serves both signs, and for
    a single element or a bias it needs no matmul at all.  Several: the step crossed kinks at more
    than one place — pre-activations at 0 at θ (one place, x itself) and each one that changes
    sign inside the step — where no rule of `kinks` can show them.
    """
    h_in, base_zs = cached
    z_in = base_zs[first]
    kinked = [i for i in range(first, len(model.dense_layers)) if model.activations_per_layer[i].has_kink]
    bases = [(base_zs[i] > 0, tf.equal(base_zs[i], 0)) for i in kinked]  # (on, at 0) at θ, once
    tail = params[2 * first :]  # [W_first, b_first, ..., W_L, b_L]
    sizes = [int(tf.size(p)) for p in tail]

    def loss_from(z, new_tail):
        signs, last = [], len(model.dense_layers) - 1
        for index in range(first, last + 1):  # z is z_index: [m, n_index]
            activation = model.activations_per_layer[index]
            h = activation.forward(z)
            if activation.has_kink:
                signs.append(z > 0)
            if index < last:
                w, b = new_tail[2 * (index + 1 - first) : 2 * (index + 2 - first)]
                z = tf.matmul(h, w) + b
        value = loss.value(z, h, y)
        if l2:
            value += losses_lib.l2_penalty([*params[0 : 2 * first : 2], *new_tail[0::2]], l2)
        return value, signs

    def row(delta):
        steps = [tf.reshape(d, p.shape) for d, p in zip(tf.split(delta, sizes), tail)]
        z_step = mlp_second.kernel_step(h_in, steps[0]) + steps[1]  # [m, n_first]
        plus, signs_plus = loss_from(z_in + z_step, [p + d for p, d in zip(tail, steps)])
        minus, signs_minus = loss_from(z_in - z_step, [p - d for p, d in zip(tail, steps)])
        flips = [tf.reduce_any(a != b) for a, b in zip(signs_plus, signs_minus)]
        crossed = tf.reduce_any(tf.stack(flips)) if flips else tf.constant(False)
        return plus, minus, crossed, _places(signs_plus, signs_minus, bases) > 1

    return row


def _places(signs_plus, signs_minus, bases) -> tf.Tensor:
    """How many places along the step a kink sits at: x itself, if a pre-activation at 0 there
    turns on at x ± δ, and one for each other pre-activation whose sign changes at x + δ or x − δ.
    bases: per kinked layer, (z > 0, z == 0) at θ."""
    at_x, inside = [], []
    for plus, minus, (on, zero) in zip(signs_plus, signs_minus, bases):
        changed = (plus != on) | (minus != on)
        at_x.append(tf.reduce_any(changed & zero))
        inside.append(tf.math.count_nonzero(changed & ~zero, dtype=tf.int32))
    if not at_x:
        return tf.constant(0)
    return tf.cast(tf.reduce_any(tf.stack(at_x)), tf.int32) + tf.add_n(inside)


def _mlp_entry(layout, i, plan, sources, numeric, base, eps, tolerances, at_point, target) -> Entry:
    """One variable's comparisons: tape ↔ manual (every element), each ↔ numeric (the plan)."""
    exact, tolerance = tolerances
    plus, minus, crossed, several = numeric
    differences = ((plus - minus) / (2 * eps), (plus - base) / eps, (base - minus) / eps)  # [k + s] each
    shape, locate = layout.shapes[i], plan.locate(layout.shapes[i])
    tape, manual = sources["tape"][0][i], sources["manual"][0][i]
    comparisons = [compare(tape, manual, exact, sources=("tape", "manual"), locate=element_locator(shape))]
    split = kinks.cached(_half_steps(target, plan, base, eps))  # one for both sources
    for name, (grads, fn) in sources.items():
        comparisons.append(
            kinks.compare_with_differences(
                plan.project(grads[i].ravel()),
                differences,
                kinks.guarded(at_point.side(fn, layout, i, plan, eps)),
                tolerance,
                sources=(name, "numeric"),
                locate=locate,
                allowed=crossed,
                several=several,
                split=split,
            )
        )
    full = len(plan.directions) == 0 and len(plan.elements) == layout.sizes[i]
    norms = {
        "tape": float(np.linalg.norm(tape)),
        "manual": float(np.linalg.norm(manual)),
        "numeric": float(np.linalg.norm(differences[0])) if full else None,
    }
    return Entry(layout.names[i], shape, norms, tuple(comparisons))


def _half_steps(target: perturb.Target, plan: perturb.Plan, base: float, eps: float) -> kinks.Split:
    """`kinks.Split` for the plan's rows: the loss at θ ± (ε/2)v_r and its one-sided differences
    (truncation and the kink at the point, `kinks`), evaluated for the candidates only."""

    def split(at: np.ndarray) -> kinks.SplitSides:
        plus, minus = (
            np.asarray(v, np.float64) for v in target.run(plan.rows_at(at) * (eps / 2), target.offset)[:2]
        )
        full, half = np.full(len(at), eps), np.full(len(at), eps / 2)
        return kinks.SplitSides((plus - base) / (eps / 2), (base - minus) / (eps / 2), full, full, half, half)

    return split


class _AtPoint:
    """A gradient source evaluated at other weights, on a float64 copy of the model (built once)."""

    def __init__(self, model: MLP, x, y, loss, l2: float):
        self.model, self.x, self.y, self.loss, self.l2 = model, x, y, loss, l2
        self.theta = [v.numpy() for v in model.trainable_variables]
        self.copy: MLP | None = None

    def side(self, fn: GradientFn, layout: perturb.Layout, i: int, plan: perturb.Plan, eps: float):
        """(rows, t) -> fn's gradient of variable i at θ + tε v_r, along v_r (v_d or e_j)."""

        def at_side(at: np.ndarray, t: float) -> np.ndarray:
            values = []
            for row in plan.rows_at(at):
                weights = list(self.theta)
                weights[i] = weights[i] + t * eps * row.reshape(layout.shapes[i])
                grads = fn(self._with(weights), self.x, self.y, self.loss, self.l2)[1]
                values.append(float(np.asarray(grads[i], np.float64).ravel() @ row))
            return np.array(values)

        return at_side

    def _with(self, weights) -> MLP:
        if self.copy is None:
            self.copy = _copy_mlp(self.model, "float64")
        for variable, value in zip(self.copy.trainable_variables, weights):
            variable.assign(value)
        return self.copy


def _mlp_title(model: MLP, loss, l2: float, x) -> str:
    sizes = "-".join(str(s) for s in model.layer_sizes)
    activations = f"{model.hidden_activation.name} → {model.output_activation.name}"
    return f"gradcheck: MLP {sizes} ({activations}), loss {loss.name}, l2 {l2:g}, batch {x.shape[0]}"
