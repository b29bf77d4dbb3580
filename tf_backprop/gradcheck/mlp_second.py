"""The MLP to second order: tape over tape vs the hand-written R-operator vs differences of the gradient.

Three sources of the Hessian of the loss, per variable, in float64:

* tape    `backprop.tape_hvp`: tf.GradientTape over tf.GradientTape;
* manual  `backprop.manual_hvp`: Pearlmutter's R-operator written out (docs/backprop.md §8);
* numeric central differences of the hand-written *gradient* (`backprop.backward`), itself
          checked at first order: (g(θ + εv) − g(θ − εv)) / 2ε = Hv + O(ε²).

full  every column H e_j of the variable's elements j: an [n, n_i] block per variable
      (n parameters in all), one HVP and two gradients per element.
fast  per variable, k random unit directions v_d (and s sampled elements) against random unit
      cotangents w_d over all parameters: w_dᵀ H v_d, from the k HVPs H w_d (H is symmetric),
      against w_d · (g(θ + εv_d) − g(θ − εv_d)) / 2ε.

Kinks: the gradient of a ReLU net jumps where a pre-activation crosses 0, so a difference is a
kink candidate only where one sits at 0 or changes sign along the step; it is shown, as at first
order (`kinks`, continuous=False), with each source's HVP at θ ± δ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop import backprop
from tf_backprop.gradcheck import kinks, perturb
from tf_backprop.gradcheck.options import Options, override_tolerance
from tf_backprop.gradcheck.report import (
    EXACT,
    FLOAT64,
    Entry,
    Location,
    Report,
    below_atol_notes,
    compare,
    unravel,
)
from tf_backprop.model import MLP, Forward

HvpFn = Callable[..., list]  # (model, x, y, loss, v, l2=0.0, params=None) -> Hv, as backprop.manual_hvp
MAX_FULL_HESSIAN = 1 << 25  # Hessian elements beyond which mode="full" refuses


class _Net:
    """The float64 MLP at θ with its batch: gradients and HVPs at θ or at other parameters."""

    def __init__(self, model: MLP, x, y, loss, l2: float, layout: perturb.Layout):
        self.model, self.x, self.y, self.loss, self.l2, self.layout = model, x, y, loss, l2, layout
        self.params0 = [tf.convert_to_tensor(v) for v in model.trainable_variables]  # [W_1, b_1, ...]
        self.theta = layout.flatten(self.params0)  # [n]
        self.forward0 = model.forward(x, keep_intermediates=True)  # at θ: reused below a perturbed layer

    def params(self, theta: tf.Tensor) -> list[tf.Tensor]:
        return self.layout.unflatten(theta)

    def gradient(self, theta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(the hand-written gradient at theta [n], whether each kinked pre-activation is > 0)."""
        params = self.params(theta)
        return self.gradient_from(params, 0, tf.matmul(self.x, params[0]) + params[1])

    def gradient_from(self, params, first: int, z_first: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The gradient at params, whose layers below `first` are θ's (their pass is reused).

        z_first: layer first's pre-activation at params.  Returns (gradient [n], the signs
        of the kinked pre-activations of layers first, first + 1, ...).
        """
        zs, hs = list(self.forward0.zs[:first]), list(self.forward0.hs[:first])
        z, last = z_first, len(self.model.dense_layers) - 1
        for index in range(first, last + 1):  # z is z_index: [m, n_index]
            zs.append(z)
            hs.append(self.model.activations_per_layer[index].forward(z))
            if index < last:
                z = tf.matmul(hs[-1], params[2 * index + 2]) + params[2 * index + 3]
        forward = Forward(self.forward0.inputs, zs, hs)
        delta = self.loss.delta(zs[-1], hs[-1], self.y, self.model.output_activation)
        grads = backprop.backward(self.model, forward, delta, self.l2, params)
        kinked = [
            tf.reshape(zs[index] > 0, [-1])
            for index, f in enumerate(self.model.activations_per_layer)
            if f.has_kink and index >= first
        ]
        return self.layout.flatten(grads), (tf.concat(kinked, 0) if kinked else tf.zeros([0], tf.bool))

    def hvp(self, fn: HvpFn, v: tf.Tensor, theta: tf.Tensor | None = None) -> tf.Tensor:
        """fn's Hv at theta (default θ), flat [n]."""
        params = None if theta is None else self.params(theta)
        return self.layout.flatten(
            fn(self.model, self.x, self.y, self.loss, self.params(v), self.l2, params=params)
        )


def kernel_step(h_in: tf.Tensor, d_kernel: tf.Tensor) -> tf.Tensor:
    """h_in @ d_kernel, [m, n_l]: an outer product when d_kernel has at most one nonzero row."""
    nonzero_rows = tf.reduce_any(d_kernel != 0, axis=1)  # [n_{l-1}]
    i = tf.argmax(tf.cast(nonzero_rows, tf.int32))

    def one_row():
        return h_in[:, i, None] * d_kernel[i][None, :]  # [m, 1] * [1, n_l]

    sparse = tf.reduce_sum(tf.cast(nonzero_rows, tf.int32)) <= 1
    return tf.cond(sparse, one_row, lambda: tf.matmul(h_in, d_kernel))


def check(
    net_parts: tuple, options: Options, eps: float, hvp_fns: dict[str, HvpFn], title: str, notes
) -> Report:
    """The second-order check of `gradcheck.check(..., order=2)`.

    net_parts: (float64 model, x, y, loss, l2, layout), prepared by the caller;
    hvp_fns: {"tape": ..., "manual": ...}, each with backprop.manual_hvp's signature.
    """
    net = _Net(*net_parts)
    n = net.layout.size
    if options.mode == "full" and n * n > MAX_FULL_HESSIAN:
        raise ValueError(f"mode: 'full' at order 2 would compare a {n} x {n} Hessian; use mode='fast'")
    plans = perturb.plans(net.layout, options, unit=True)
    numeric = perturb.run_plans(_gradient_targets(net), plans, eps, options.mode)
    g0 = np.asarray(net.gradient(net.theta)[0], np.float64)  # [n]
    tolerance = override_tolerance(FLOAT64, options.atol, options.rtol)
    if options.mode == "full":
        entries = _full_entries(net, plans, numeric, g0, eps, tolerance, hvp_fns)
    else:
        entries = _fast_entries(net, plans, numeric, g0, eps, tolerance, hvp_fns, options.seed)
    notes = (*notes, *below_atol_notes(entries, tolerance.atol))
    return Report(title, options.mode, "float64", eps, tuple(entries), notes)


def _gradient_targets(net: _Net) -> list[perturb.Target]:
    """Per variable, a compiled map: rows δ -> (g(θ + δ), g(θ − δ), crossed a kink).

    As at first order, layers below a perturbed one do not change: for large nets each layer l
    gets its own map, starting from θ's h_{l-1} and z_l, whose rows cover layers l..L; small
    nets share one map (one trace).
    """
    layout, n_layers = net.layout, len(net.model.dense_layers)
    firsts = [0] * n_layers if layout.size <= perturb.ROW_BUDGET else list(range(n_layers))
    spec = tf.TensorSpec([layout.size], tf.float64)
    signature = (spec, spec, tf.TensorSpec([], tf.bool))
    cost = 3 * layout.size + int(net.x.shape[0]) * sum(net.model.layer_sizes[1:])
    runs = {}
    for first in sorted(set(firsts)):
        size = layout.size - int(layout.offsets[2 * first])
        parallel = perturb.parallel_iterations(size)
        row = _suffix_row(net, first)
        runs[first] = perturb.compile_rows(row, size, tf.float64, signature, parallel, vectorize=False)
    return [
        perturb.Target(
            runs[firsts[i // 2]],
            layout.size,
            int(layout.offsets[i] - layout.offsets[2 * firsts[i // 2]]),
            cost,
        )
        for i in range(len(layout.sizes))
    ]


def _suffix_row(net: _Net, first: int) -> Callable:
    """row(δ) -> (g(θ + δ), g(θ − δ), crossed a kink), δ over [W_first, b_first, ..., b_L] (flat).

    z_first is linear in its layer's parameters: z_first(θ ± δ) = z_first ± (h_{first-1} δW +
    δb), one product for both signs (an outer product for a single element).
    """
    tail = net.params0[2 * first :]
    sizes = [int(tf.size(p)) for p in tail]
    h_in = net.forward0.inputs if first == 0 else net.forward0.hs[first - 1]
    z_in = net.forward0.zs[first]

    def row(delta):
        steps = [tf.reshape(d, p.shape) for d, p in zip(tf.split(delta, sizes), tail)]
        z_step = kernel_step(h_in, steps[0]) + steps[1]  # [m, n_first]
        results = []
        for sign in (1.0, -1.0):
            params = net.params0[: 2 * first] + [p + sign * d for p, d in zip(tail, steps)]
            results.append(net.gradient_from(params, first, z_in + sign * z_step))
        (plus, signs_plus), (minus, signs_minus) = results
        return plus, minus, tf.reduce_any(signs_plus != signs_minus)

    return row


def _hvp_rows(net: _Net, fn: HvpFn, rows: np.ndarray) -> np.ndarray:
    """fn's Hv for each row v [R, n] at θ: [R, n], compiled (one trace per source)."""
    n = net.layout.size
    spec = tf.TensorSpec([n], tf.float64)
    # A loop, not vectorized: tracing tf.vectorized_map of nested tapes costs more than it saves.
    run = perturb.compile_rows(lambda v: net.hvp(fn, v), n, tf.float64, spec, 1, vectorize=False)
    chunk = max(1, perturb.ROW_BUDGET // (4 * n))
    return np.concatenate(
        [np.asarray(run(rows[s : s + chunk]), np.float64) for s in range(0, len(rows), chunk)]
    )


# --- full mode: [n, n_i] blocks ----------------------------------------------------------------
def _full_entries(net: _Net, plans, numeric, g0, eps, tolerance, hvp_fns) -> list[Entry]:
    n = net.layout.size
    hessians = {
        name: _hvp_rows(net, fn, np.eye(n)).T for name, fn in hvp_fns.items()
    }  # [n, n]: columns H e_j
    scale = max(float(np.abs(h).max()) for h in hessians.values())  # tape ↔ manual round-off
    tolerance = tolerance.with_roundoff("float64", float(np.abs(g0).max()), eps)
    entries = []
    for i, (plus, minus, crossed) in enumerate(numeric):
        span = net.layout.span(i)
        plus, minus = plus.T, minus.T  # [n, n_i]: rows are gradient elements, columns the variable's
        differences = ((plus - minus) / (2 * eps), (plus - g0[:, None]) / eps, (g0[:, None] - minus) / eps)
        allowed = np.broadcast_to(crossed[None, :], plus.shape)
        sources = {name: h[:, span] for name, h in hessians.items()}
        locate = _block_locator(net.layout, i)
        sides = {name: _column_sides(net, hvp_fns[name], i, eps) for name in hvp_fns}
        entries.append(
            _entry(net.layout, i, sources, differences, sides, (allowed, tolerance, scale), locate, True)
        )
    return entries


def _block_locator(layout: perturb.Layout, i: int) -> Callable[[int], Location]:
    """Flat position in variable i's [n, n_i] block -> (its element, the gradient element)."""

    def locate(q: int) -> Location:
        k, j = divmod(q, layout.sizes[i])
        owner = int(np.searchsorted(layout.offsets, k, side="right") - 1)
        gradient = (layout.names[owner], unravel(k - int(layout.offsets[owner]), layout.shapes[owner]))
        return Location(index=unravel(j, layout.shapes[i]), gradient=gradient)

    return locate


def _column_sides(net: _Net, fn: HvpFn, i: int, eps: float) -> Callable:
    """(positions in the [n, n_i] block, t) -> (H(θ + tε e_j) e_j)_k by fn, one HVP per column."""
    size, offset, theta = net.layout.sizes[i], int(net.layout.offsets[i]), np.asarray(net.theta)

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        rows, columns = np.divmod(at, size)
        values = np.empty(len(at))
        for column in np.unique(columns):
            v = np.zeros_like(theta)
            v[offset + column] = 1.0
            point = theta + t * eps * v
            hv = np.asarray(net.hvp(fn, tf.constant(v), tf.constant(point)), np.float64)
            values[columns == column] = hv[rows[columns == column]]
        return values

    return kinks.guarded(at_side)


# --- fast mode: projections wᵀHv ---------------------------------------------------------------
def _fast_entries(net: _Net, plans, numeric, g0, eps, tolerance, hvp_fns, seed: int) -> list[Entry]:
    rng = np.random.default_rng([seed, 2])
    ws = rng.standard_normal((max(len(p.directions) for p in plans) or 1, net.layout.size))
    ws /= np.linalg.norm(ws, axis=1, keepdims=True)  # [k, n], unit rows
    hws = {name: _hvp_rows(net, fn, ws) for name, fn in hvp_fns.items()}  # H w_d: [k, n]
    hvp_scale = max(float(np.abs(hw).max()) for hw in hws.values())  # tape ↔ manual round-off
    scale = float(np.max(np.linalg.norm(ws * g0, axis=1)))  # round-off of w·g
    tolerance = tolerance.with_roundoff("float64", scale, eps)
    entries = []
    for i, (plan, (plus, minus, crossed)) in enumerate(zip(plans, numeric)):
        plus, minus = _project_gradients(plus, ws, plan), _project_gradients(minus, ws, plan)
        base = _project_gradients(np.broadcast_to(g0, (plan.count, g0.size)), ws, plan)
        differences = ((plus - minus) / (2 * eps), (plus - base) / eps, (base - minus) / eps)
        span = net.layout.span(i)
        sources = {name: _project(hw[:, span], plan) for name, hw in hws.items()}
        sides = {name: _row_sides(net, fn, i, ws, plan, eps) for name, fn in hvp_fns.items()}
        locate = plan.locate(net.layout.shapes[i])
        checks = (crossed, tolerance, hvp_scale)
        entries.append(_entry(net.layout, i, sources, differences, sides, checks, locate, False))
    return entries


def _project_gradients(grads: np.ndarray, ws: np.ndarray, plan: perturb.Plan) -> np.ndarray:
    """w_r · g_r per row of the plan [k + s]: w_d for direction d, w_0 for the sampled elements."""
    k = len(plan.directions)
    return np.concatenate([np.sum(grads[:k] * ws[:k], axis=1), grads[k:] @ ws[0]])


def _project(hw: np.ndarray, plan: perturb.Plan) -> np.ndarray:
    """w_dᵀ H v_d = (H w_d)·v_d per direction, (H w_0)_j per sampled element: [k + s]."""
    k = len(plan.directions)
    return np.concatenate([np.sum(hw[:k] * plan.directions, axis=1), hw[0, plan.elements]])


def _row_sides(net: _Net, fn: HvpFn, i: int, ws, plan: perturb.Plan, eps: float) -> Callable:
    """(rows, t) -> w_rᵀ H(θ + tε v_r) v_r by fn (v_r: v_d or e_j)."""
    theta, span, k = np.asarray(net.theta), net.layout.span(i), len(plan.directions)

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        values = []
        for r, row in zip(at, plan.rows_at(at)):
            v = np.zeros_like(theta)
            v[span] = row
            hv = net.hvp(fn, tf.constant(v), tf.constant(theta + t * eps * v))
            values.append(float(np.asarray(hv, np.float64) @ ws[r if r < k else 0]))
        return np.array(values)

    return kinks.guarded(at_side)


# --- the entry ---------------------------------------------------------------------------------
def _entry(layout, i, sources, differences, sides, checks, locate, full: bool) -> Entry:
    """tape ↔ manual (exact up to round-off of the largest HVP element), each ↔ numeric (kinks examined).

    checks: (where a kink may be, the numeric tolerance, the HVPs' scale).
    """
    allowed, tolerance, scale = checks
    tape, manual = sources["tape"], sources["manual"]
    comparisons = [compare(tape, manual, EXACT.scaled(scale), sources=("tape", "manual"), locate=locate)]
    for name, values in sources.items():
        comparisons.append(
            kinks.compare_with_differences(
                values,
                differences,
                sides[name],
                tolerance,
                sources=(name, "numeric"),
                locate=locate,
                continuous=False,
                allowed=allowed,
            )
        )
    norms = {name: float(np.linalg.norm(v)) if full else None for name, v in sources.items()}
    norms["numeric"] = float(np.linalg.norm(differences[0])) if full else None
    return Entry(layout.names[i], layout.shapes[i], norms, tuple(comparisons))
