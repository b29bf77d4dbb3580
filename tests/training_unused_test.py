"""training.unused: each setting the run would ignore is named with the reason, and only then."""

import tensorflow as tf
from absl.testing import parameterized

from tf_backprop.training import config, optimizers, unused

_CASES = (  # (field, config where it has no effect, config where it has one)
    ("momentum", {"optimizer": "adam"}, {"optimizer": "rmsprop"}),
    ("lr_decay_steps", {}, {"lr_schedule": "step"}),
    ("lr_decay_rate", {"lr_schedule": "cosine"}, {"lr_schedule": "exponential"}),
    ("lr_alpha", {"lr_schedule": "step"}, {"lr_schedule": "cosine"}),
    ("verify_tolerance", {}, {"verify_every": 10}),
    ("restore_best", {}, {"patience": 2}),
    ("n_samples", {"data": "csv:x.csv", "target": "y"}, {"data": "xor"}),
    ("noise", {"data": "csv:x.csv", "target": "y"}, {}),
    ("checkpoint_seconds", {"checkpoint_every": 100}, {}),
    ("worker_timeout", {}, {"strategy": "multi_worker", "workdir": "/tmp/run"}),
    ("histogram_every", {"monitor": False}, {}),
    ("exploding_threshold", {"monitor": False}, {}),
)


class UnusedTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(*_CASES)
    def test_named_only_where_it_has_no_effect(self, field, inert, effective):
        (found,) = unused.unused(config.TrainConfig(**inert), [field, "learning_rate"])
        self.assertEqual(found[0], field)
        self.assertNotEmpty(found[1])
        self.assertEqual(unused.unused(config.TrainConfig(**effective), [field, "learning_rate"]), [])

    def test_cosine_shorter_than_the_run_warns(self):
        cosine = config.TrainConfig(lr_schedule="cosine")  # lr_decay_steps 1000
        with self.assertLogs("absl", level="WARNING") as logs:
            optimizers.build_schedule(cosine, total_steps=4800)
        self.assertIn("reaches lr_alpha × 0.01 at step 1000 of the run's 4800", logs.output[0])
        with self.assertNoLogs("absl", level="WARNING"):
            optimizers.build_schedule(cosine, total_steps=1000)
            optimizers.build_schedule(config.TrainConfig(lr_schedule="cosine", lr_decay_steps=0), 4800)


if __name__ == "__main__":
    tf.test.main()
