"""The article's errata made numeric: each of its wrong formulas evaluated as written, next to the right one.

docs/backprop.md §7 derives them.  On a trace of a net shaped like the article's (three weight
layers, one output, a squared-error loss, no L2) each erratum shows

* the article's factor as written and the right one, on the same numbers (`wrong`, `right`);
* the gradient each gives when every other factor is right (`wrong_gradient`, `right_gradient`),
  or why the article's product is not defined;
* the training step it breaks, and, where the article's gradient can be computed, the loss after
  one gradient-descent step of `STEP_RATE` with it and with the right one;
* notes saying when a term is zero because a unit is off (f'(z) = 0, e.g. ReLU at z ≤ 0).

Batch-major as the trace: W_l is [n_{l-1}, n_l], so the article's W⁽ˡ⁾ x is x @ W_l here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_backprop import losses as losses_lib
from tf_backprop.explaining import trace as trace_lib
from tf_backprop.model import MLP

STEP_RATE = 0.01  # the learning rate of the one-step demonstration
SQUARED_ERRORS = ("half_mse", "mse")
_SUP = {1: "⁽¹⁾", 2: "⁽²⁾", 3: "⁽³⁾"}
_SUB = {1: "₁", 2: "₂", 3: "₃"}


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """A formula and its value on the trace's numbers; value None when it has none."""

    symbol: str  # e.g. "∂L/∂ŷ"
    formula: str  # e.g. "y − ŷ"
    value: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class DescentStep:
    """The loss after one step θ ← θ − rate · g, with the right g and with the article's."""

    rate: float
    before: float
    after_right: float
    after_wrong: float


@dataclasses.dataclass(frozen=True)
class Erratum:
    """One of the article's mistakes, evaluated: the article's value next to the right one."""

    key: str
    title: str
    wrong: Evaluated  # the article's factor, as written
    right: Evaluated  # the right factor
    wrong_gradient: Evaluated | None  # the gradient the article's factor gives (others right)
    right_gradient: Evaluated | None
    breaks: str  # the training step the mistake breaks
    notes: tuple[str, ...] = ()
    step: DescentStep | None = None


def not_applicable(trace: trace_lib.Trace) -> str | None:
    """Why the errata do not apply to the trace's net, or None when they do."""
    sizes = "-".join(map(str, trace.layer_sizes))
    if len(trace.layers) != 3 or trace.layer_sizes[-1] != 1:
        return f"they need the article's three weight layers and one output (like 2-3-3-1), got {sizes}"
    if trace.loss not in SQUARED_ERRORS:
        return f"they need a squared-error loss ({', '.join(SQUARED_ERRORS)}), got {trace.loss!r}"
    if trace.l2:
        return f"they need the article's loss without an L2 term, got l2={trace.l2:g}"
    return None


def evaluate(trace: trace_lib.Trace, model: MLP, loss: losses_lib.Loss) -> list[Erratum]:
    """The article's errata on the trace's numbers (the trace of `model`); see not_applicable."""
    reason = not_applicable(trace)
    if reason is not None:
        raise ValueError(f"errata: {reason}")
    context = _Context(trace, model, losses_lib.get(loss))
    return [
        _output_sign(context),
        _output_derivative(context),
        _weight_derivative(context),
        _chain_index(context, 2),
        _chain_index(context, 1),
        _numerical_methods(context),
    ]


class _Context:
    """The trace's numbers as the errata need them, with the forward pass as tensors."""

    def __init__(self, trace: trace_lib.Trace, model: MLP, loss: losses_lib.Loss):
        self.trace, self.model, self.loss = trace, model, loss
        self.forward = model.forward(tf.constant(trace.x), keep_intermediates=True)
        self.y = tf.constant(trace.y)

    def value(self, layer: int, key: str) -> np.ndarray:
        return self.trace.layers[layer - 1].term(key).value

    def right_gradients(self) -> list[np.ndarray]:
        """[∂W_1, ∂b_1, ..., ∂W_3, ∂b_3] of the trace."""
        return [self.value(layer, k) for layer in (1, 2, 3) for k in ("dL_dW", "dL_db")]

    def gradients_from_output(self, upstream: tf.Tensor, delta: tf.Tensor) -> list[np.ndarray]:
        """Every weight and bias gradient from an output pair (∂L/∂ŷ, δ_3), by the chain rule."""
        pairs = trace_lib.backward_deltas(self.model, self.forward, upstream, delta)
        inputs = [self.forward.inputs] + self.forward.hs[:-1]
        grads = []
        for h, (_, d) in zip(inputs, pairs):
            grads += [tf.matmul(h, d, transpose_a=True).numpy(), tf.reduce_sum(d, axis=0).numpy()]
        return grads

    def step(self, wrong_gradients: list[np.ndarray]) -> DescentStep:
        """One gradient-descent step of STEP_RATE with the right gradients and with the wrong ones."""
        after = [self.loss_after(grads) for grads in (self.right_gradients(), wrong_gradients)]
        return DescentStep(STEP_RATE, self.trace.loss_value, *after)

    def loss_after(self, grads: list[np.ndarray]) -> float:
        h = self.forward.inputs
        for index, activation in enumerate(self.model.activations_per_layer):
            layer = self.trace.layers[index]
            kernel = layer.kernel - STEP_RATE * grads[2 * index]
            z = tf.matmul(h, kernel) + (layer.bias - STEP_RATE * grads[2 * index + 1])
            h = activation.forward(z)
        return float(self.loss.value(z, h, self.y))

    def off_units(self, layer: int) -> list[str]:
        """The units of `layer` that are off (f'(z) = 0), as 'unit 2', or 'unit 2 of row 0' in a
        batch (units count from 1, as the article's h1, h2, h3; rows from 0, as --row and the
        batch tables)."""
        rows, units = np.nonzero(self.trace.layers[layer - 1].off())
        if self.trace.batch_size == 1:
            return [f"unit {u + 1}" for u in units]
        return [f"unit {u + 1} of row {r}" for r, u in zip(rows, units)]

    def off_everywhere(self, layer: int) -> list[int]:
        """The units of `layer` (from 1) that are off in every row: their gradients are exactly 0."""
        return [int(u) + 1 for u in np.nonzero(np.all(self.trace.layers[layer - 1].off(), axis=0))[0]]


def _output_sign(c: _Context) -> Erratum:
    y_hat = c.forward.hs[-1]
    wrong = (c.y - y_hat).numpy()  # the article's (y − ŷ), [m, 1]
    wrong_delta = c.model.output_activation.backward(c.forward.zs[-1], y_hat, tf.constant(wrong))
    wrong_grads = c.gradients_from_output(tf.constant(wrong), wrong_delta)
    notes = [_output_off_note(c, _OFF_OUTPUT_GRADIENTS)] if c.off_units(3) else []
    return Erratum(
        "output_sign",
        "Sign of the output term",
        Evaluated("∂L/∂ŷ", "y − ŷ", wrong),
        Evaluated("∂L/∂ŷ", trace_lib.LOSS_GRADIENTS[c.trace.loss], c.value(3, "dL_dh")),
        Evaluated("∂L/∂W₃", "h⁽²⁾ᵀ @ ((y − ŷ) ⊙ f₃'(z⁽³⁾))", wrong_grads[4]),
        Evaluated("∂L/∂W₃", "h⁽²⁾ᵀ @ δ⁽³⁾", c.value(3, "dL_dW")),
        f"every update: every gradient has the wrong sign (and lacks the {'1/m' if c.trace.loss == 'half_mse' else '2/m'}), "
        "so gradient descent climbs the loss",
        tuple(notes),
        c.step(wrong_grads),
    )


def _output_derivative(c: _Context) -> Erratum:
    right = c.trace.layers[2].slope  # f₃'(z⁽³⁾) [m, 1]
    upstream = tf.constant(c.value(3, "dL_dh"))
    wrong_grads = c.gradients_from_output(upstream, upstream)  # δ⁽³⁾ = ∂L/∂ŷ · 1
    name = c.model.output_activation.name
    return Erratum(
        "output_derivative",
        f"∂ŷ/∂z⁽³⁾ = 1 under a {'ReLU' if name == 'relu' else name} output",
        Evaluated("∂ŷ/∂z⁽³⁾", "1", np.ones_like(right)),
        Evaluated("∂ŷ/∂z⁽³⁾", _article_derivative(name), right),
        Evaluated("∂L/∂W₃", "h⁽²⁾ᵀ @ ∂L/∂ŷ", wrong_grads[4]),
        Evaluated("∂L/∂W₃", "h⁽²⁾ᵀ @ (∂L/∂ŷ ⊙ f₃'(z⁽³⁾))", c.value(3, "dL_dW")),
        _output_derivative_breaks(name),
        tuple(_output_derivative_notes(c, name, right)),
        c.step(wrong_grads),
    )


def _output_derivative_breaks(name: str) -> str:
    if name == "relu":
        return (
            "every update where the relu output is off (z⁽³⁾ ≤ 0): the article's gradient is not 0, "
            "the net's is (ŷ is stuck at 0 there)"
        )
    if name == "linear":
        return "none for a linear output, whose derivative is 1; the article's own code puts a ReLU on it"
    return "every update where f₃'(z⁽³⁾) ≠ 1"


def _output_derivative_notes(c: _Context, name: str, right: np.ndarray) -> list[str]:
    """Where 1 is right and where not, on these numbers (right: f₃'(z⁽³⁾), [m, 1])."""
    if name == "linear":
        return ["this net's output is linear, so 1 is right here; the article's own code puts a ReLU on it"]
    if c.off_units(3):
        return [_output_off_note(c, f"∂ŷ/∂z⁽³⁾ = {name}'(z⁽³⁾) = 0, not 1: the article passes a gradient")]
    if np.all(right == 1.0):
        return [f"z⁽³⁾ > 0: the {name} output is on, so its derivative is 1 here; not where z⁽³⁾ ≤ 0"]
    values = ", ".join(f"{v:.6g}" for v in right[:, 0])
    return [f"{name}'(z⁽³⁾) = {values} here, not 1: the article's factor is wrong wherever f₃' ≠ 1"]


def _weight_derivative(c: _Context) -> Erratum:
    kernel, delta = c.trace.layers[2].kernel, c.value(3, "delta")
    wrong_gradient = kernel * delta.sum(axis=0)  # ∂z⁽³⁾/∂W₃ taken as W₃: W₃ ⊙ Σ_rows δ⁽³⁾, [3, 1]
    wrong_grads = c.right_gradients()
    wrong_grads[4] = wrong_gradient
    notes = [
        f"h⁽²⁾ {unit} is 0 (the unit is off): it adds 0 to row {unit.split()[1]} of the right ∂L/∂W₃"
        for unit in c.off_units(2)
    ]
    return Erratum(
        "weight_derivative",
        "∂z⁽³⁾/∂θ⁽³⁾ is h⁽²⁾, not W₃",
        Evaluated("∂z⁽³⁾/∂θ⁽³⁾", "W₃", kernel),
        Evaluated("∂z⁽³⁾/∂θ⁽³⁾", "h⁽²⁾", c.value(2, "h")),
        Evaluated("∂L/∂W₃", "W₃ ⊙ Σ_rows δ⁽³⁾", wrong_gradient),
        Evaluated("∂L/∂W₃", "h⁽²⁾ᵀ @ δ⁽³⁾", c.value(3, "dL_dW")),
        "the update of W₃: its gradient follows the weights instead of the layer's input",
        tuple(notes),
        c.step(wrong_grads),
    )


def _chain_index(c: _Context, layer: int) -> Erratum:
    """The article's ∂z⁽ˡ⁾/∂h⁽ˡ⁾ = W_l where the chain needs ∂z⁽ˡ⁺¹⁾/∂h⁽ˡ⁾ = W_{l+1}."""
    up, sup, sub, sub_up = layer + 1, _SUP[layer], _SUB[layer], _SUB[layer + 1]
    wrong_kernel, right_kernel = c.trace.layers[layer - 1].kernel, c.trace.layers[layer].kernel
    wrong_gradient, notes = _wrong_chain_product(c, layer)
    notes += [f"δ{sup} {unit} is 0 (the unit is off) whatever ∂L/∂h{sup} is" for unit in c.off_units(layer)]
    below = "the updates of W₂, b₂, W₁ and b₁" if layer == 2 else "the updates of W₁ and b₁"
    return Erratum(
        f"chain_index_{layer}",
        f"∂z{sup}/∂h{sup} = W{sub} where the chain needs ∂z{_SUP[up]}/∂h{sup} = W{sub_up}",
        Evaluated(f"∂z{sup}/∂h{sup}", f"W{sub}", wrong_kernel),
        Evaluated(f"∂z{_SUP[up]}/∂h{sup}", f"W{sub_up}", right_kernel),
        Evaluated(f"∂L/∂h{sup}", f"δ{_SUP[up]} @ W{sub}ᵀ", wrong_gradient),
        Evaluated(f"∂L/∂h{sup}", f"δ{_SUP[up]} @ W{sub_up}ᵀ", c.value(layer, "dL_dh")),
        f"δ{sup}, hence {below}",
        tuple(notes),
    )


def _wrong_chain_product(c: _Context, layer: int) -> tuple[np.ndarray | None, list[str]]:
    """δ⁽ˡ⁺¹⁾ @ W_lᵀ, the article's ∂L/∂h⁽ˡ⁾, or None when the shapes do not multiply; and why."""
    delta, kernel = c.value(layer + 1, "delta"), c.trace.layers[layer - 1].kernel  # [m, n_{l+1}]
    units = c.trace.layers[layer - 1].units  # of h⁽ˡ⁾
    product = f"δ{_SUP[layer + 1]} {list(delta.shape)} @ W{_SUB[layer]}ᵀ {list(kernel.T.shape)}"
    if delta.shape[1] != kernel.shape[1]:
        return None, [f"{product}: the shapes do not multiply"]
    value = delta @ kernel.T  # [m, n_{l-1}]
    if value.shape[1] == units:
        return value, []
    return value, [
        f"{product} is {list(value.shape)} for the {units} units of h{_SUP[layer]}: not even the right shape"
    ]


def _numerical_methods(c: _Context) -> Erratum:
    hidden = [
        (layer, term) for layer, term in c.trace.checked if layer.index < 3 and term.key in ("dL_dW", "dL_db")
    ]
    worst = max(term.check.max_abs_difference for _, term in hidden)
    agreed = all(term.check.agreed for _, term in hidden)
    count = sum(term.value.size for _, term in hidden)
    notes = [
        f"chain rule vs tf.GradientTape over ∂L/∂W₁, ∂L/∂b₁, ∂L/∂W₂, ∂L/∂b₂: max |Δ| = {worst:.3g}, "
        + ("agreed" if agreed else "DISAGREED"),
        f"finite differences would cost {2 * count} forward passes for these {count} parameters, "
        "and are wrong across a kink; the chain rule costs one backward pass",
    ]
    notes += [
        f"layer {layer} unit {unit} is off, so its weights' and bias's gradients are exactly 0"
        for layer in (1, 2)
        for unit in c.off_everywhere(layer)
    ]
    return Erratum(
        "numerical_methods",
        "Hidden-layer gradients do not need numerical methods",
        Evaluated("∂L/∂W₁", "numerical methods", None),
        Evaluated("∂L/∂W₁", "xᵀ @ δ⁽¹⁾ (the chain rule)", c.value(1, "dL_dW")),
        None,
        Evaluated("∂L/∂W₁", "tf.GradientTape", c.trace.layers[0].term("dL_dW").check.tape),
        "none: backpropagation gives every hidden-layer gradient exactly (up to rounding)",
        tuple(notes),
    )


def _article_derivative(name: str) -> str:
    """f₃'(z⁽³⁾) in the article's notation, e.g. [z⁽³⁾ > 0]."""
    if name == "linear":
        return "1"
    return trace_lib.DERIVATIVES.get(name, name + "'(z_{l})").format(l="⁽³⁾").replace("_", "")


_OFF_OUTPUT_GRADIENTS = "δ⁽³⁾ = 0 and every gradient is 0 with either sign"


def _output_off_note(c: _Context, consequence: str) -> str:
    z = c.forward.zs[-1].numpy()[:, 0]  # [m]
    off = np.nonzero(z <= 0)[0]
    if c.trace.batch_size == 1:
        where = f"z⁽³⁾ = {z[0]:.4g} ≤ 0"
    else:
        where = "z⁽³⁾ ≤ 0 in " + ", ".join(f"row {i}" for i in off)  # rows from 0, as --row
    if len(off) < len(z) and consequence == _OFF_OUTPUT_GRADIENTS:
        rows = "that row adds" if len(off) == 1 else "those rows add"
        consequence = f"δ⁽³⁾ = 0 there and {rows} 0 to every gradient with either sign"
    return f"{where}: the output unit is off, so {consequence}"
