"""The plan: how long an automatic compiled call is, and how the compiled loop is shaped."""

import tensorflow as tf

from tf_backprop import training
from tf_backprop.training import plan as plan_lib

ARTICLE = (2, 3, 3, 1)


LARGE = (1024, 1024, 1024, 10)


def _plan(n_train: int, layers=ARTICLE, batch_size: int = 10, **overrides) -> plan_lib.Plan:
    cfg = training.TrainConfig(layers=layers, batch_size=batch_size, **overrides)
    return training.make_plan(cfg, n_train, layers)


def _steps_per_call(n_train: int, layers=ARTICLE, batch_size: int = 10, **overrides) -> int:
    return _plan(n_train, layers, batch_size, **overrides).steps_per_call


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

    def test_a_large_net_trains_on_min_call_rows_a_call(self):
        # 1e11 FLOPs would be 15 steps: the call's state copies would cost ~5%.
        steps = _steps_per_call(512 * 30, LARGE, 512)
        self.assertEqual(steps, plan_lib.MIN_CALL_ROWS // 512)
        self.assertLessEqual(steps * plan_lib.step_flops(512, LARGE), plan_lib.MAX_AUTO_CALL_FLOPS)

    def test_a_streamed_large_net_keeps_the_flops_rule(self):
        # Its call's rows are a block in memory: 128 steps of 1,024 features would be 268 MB.
        cfg = training.TrainConfig(layers=LARGE, batch_size=512)
        plan = training.make_plan(cfg, 512 * 30, LARGE, worker_rows=[512 * 30])
        self.assertEqual(plan.steps_per_call, plan_lib.MIN_AUTO_CHUNK)

    def test_a_worker_without_training_rows_is_told_workers_need_shards(self):
        cfg = training.TrainConfig(batch_size=20)
        with self.assertRaisesRegex(
            training.ConfigError,
            r"^data: worker 1's shards hold no training rows: each worker reads whole shards, so 2 "
            r"workers need at least 2 shards with training rows$",
        ):
            training.make_plan(cfg, 400, (2, 3, 1), worker_rows=[400, 0])
        with self.assertRaisesRegex(
            training.ConfigError, r"^batch_size: worker 1's shards hold 3 training rows"
        ):
            training.make_plan(cfg, 403, (2, 3, 1), worker_rows=[400, 3])

    def test_max_auto_call_flops_bounds_the_rows_and_min_auto_chunk_the_flops(self):
        layers = (1024, 4096, 4096, 10)  # 1.6e10 FLOPs a step at batch 128
        flops = plan_lib.step_flops(128, layers)
        self.assertEqual(_steps_per_call(128 * 30, layers, 128), plan_lib.MAX_AUTO_CALL_FLOPS // flops)
        huge = (4096, 4096, 4096, 10)  # 2e11 FLOPs a step at batch 1024
        self.assertEqual(_steps_per_call(1024 * 30, huge, 1024), plan_lib.MIN_AUTO_CHUNK)

    def test_an_explicit_steps_per_call_is_kept(self):
        self.assertEqual(_steps_per_call(10, steps_per_call=7), 7)


class LoopShapeTest(tf.test.TestCase):
    def test_weights_count_kernels_and_biases(self):
        self.assertEqual(_plan(1_000).weights, 25)
        self.assertEqual(_plan(512 * 30, LARGE, 512).weights, 2_109_450)

    def test_large_nets_peel_the_last_step_sooner(self):
        self.assertFalse(_plan(1_000, steps=4_800).peels_last_step)
        self.assertFalse(_plan(1_000, steps=200_000).peels_last_step)
        self.assertTrue(_plan(1_000, steps=800_000).peels_last_step)
        self.assertFalse(_plan(512 * 30, LARGE, 512, steps=200).peels_last_step)
        self.assertTrue(_plan(512 * 30, LARGE, 512, steps=300).peels_last_step)

    def test_only_large_nets_gather_each_steps_rows(self):
        self.assertFalse(_plan(100_000).gathers_each_step)
        self.assertFalse(_plan(256 * 40, (64, 256, 256, 1), 256).gathers_each_step)  # 82,945 weights
        self.assertTrue(_plan(512 * 30, LARGE, 512).gathers_each_step)

    def test_a_stream_prefetches_one_call_at_most_max_prefetch_steps(self):
        mid = (20, 64, 64, 1)
        cfg = training.TrainConfig(layers=mid, batch_size=256)
        self.assertEqual(
            training.make_plan(cfg, 256 * 10_000, mid, worker_rows=[256 * 10_000]).prefetch_steps, 1_024
        )
        self.assertEqual(_plan(10_000, steps_per_call=100).prefetch_steps, 100)  # one call
        self.assertEqual(_plan(10_000, steps=30).prefetch_steps, 30)  # no more than the run
        self.assertEqual(_plan(10_000_000).prefetch_steps, plan_lib.MAX_PREFETCH_STEPS)

    def test_long_runs_compile_the_whole_call(self):
        mid = (64, 256, 256, 1)  # 126M FLOPs a step at batch 256
        self.assertFalse(_plan(1_000, ARTICLE, 10, epochs=60).compiles_whole_call)  # the default job
        self.assertFalse(_plan(2_000, ARTICLE, 10, epochs=599).compiles_whole_call)
        self.assertTrue(_plan(2_000, ARTICLE, 10, epochs=600).compiles_whole_call)  # 1.3e8 FLOPs
        self.assertFalse(_plan(256 * 40, mid, 256, epochs=10).compiles_whole_call)  # 400 steps, 5e10
        self.assertTrue(_plan(256 * 40, mid, 256, epochs=61).compiles_whole_call)  # train_bench's
        self.assertEqual(_plan(256 * 40, mid, 256, steps=7).run_flops, 7 * plan_lib.step_flops(256, mid))

    def test_mid_size_steps_split_their_batch_in_halves(self):
        mid = (64, 256, 256, 1)  # 82,945 weights
        self.assertTrue(_plan(256 * 40, mid, 256).splits_batch)  # 21M multiply-adds a step
        self.assertTrue(_plan(128 * 40, mid, 128).splits_batch)
        self.assertFalse(_plan(64 * 40, mid, 64).splits_batch)  # halves of 32 rows
        self.assertFalse(_plan(130 * 40, (20, 64, 64, 1), 130).splits_batch)  # 0.7M
        self.assertFalse(_plan(1_000, ARTICLE, 200).splits_batch)  # the article's net: 5,000
        self.assertFalse(_plan(512 * 30, LARGE, 512).splits_batch)  # 1.1G: both cores already busy
        self.assertFalse(_plan(255 * 40, mid, 255).splits_batch)  # odd: no equal halves
        cfg = training.TrainConfig(layers=mid, batch_size=256)  # streamed: the same rule
        self.assertTrue(training.make_plan(cfg, 256 * 40, mid, worker_rows=[256 * 40]).splits_batch)
        # Under a strategy, a replica's own batch decides.
        cfg = training.TrainConfig(layers=mid, batch_size=512)
        self.assertEqual(training.make_plan(cfg, 512 * 40, mid, replicas=2).replica_batch, 256)
