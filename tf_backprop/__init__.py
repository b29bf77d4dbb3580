"""tf_backprop: backpropagation made visible, verified and fast (TensorFlow 2 / Keras 3).

The top level names the public API and imports TensorFlow only when one of them is used, so
entry points can quiet TensorFlow's C++ logging first:

* `MLP`, `MLPSpec` (tf_backprop.model); `backprop` (tape and hand-written gradients);
* `gradcheck` (gradient checking), `testing` (a tf.test assertion);
* `explain(model, x, y, loss)`: one pass's every number and formula (tf_backprop.explaining);
* `train(config)`, `TrainConfig` (tf_backprop.training); `serving` (export, predict).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MLP": ("tf_backprop.model", "MLP"),
    "MLPSpec": ("tf_backprop.model", "MLPSpec"),
    "TrainConfig": ("tf_backprop.training", "TrainConfig"),
    "explain": ("tf_backprop.explaining", "explain"),
    "train": ("tf_backprop.training", "train"),
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'tf_backprop' has no attribute {name!r}")
