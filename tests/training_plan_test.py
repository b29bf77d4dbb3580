"""The plan: how long an automatic compiled call is."""

import tensorflow as tf

from tf_backprop import training
from tf_backprop.training import plan as plan_lib

ARTICLE = (2, 3, 3, 1)


def _steps_per_call(n_train: int, layers=ARTICLE, batch_size: int = 10, **overrides) -> int:
    cfg = training.TrainConfig(layers=layers, batch_size=batch_size, **overrides)
    return training.make_plan(cfg, n_train, layers).steps_per_call


class AutoStepsPerCallTest(tf.test.TestCase):
    def test_a_tiny_net_gets_the_longest_call(self):
        # 200-step epochs: 500 epochs fit in MAX_AUTO_CHUNK steps.
        self.assertEqual(_steps_per_call(2_000), plan_lib.MAX_AUTO_CHUNK)

    def test_tiny_epochs_cap_the_call_at_max_auto_epochs(self):
        # One step an epoch: every step ends an epoch that Python logs.
        self.assertEqual(_steps_per_call(10), plan_lib.MAX_AUTO_EPOCHS)
        self.assertEqual(_steps_per_call(30), 3 * plan_lib.MAX_AUTO_EPOCHS)

    def test_a_mid_size_net_gets_about_auto_chunk_flops(self):
        layers, batch = (64, 256, 256, 1), 256
        steps = _steps_per_call(256 * 40, layers, batch)
        flops = plan_lib.step_flops(batch, layers)
        self.assertBetween(steps * flops, plan_lib.AUTO_CHUNK_FLOPS - flops, plan_lib.AUTO_CHUNK_FLOPS)

    def test_a_large_net_gets_min_auto_chunk(self):
        layers, batch = (1024, 1024, 1024, 10), 512
        self.assertEqual(_steps_per_call(512 * 30, layers, batch), plan_lib.MIN_AUTO_CHUNK)

    def test_an_explicit_steps_per_call_is_kept(self):
        self.assertEqual(_steps_per_call(10, steps_per_call=7), 7)
