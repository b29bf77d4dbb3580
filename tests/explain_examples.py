"""Nets and samples shared by the explaining tests, and the CLI's default explanation."""

import numpy as np

from tf_backprop import explaining
from tf_backprop.model import MLPSpec

# tf-backprop-explain's defaults (cli/explain.py): the article's net, seed 3.
DEFAULT_SEED = 3
DEFAULT_TITLE = f"random_normal weights, seed {DEFAULT_SEED}"


def article_net(seed: int = DEFAULT_SEED, output_activation: str = "relu"):
    """The article's 2-3-3-1: ReLU on every layer (output too), N(0, 1) kernels, float64."""
    return MLPSpec((2, 3, 3, 1), "relu", output_activation, "random_normal", "float64", seed).build()


def default_trace() -> explaining.Trace:
    """What tf-backprop-explain explains with no flags."""
    model = article_net()
    x, y = explaining.default_sample(model, "half_mse", DEFAULT_SEED)
    return explaining.explain(model, x, y, "half_mse")


def random_case(sizes, activation, output_activation, loss, rows, seed=1):
    """A float64 Glorot net and a random batch whose targets fit the loss."""
    model = MLPSpec(sizes, activation, output_activation, "glorot_uniform", "float64", seed).build()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, sizes[0]))
    if loss == "categorical_crossentropy":
        y = rng.integers(0, sizes[-1], rows)
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, (rows, sizes[-1])).astype(np.float64)
    else:
        y = rng.normal(size=(rows, sizes[-1]))
    return model, x, y
