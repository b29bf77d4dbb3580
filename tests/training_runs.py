"""Small, fast training configs and run comparisons shared by the library's training tests."""

import glob
import os

import numpy as np
import tensorflow as tf

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


def events(workdir: str, split: str) -> dict[str, list[tuple[int, np.ndarray]]]:
    """tag -> [(step, value)] from the TensorBoard event files of <workdir>/tb/<split>."""
    found: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tb", split, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return found


def assert_same_events(test, first: dict, second: dict, rtol: float = 0.0) -> None:
    """Two `events` results: the same tags at the same steps, values bit for bit (rtol 0) or to rtol."""
    test.assertCountEqual(first, second)
    for tag, values in first.items():
        test.assertEqual([s for s, _ in values], [s for s, _ in second[tag]], tag)
        for (_, a), (_, b) in zip(values, second[tag]):
            test.assertAllClose(a, b, rtol=rtol, atol=0, msg=tag) if rtol else test.assertAllEqual(a, b, tag)
