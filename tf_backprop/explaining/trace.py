"""The trace of one forward and backward pass: every z, h, δ and gradient, its formula and its tape check.

For layer l of L, in docs/backprop.md's notation (batch-major, m rows, h_0 = x):

    z_l     = h_{l-1} @ W_l + b_l              [m, n_l]
    h_l     = f_l(z_l)                         [m, n_l]
    ∂L/∂h_l = δ_{l+1} @ W_{l+1}ᵀ               [m, n_l]   (for l = L: the loss's ∂L/∂ŷ)
    δ_l     = ∂L/∂h_l ⊙ f_l'(z_l)              [m, n_l]   (fused with the loss on logits)
    ∂L/∂W_l = h_{l-1}ᵀ @ δ_l  (+ λ W_l)        [n_{l-1}, n_l]
    ∂L/∂b_l = Σ_rows δ_l                       [n_l]

The numbers come from the same TF ops, in the same order, as `backprop.manual_gradients`, so
∂L/∂W_l and ∂L/∂b_l are its gradients bit for bit.  Every gradient term (∂L/∂h_l, δ_l, ∂L/∂W_l,
∂L/∂b_l) is computed again by `tf.GradientTape` and compared element by element: they agree when
|manual − tape| ≤ rtol · max(|manual|, |tape|) + atol · max(1, s), with s the largest |tape|
element of the whole trace and (rtol, atol) from `AGREEMENT` for the model's dtype.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tf_backprop import backprop
from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP

# (rtol, atol): tape and hand-written sums may differ in their order, hence in the last bits.
AGREEMENT = {"float64": (1e-9, 1e-12), "float32": (1e-4, 1e-6)}

# f'(z) as the hand-written backward computes it, {l} the layer's index.
DERIVATIVES = {
    "relu": "[z_{l} > 0]",
    "leaky_relu": "(1 if z_{l} > 0 else α)",
    "elu": "(1 if z_{l} > 0 else h_{l} + 1)",
    "gelu": "(Φ(z_{l}) + z_{l} φ(z_{l}))",
    "sigmoid": "h_{l} ⊙ (1 − h_{l})",
    "tanh": "(1 − h_{l}²)",
    "softplus": "σ(z_{l})",
}
# ∂L/∂ŷ of the losses chained through the output activation; δ_L of the losses on logits.
LOSS_GRADIENTS = {"mse": "2 (ŷ − y) / (m·k)", "half_mse": "(ŷ − y) / m"}
FUSED_DELTAS = {
    "binary_crossentropy": "(σ(z_{l}) − y) / (m·k)",
    "categorical_crossentropy": "(softmax(z_{l}) − onehot(y)) / m",
}
TERM_KEYS = ("z", "h", "dL_dh", "delta", "dL_dW", "dL_db")
GRADIENT_KEYS = ("dL_dh", "delta", "dL_dW", "dL_db")


@dataclasses.dataclass(frozen=True)
class TapeCheck:
    """A term's value by `tf.GradientTape` and how far the hand-written one is from it."""

    tape: np.ndarray
    max_abs_difference: float
    agreed: bool


@dataclasses.dataclass(frozen=True)
class Term:
    """One number (array) of the pass: its symbol, the formula that produced it, its value.

    per_row: for ∂L/∂W_l and ∂L/∂b_l, each row's contribution ([m, n_{l-1}, n_l] and [m, n_l]),
    which sum over the rows to the value (up to rounding; the λ W_l term aside).
    check: the tape's value, for the gradient terms; None for z and h.
    """

    key: str  # one of TERM_KEYS
    symbol: str  # e.g. "δ_2"
    formula: str  # the right-hand side, e.g. "∂L/∂h_2 ⊙ [z_2 > 0]"
    value: np.ndarray
    per_row: np.ndarray | None = None
    check: TapeCheck | None = None


@dataclasses.dataclass(frozen=True)
class LayerTrace:
    """Layer l's weights and terms, in TERM_KEYS order (∂L/∂h_L is absent for losses on logits)."""

    index: int  # l, counted from 1
    activation: str
    kernel: np.ndarray  # W_l [n_{l-1}, n_l]
    bias: np.ndarray  # b_l [n_l]
    terms: tuple[Term, ...]
    slope: np.ndarray | None  # f_l'(z_l) [m, n_l] (None for softmax); 0 where a unit is off

    def off(self) -> np.ndarray:
        """[m, n_l] True where the unit is off: f'(z) = 0, so δ is 0 whatever ∂L/∂h is."""
        if self.slope is None:
            return np.zeros(self.term("z").value.shape, dtype=bool)
        return self.slope == 0

    @property
    def units(self) -> int:
        return int(self.kernel.shape[1])

    def term(self, key: str) -> Term | None:
        """The term called `key` (one of TERM_KEYS), or None when this layer has none."""
        return next((term for term in self.terms if term.key == key), None)


@dataclasses.dataclass(frozen=True)
class Trace:
    """One forward and backward pass through an MLP on a batch of m rows.

    errata: the article's errata evaluated on these numbers (`errata.Erratum`s), empty when they
    do not apply to this net or were not asked for.
    """

    layer_sizes: tuple[int, ...]
    activations: tuple[str, ...]  # f_1 .. f_L
    loss: str
    l2: float
    dtype: str
    x: np.ndarray  # h_0 [m, n_0]
    y: np.ndarray  # as the loss takes it: [m, k], or class labels [m]
    loss_value: float
    layers: tuple[LayerTrace, ...]
    tolerance: tuple[float, float]  # (rtol, atol) of the tape check
    errata: tuple = ()

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @property
    def output(self) -> np.ndarray:
        """ŷ = h_L, [m, n_L]."""
        return self.layers[-1].term("h").value

    @property
    def checked(self) -> list[tuple[LayerTrace, Term]]:
        """Every term with a tape check."""
        return [(layer, term) for layer in self.layers for term in layer.terms if term.check]

    @property
    def agreed(self) -> bool:
        """True when every gradient term agrees with the tape."""
        return all(term.check.agreed for _, term in self.checked)


def as_batch(model: MLP, x, y, loss: losses_lib.Loss) -> tuple[np.ndarray, np.ndarray]:
    """One sample given as x [n_0] (and y a number, [k] or a label) becomes a batch of one row."""
    if y is None:
        raise ValueError("y: expected the target(s) the loss compares the output with, got None")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 1:
        return x, y
    if y.ndim == 0:
        return x[None], y[None]
    outputs = model.layer_sizes[-1]
    if y.ndim == 1 and outputs > 1 and y.shape[0] == outputs:
        return x[None], y[None]  # one row of k targets (or a one-hot row)
    if y.ndim != 1 or y.shape[0] != 1 or (outputs > 1 and not loss.sparse_labels):
        label = " or a class label" if loss.sparse_labels else ""
        raise ValueError(
            f"y: one sample takes {outputs} target(s) (one per output){label}, got shape {list(y.shape)}"
        )
    return x[None], y


def build(model: MLP, x, y, loss: str | losses_lib.Loss, l2: float = 0.0) -> Trace:
    """The trace of one forward and backward pass of `model` on (x, y); see the module docstring.

    x: [m, n_0], or [n_0] for one sample.  ValueError for inputs the model or loss cannot take.
    """
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a tf_backprop MLP, got {type(model).__name__}")
    if isinstance(l2, bool) or not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2: expected a finite number ≥ 0, got {l2!r}")
    x, y, loss = backprop.prepare(model, *as_batch(model, x, y, losses_lib.get(loss)), loss)
    forward = model.forward(x, keep_intermediates=True)
    value = backprop.total_loss(model, forward, y, loss, l2)
    manual = _manual_terms(model, forward, y, loss, float(l2))
    _check_finite(model, forward, float(value), manual)
    tape = _tape_terms(model, x, y, loss, float(l2))
    tolerance = AGREEMENT[model.compute_dtype]
    scale = max(float(np.max(np.abs(v), initial=0.0)) for v in tape.values())
    layers = tuple(
        _layer_trace(model, index, forward, loss, manual, tape, tolerance, scale, float(l2))
        for index in range(len(model.dense_layers))
    )
    return Trace(
        model.layer_sizes,
        tuple(a.name for a in model.activations_per_layer),
        loss.name,
        float(l2),
        model.compute_dtype,
        np.asarray(x),
        np.asarray(y),
        float(value),
        layers,
        tolerance,
    )


def backward_deltas(model: MLP, forward, upstream: tf.Tensor | None, delta: tf.Tensor) -> list:
    """[(∂L/∂h_l, δ_l)] for l = 1..L from the output's pair, by the hand-written recursion.

    The ops are `backprop.backward`'s: ∂L/∂h_{l-1} = δ_l @ W_lᵀ, δ_{l-1} = f_{l-1}.backward(...).
    """
    pairs = [(upstream, delta)]
    for index in reversed(range(1, len(model.dense_layers))):
        upstream = tf.matmul(delta, model.kernels[index], transpose_b=True)  # [m, n_{l-1}]
        activation = model.activations_per_layer[index - 1]
        delta = activation.backward(forward.zs[index - 1], forward.hs[index - 1], upstream)
        pairs.insert(0, (upstream, delta))
    return pairs


def output_upstream(forward, y: tf.Tensor, loss: losses_lib.Loss) -> tf.Tensor | None:
    """∂L/∂ŷ [m, k] for a loss chained through the output activation; None for one on logits."""
    return None if loss.grad_h is None else loss.grad_h(forward.zs[-1], forward.hs[-1], y)


def _manual_terms(model: MLP, forward, y, loss: losses_lib.Loss, l2: float) -> dict:
    """{(key, layer index): array} of the gradient terms, by the hand-written chain rule."""
    delta = loss.delta(forward.zs[-1], forward.hs[-1], y, model.output_activation)  # [m, n_L]
    pairs = backward_deltas(model, forward, output_upstream(forward, y, loss), delta)
    inputs = [forward.inputs] + forward.hs[:-1]  # h_0 .. h_{L-1}
    terms = {}
    for index, (upstream, delta) in enumerate(pairs):
        grad_kernel = tf.matmul(inputs[index], delta, transpose_a=True)  # [n_{l-1}, n_l]
        if l2:
            grad_kernel += l2 * model.kernels[index]
        if upstream is not None:
            terms["dL_dh", index] = upstream.numpy()
        terms["delta", index] = delta.numpy()
        terms["dL_dW", index] = grad_kernel.numpy()
        terms["dL_db", index] = tf.reduce_sum(delta, axis=0).numpy()
        terms["dL_dW_rows", index] = tf.einsum("ik,ij->ikj", inputs[index], delta).numpy()
    return terms


def _tape_terms(model: MLP, x, y, loss: losses_lib.Loss, l2: float) -> dict:
    """The same gradient terms by tf.GradientTape: w.r.t. the variables and every z and h."""
    with tf.GradientTape() as tape:
        forward = model.forward(x, keep_intermediates=True)
        value = backprop.total_loss(model, forward, y, loss, l2)
    count = len(model.dense_layers)
    grads = tape.gradient(value, [*model.trainable_variables, *forward.zs, *forward.hs])
    terms = {}
    for index in range(count):
        terms["dL_dW", index], terms["dL_db", index] = grads[2 * index].numpy(), grads[2 * index + 1].numpy()
        terms["delta", index] = grads[2 * count + index].numpy()
        if grads[3 * count + index] is not None:
            terms["dL_dh", index] = grads[3 * count + index].numpy()
    return terms


def _layer_trace(model: MLP, index: int, forward, loss, manual, tape, tolerance, scale, l2) -> LayerTrace:
    """Layer index + 1's terms, each with its formula, and the gradients' tape checks."""
    formulas = _formulas(model, index, loss, l2)
    values = {"z": forward.zs[index].numpy(), "h": forward.hs[index].numpy()}
    terms = []
    for key in TERM_KEYS:
        value = values[key] if key in values else manual.get((key, index))
        if value is None:
            continue
        check = _check(value, tape[key, index], tolerance, scale) if key in GRADIENT_KEYS else None
        per_row = {"dL_dW": manual.get(("dL_dW_rows", index)), "dL_db": manual.get(("delta", index))}
        symbol = _symbol(key, index + 1)
        terms.append(Term(key, symbol, formulas[key], value, per_row.get(key), check))
    layer, activation = model.dense_layers[index], model.activations_per_layer[index]
    z, h = forward.zs[index], forward.hs[index]
    slope = activation.backward(z, h, tf.ones_like(z)).numpy() if activation.elementwise else None
    return LayerTrace(
        index + 1, activation.name, layer.kernel.numpy(), layer.bias.numpy(), tuple(terms), slope
    )


def _check_finite(model: MLP, forward, loss_value: float, manual: dict) -> None:
    """ValueError naming the pass's first quantity that overflows: no derivative to show then
    (inf − inf is NaN, and the tape check could only disagree)."""
    values = [(_symbol("z", i + 1), z) for i, z in enumerate(forward.zs)]
    values += [(_symbol("h", i + 1), h) for i, h in enumerate(forward.hs)]
    values.append(("the loss L", loss_value))
    values += [(_symbol(key, index + 1), value) for (key, index), value in manual.items() if key in _SYMBOLS]
    for name, value in values:
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"x, y: {name} is not finite in {model.compute_dtype} (the pass overflows); give "
                "features and targets of smaller magnitude"
            )


_SYMBOLS = ("dL_dh", "delta", "dL_dW", "dL_db")


def _check(value: np.ndarray, tape: np.ndarray, tolerance, scale: float) -> TapeCheck:
    rtol, atol = tolerance
    with np.errstate(invalid="ignore"):  # inf − inf: NaN, which fails the check
        difference = np.abs(value - tape)
    allowed = rtol * np.maximum(np.abs(value), np.abs(tape)) + atol * max(1.0, scale)
    agreed = bool(np.all(difference <= allowed))  # False for NaN
    return TapeCheck(tape, float(np.max(difference, initial=0.0)), agreed)


def _symbol(key: str, layer: int) -> str:
    names = {"z": "z_{l}", "h": "h_{l}", "dL_dh": "∂L/∂h_{l}", "delta": "δ_{l}"}
    names.update(dL_dW="∂L/∂W_{l}", dL_db="∂L/∂b_{l}")
    return names[key].format(l=layer)


def _formulas(model: MLP, index: int, loss: losses_lib.Loss, l2: float) -> dict[str, str]:
    """The right-hand side of each term of layer index + 1."""
    layer, last = index + 1, index + 1 == len(model.dense_layers)
    below = "x" if layer == 1 else f"h_{layer - 1}"
    activation = model.activations_per_layer[index].name
    upstream = LOSS_GRADIENTS.get(loss.name, "∂L/∂ŷ") if last else f"δ_{layer + 1} @ W_{layer + 1}ᵀ"
    if last and loss.fused_delta is not None:
        delta = FUSED_DELTAS.get(loss.name, "∂L/∂z_{l}").format(l=layer)
    else:
        delta = _delta_formula(layer, activation)
    return {
        "z": f"{below} @ W_{layer} + b_{layer}",
        "h": f"z_{layer}" if activation == "linear" else f"{activation}(z_{layer})",
        "dL_dh": upstream,
        "delta": delta,
        "dL_dW": f"{below}ᵀ @ δ_{layer}" + (f" + λ W_{layer}" if l2 else ""),
        "dL_db": f"Σ_rows δ_{layer}",
    }


def _delta_formula(layer: int, activation: str) -> str:
    """δ_l = ∂L/∂h_l ⊙ f_l'(z_l), or softmax's full Jacobian-vector product."""
    upstream = f"∂L/∂h_{layer}"
    if activation == "linear":
        return upstream
    if activation == "softmax":
        return f"h_{layer} ⊙ ({upstream} − Σ_units({upstream} ⊙ h_{layer}))"
    derivative = DERIVATIVES.get(activation, f"{activation}'(z_{{l}})").format(l=layer)
    return f"{upstream} ⊙ {derivative}"
