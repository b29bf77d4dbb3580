"""Small, fast training configs and run comparisons shared by the library's training tests."""

import numpy as np

from tf_backprop.training import config


def small_config(workdir: str, **overrides) -> config.TrainConfig:
    """A small, fast run on the default regression task."""
    values = {"epochs": 3, "n_samples": 400, "workdir": workdir}
    values.update(overrides)
    return config.TrainConfig(**values)


def assert_same_training(test, first, second, validation_rtol: float = 1e-15) -> None:
    """Two runs' weights and training history bit for bit, and their validation figures (val_*)
    to validation_rtol: a run that compiles its whole call with XLA sums them in XLA's order."""
    test.assertEqual(len(first.history), len(second.history))
    for a, b in zip(first.history, second.history):
        test.assertEqual(sorted(a), sorted(b))
        validation = sorted(k for k in a if k.startswith("val_"))
        test.assertEqual(
            {k: a[k] for k in a if k not in validation}, {k: b[k] for k in b if k not in validation}
        )
        test.assertAllClose(
            [a[k] for k in validation], [b[k] for k in validation], rtol=validation_rtol, atol=0
        )
    first_weights, second_weights = first.model.get_weights(), second.model.get_weights()
    test.assertEqual(len(first_weights), len(second_weights))
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)
