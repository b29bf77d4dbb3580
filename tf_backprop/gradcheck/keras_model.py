"""Checking any Keras model: tape vs central differences of the loss, per trainable variable.

The loss is a function of the trainable values (through `stateless_call`), checked like any
function by `function.check_function`; float32 models are cloned in float64 first when Keras
can rebuild them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop.gradcheck.function import check_function, describe
from tf_backprop.gradcheck.options import Options, check_finite
from tf_backprop.gradcheck.problem import error_line
from tf_backprop.gradcheck.report import Report


def check_model(
    model: keras.Model,
    x,
    y,
    loss_fn: Callable | str,
    *,
    mode: str = "full",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    directions: int = 4,
    samples: int = 4,
    training: bool = False,
    order: int = 1,
    check_forward: bool = False,
) -> Report:
    """Checks a Keras model's tape gradients of loss_fn(y, model(x)) per trainable variable.

    A float32 model is cloned in float64 when Keras can (Sequential and functional models
    from their layers' configs, subclassed ones with `from_config`); otherwise it is checked in
    float32 with widened tolerances, and the report says so.  A `keras.losses.Loss` computes
    in `keras.config.floatx()` unless built with dtype="float64"; it is rebuilt in float64
    when it can be.

    Args:
      model: a built Keras model with trainable variables (custom layers included).
      x, y: a batch of inputs and targets (finite): arrays, or lists or dicts of arrays for a
        model of several inputs or outputs.
      loss_fn: (y_true, y_pred) -> scalar loss, e.g. a `keras.losses.Loss`, or a Keras loss
        name as `model.compile` takes it ("mse", "categorical_crossentropy").
      mode, eps, atol, rtol, seed, directions, samples: as in `gradcheck`, per variable.
      training: passed to the model's call when it takes a `training` argument.
      order, check_forward: as in `gradcheck`: order=2 checks the loss's Hessian-vector
        products (tape over tape) against differences of its gradient; check_forward adds
        forward mode.

    Returns:
      A `Report` with one entry per trainable variable: tape ↔ numeric (and with forward
      mode, forward ↔ numeric and forward ↔ tape).

    Raises:
      ValueError: on a bad argument, named in the message.
    """
    options = Options(mode, eps, atol, rtol, seed, directions, samples, order, check_forward).validated()
    if not isinstance(model, keras.Model):
        raise ValueError(f"model: expected a keras.Model, got {type(model).__name__}")
    loss_fn = _loss(loss_fn)
    x, y = _batch("x", x), _batch("y", y)
    if not model.trainable_variables:
        hint = "all frozen, or none to train" if model.built else "build it first, e.g. by calling it on x"
        raise ValueError(f"model: has no trainable variables ({hint})")
    rows = _rows("x", x)
    if rows == 0:
        raise ValueError("x: expected a non-empty batch, got 0 rows")
    if rows is not None and _rows("y", y) not in (None, rows):
        raise ValueError(f"y: expected one target per row of x ({rows}), got {_rows('y', y)}")
    try:
        outputs = model(x)
    except Exception as caught:  # noqa: BLE001 - x does not fit the model: one line
        raise ValueError(f"model(x): raised {type(caught).__name__}: {error_line(caught)}") from caught
    if isinstance(y, np.ndarray):
        _check_target_shape(y, outputs)
    target, notes = _float64_keras(model, x)
    dtype = _compute_dtype(target)
    if dtype == "float64":
        loss_fn = _float64_loss(loss_fn)
    fn = _stateless_loss(target, x, y, loss_fn, training, dtype)
    values = [np.asarray(v.numpy()) for v in target.trainable_variables]
    names = [v.path for v in model.trainable_variables]
    fn, values, names, notes = _without_unused(fn, values, names, notes)
    title = f"gradcheck: Keras model {model.name!r}, batch {rows}: {describe(options)}"
    return check_function(
        fn, values, names, options, title=title, notes=notes, source="tape", what=LOSS_OF_MODEL
    )


def _loss(loss_fn) -> Callable:
    """loss_fn as a callable: a Keras loss name ("mse", "MeanSquaredError") as `compile` takes it."""
    if isinstance(loss_fn, str):
        try:
            named = keras.losses.get(loss_fn)
        except ValueError:
            raise ValueError(f"loss_fn: unknown Keras loss name {loss_fn!r}") from None
        if isinstance(named, keras.losses.Loss):
            return named

        def batch_mean(y_true, y_pred):  # "mse" is per sample: compile's reduction, the batch mean
            return keras.ops.mean(named(y_true, y_pred))

        return batch_mean
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn: expected a callable (y_true, y_pred) -> loss or a Keras loss name, got "
            f"{type(loss_fn).__name__}"
        )
    return loss_fn


def _without_unused(fn: Callable, values: list, names: list, notes: list) -> tuple:
    """(fn, values, names, notes) without the trainable variables the loss does not depend on
    (an auxiliary head, a layer this loss skips), which have nothing to check: they keep their
    values inside fn, and a note names them.  With none used, everything is left to
    `check_function`, which says so.  A variable without a tape gradient whose every element,
    moved, moves the loss is not unused but cut off (a tf.stop_gradient on its path): ValueError,
    as before this note existed, not a PASS that never looked at it."""
    tensors = [tf.constant(v) for v in values]
    try:
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            total = fn(*tensors)
    except Exception as caught:  # noqa: BLE001 - the user's model or loss failed: one line
        raise ValueError(f"{LOSS_OF_MODEL}: raised {type(caught).__name__}: {error_line(caught)}") from caught
    used = [g is not None for g in tape.gradient(total, tensors)]
    if all(used) or not any(used):
        return fn, values, names, notes
    for i in (i for i, u in enumerate(used) if not u):
        moved = [t * 1.5 + 1.0 if j == i else t for j, t in enumerate(tensors)]
        if not np.array_equal(fn(*moved), total):
            raise ValueError(
                f"{names[i]}: {LOSS_OF_MODEL} changes with it, but its tape gradient is None (a "
                f"tf.stop_gradient or a non-differentiable op on its path?)"
            )

    def fn_of_used(*given):
        given = iter(given)
        return fn(*(next(given) if u else t for u, t in zip(used, tensors)))

    unused = ", ".join(n for n, u in zip(names, used) if not u)
    note = f"not checked: {unused} ({LOSS_OF_MODEL} does not depend on them)"
    keep = [i for i, u in enumerate(used) if u]
    return fn_of_used, [values[i] for i in keep], [names[i] for i in keep], [*notes, note]


LOSS_OF_MODEL = "loss_fn(y, model(x))"  # what check_model's errors name as the function


def _batch(name: str, value):
    """x or y as NumPy: one array, or a list or dict of them (a model of several inputs or
    outputs); ValueError naming the element that is not finite numbers."""
    if isinstance(value, (list, tuple)) and any(_structured(v) for v in value):
        return [_batch(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {key: _batch(f"{name}[{key!r}]", v) for key, v in value.items()}
    return check_finite(name, value)


def _structured(value) -> bool:
    """An array, tensor, dict or list of them: an element of several inputs or outputs.  (A
    nested list of plain numbers is one array, the batch's rows.)"""
    if isinstance(value, (list, tuple)):
        return any(_structured(v) for v in value)
    return isinstance(value, (np.ndarray, dict)) or tf.is_tensor(value)


def _rows(name: str, batch) -> int | None:
    """The batch's rows (None for a scalar); ValueError when its arrays disagree."""
    counts = {len(a) for a in tf.nest.flatten(batch) if a.ndim}
    if len(counts) > 1:
        raise ValueError(f"{name}: its arrays have different numbers of rows ({sorted(counts)})")
    return counts.pop() if counts else None


def _cast(batch, dtype):
    """Each floating-point array of the batch as a dtype tensor, the others as they are."""
    return tf.nest.map_structure(
        lambda a: tf.constant(a, dtype) if a.dtype.kind == "f" else tf.constant(a), batch
    )


def _check_target_shape(y: np.ndarray, outputs) -> None:
    """ValueError when y would broadcast the model's output up: Keras's losses do so silently
    (a (4, 3) target against a (4, 1) output gives a loss over 12 pairs) and check another loss.

    Ranks are first matched as Keras's losses match them (a trailing axis of 1 dropped or added);
    shapes that cannot broadcast (sparse class labels) are left to the loss.
    """
    if not hasattr(outputs, "shape"):
        return  # several outputs: the loss pairs them with the targets
    output, target = tuple(outputs.shape), tuple(y.shape)
    if len(target) == len(output) - 1 and output[-1] == 1:
        target = (*target, 1)
    elif len(target) == len(output) + 1 and target[-1] == 1:
        target = target[:-1]
    try:
        paired = np.broadcast_shapes(target, output)
    except ValueError:
        return
    if np.prod(paired) > np.prod(output):
        raise ValueError(
            f"y: shape {list(y.shape)} does not fit the model's output shape {list(output)}; the "
            f"loss would broadcast them to {list(paired)}"
        )


def _compute_dtype(model: keras.Model) -> str:
    """float64 when every trainable variable is, else the model's compute dtype.  A Sequential
    or functional model of float64 layers keeps floatx (float32) as its own compute dtype: x
    and y cast to it checked the loss in float32, or mixed dtypes raised."""
    if all(v.dtype == "float64" for v in model.trainable_variables):
        return "float64"
    return model.compute_dtype


def _stateless_loss(model: keras.Model, x, y, loss_fn, training: bool, dtype: str) -> Callable:
    """fn(*trainable values) -> the loss, with the model's variables replaced by the values and
    x, y in dtype."""
    x, y = _cast(x, dtype), _cast(y, dtype)
    non_trainable = [v.value for v in model.non_trainable_variables]
    takes_training = "training" in inspect.signature(model.call).parameters
    kwargs = {"training": training} if takes_training else {}

    def fn(*trainable):
        outputs, _ = model.stateless_call(list(trainable), non_trainable, x, **kwargs)
        return loss_fn(y, outputs)

    return fn


def _float64_keras(model: keras.Model, x) -> tuple[keras.Model, list[str]]:
    """The model if its variables are float64, else a float64 clone if Keras can build one."""
    if all(v.dtype == "float64" for v in model.trainable_variables):
        return model, []
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")  # sublayers a custom layer creates follow it
    try:
        clone = _clone_float64(model, x)
    except Exception as error:  # noqa: BLE001 - any cloning failure means "check in float32"
        logging.info("gradcheck: no float64 clone of %s: %s", model.name, error)
        return model, [f"could not clone the model in float64 ({type(error).__name__}: {error_line(error)})"]
    finally:
        keras.config.set_dtype_policy(previous)
    half = _half_precision(model)
    if half:
        return clone, [
            f"checked on a float64 clone of the model, which computes in {half}: its rounding is not checked"
        ]
    return clone, ["checked on a float64 clone of the model"]


def _half_precision(model: keras.Model) -> str | None:
    """float16 or bfloat16 when some layer computes in it (a mixed-precision policy)."""
    dtypes = {getattr(layer, "compute_dtype", None) for layer in [model, *_layers(model)]}
    return next((d for d in ("float16", "bfloat16") if d in dtypes), None)


def _clone_rtol(model: keras.Model, float32_rtol: float) -> float:
    """How closely a clone must match: float32's rtol, or 16 half-precision ulps for a model
    that computes in float16 or bfloat16 (its own outputs carry that rounding)."""
    half = _half_precision(model)
    return max(float32_rtol, 16 * _HALF_EPS[half]) if half else float32_rtol


_HALF_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}  # the spacing of values in [1, 2)


def _is_functional(model: keras.Model) -> bool:
    """A model built as keras.Model(inputs, outputs): a graph of layers clone_model rebuilds."""
    return type(model).__name__ == "Functional" and hasattr(model, "inputs") and model.inputs is not None


def _clone_float64(model: keras.Model, x) -> keras.Model:
    """A float64 copy of the model with its weights; ValueError if it does not match."""
    # Keras 3 has no _is_graph_network: functional models were rebuilt from their config, in
    # their layers' own float32, so every float32 functional model was checked in float32.
    if isinstance(model, keras.Sequential) or _is_functional(model):
        clone = keras.models.clone_model(model, clone_function=_float64_layer)
    else:
        clone = model.__class__.from_config({**model.get_config(), "dtype": "float64"})
    x64 = _cast(x, tf.float64)
    clone(x64)  # builds it
    if [tuple(v.shape) for v in model.weights] != [tuple(v.shape) for v in clone.weights]:
        raise ValueError("the clone's variables differ from the model's")
    trainable = [tuple(v.shape) for v in model.trainable_variables]
    if trainable != [tuple(v.shape) for v in clone.trainable_variables]:
        raise ValueError("the clone trains other variables (a layer frozen after it was built?)")
    if any(v.dtype != "float64" for v in clone.trainable_variables):
        raise ValueError("some of the clone's variables are not float64")
    for target, source in zip(clone.weights, model.weights):
        target.assign(tf.cast(source, target.dtype))
    for layer in _layers(clone):  # Normalization caches its mean and variance apart from them
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    for expected, got in zip(tf.nest.flatten(model(x)), tf.nest.flatten(clone(x64)), strict=True):
        expected, got = np.asarray(expected), np.asarray(got)
        rtol = _clone_rtol(model, 1e-3)
        if expected.shape != got.shape or not np.allclose(expected, got, rtol=rtol, atol=rtol / 10):
            raise ValueError("the float64 clone computes different outputs")
    # The same outputs do not make the same gradients: a custom backward chosen by an argument
    # get_config leaves out is rebuilt without it, and its bug would go unchecked.
    expected_grads = _output_gradients(model, x)
    # One scale for all: a gradient summed from cancelling terms (a kernel after Normalization)
    # is float32 round-off of the terms, far above its own size.
    scale = max(float(np.abs(g).max(initial=0.0)) for g in expected_grads)
    rtol = _clone_rtol(model, 1e-4)
    for expected, got in zip(expected_grads, _output_gradients(clone, x64), strict=True):
        if not np.allclose(expected, got, rtol=rtol, atol=rtol * max(scale, 1e-6)):
            raise ValueError("the float64 clone computes different gradients")
    return clone


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers, nested models' included."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += _layers(layer)
    return found


def _output_gradients(model: keras.Model, x) -> list[np.ndarray]:
    """The gradient of the sum of the model's outputs on x w.r.t. each trainable variable."""
    with tf.GradientTape() as tape:
        total = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(model(x))])
    grads = tape.gradient(total, model.trainable_variables, unconnected_gradients="zero")
    return [np.asarray(g, np.float64) for g in grads]


def _float64_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})


def _float64_loss(loss_fn):
    if isinstance(loss_fn, keras.losses.Loss) and loss_fn.dtype != "float64":
        try:
            return loss_fn.__class__.from_config({**loss_fn.get_config(), "dtype": "float64"})
        except Exception as error:  # noqa: BLE001 - keep the loss as given
            logging.info("gradcheck: keeping %s in its dtype: %s", loss_fn, error)
    return loss_fn
