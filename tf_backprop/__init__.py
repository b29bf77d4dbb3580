"""tf_backprop: backpropagation made visible, verified and fast (TensorFlow 2 / Keras 3).

Submodules import TensorFlow; this package's top level does not until `MLP` is used, so
entry points can quiet TensorFlow's C++ logging first.
"""

__version__ = "0.1.0"

__all__ = ["MLP", "__version__"]


def __getattr__(name):
    if name == "MLP":
        from tf_backprop.model import MLP

        return MLP
    raise AttributeError(f"module 'tf_backprop' has no attribute {name!r}")
