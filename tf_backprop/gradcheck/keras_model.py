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
    loss_fn: Callable,
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
      x, y: a batch of inputs and targets (finite).
      loss_fn: (y_true, y_pred) -> scalar loss, e.g. a `keras.losses.Loss`.
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
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn: expected a callable (y_true, y_pred) -> loss, got {type(loss_fn).__name__}"
        )
    x, y = check_finite("x", x), check_finite("y", y)
    if not model.trainable_variables:
        raise ValueError("model: has no trainable variables (build it first, e.g. by calling it on x)")
    if x.ndim and y.ndim and len(y) != len(x):
        raise ValueError(f"y: expected one target per row of x ({len(x)}), got {len(y)}")
    _check_target_shape(y, model(x))
    target, notes = _float64_keras(model, x)
    dtype = _compute_dtype(target)
    if dtype == "float64":
        loss_fn = _float64_loss(loss_fn)
    fn = _stateless_loss(target, x, y, loss_fn, training, dtype)
    values = [np.asarray(v.numpy()) for v in target.trainable_variables]
    names = [v.path for v in model.trainable_variables]
    title = f"gradcheck: Keras model {model.name!r}, batch {len(x)}: {describe(options)}"
    return check_function(
        fn, values, names, options, title=title, notes=notes, source="tape", what=LOSS_OF_MODEL
    )


LOSS_OF_MODEL = "loss_fn(y, model(x))"  # what check_model's errors name as the function


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


def _stateless_loss(
    model: keras.Model, x: np.ndarray, y: np.ndarray, loss_fn, training: bool, dtype: str
) -> Callable:
    """fn(*trainable values) -> the loss, with the model's variables replaced by the values and
    x, y in dtype."""
    x, y = (tf.constant(a, dtype) if a.dtype.kind == "f" else tf.constant(a) for a in (x, y))
    non_trainable = [v.value for v in model.non_trainable_variables]
    takes_training = "training" in inspect.signature(model.call).parameters
    kwargs = {"training": training} if takes_training else {}

    def fn(*trainable):
        outputs, _ = model.stateless_call(list(trainable), non_trainable, x, **kwargs)
        return loss_fn(y, outputs)

    return fn


def _float64_keras(model: keras.Model, x: np.ndarray) -> tuple[keras.Model, list[str]]:
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
    return clone, ["checked on a float64 clone of the model"]


def _clone_float64(model: keras.Model, x: np.ndarray) -> keras.Model:
    """A float64 copy of the model with its weights; ValueError if it does not match."""
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        clone = keras.models.clone_model(model, clone_function=_float64_layer)
    else:
        clone = model.__class__.from_config({**model.get_config(), "dtype": "float64"})
    x64 = tf.constant(x, tf.float64)
    clone(x64)  # builds it
    if [tuple(v.shape) for v in model.weights] != [tuple(v.shape) for v in clone.weights]:
        raise ValueError("the clone's variables differ from the model's")
    if any(v.dtype != "float64" for v in clone.trainable_variables):
        raise ValueError("some of the clone's variables are not float64")
    for target, source in zip(clone.weights, model.weights):
        target.assign(tf.cast(source, target.dtype))
    expected, got = np.asarray(model(x)), np.asarray(clone(x64))
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=1e-3, atol=1e-4):
        raise ValueError("the float64 clone computes different outputs")
    return clone


def _float64_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})


def _float64_loss(loss_fn):
    if isinstance(loss_fn, keras.losses.Loss) and loss_fn.dtype != "float64":
        try:
            return loss_fn.__class__.from_config({**loss_fn.get_config(), "dtype": "float64"})
        except Exception as error:  # noqa: BLE001 - keep the loss as given
            logging.info("gradcheck: keeping %s in its dtype: %s", loss_fn, error)
    return loss_fn
