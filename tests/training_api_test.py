"""training.train() end to end through the library: learning, reproducibility, optimizers
(the CLI is in cli_train_test.py)."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from training_runs import small_config as _config

from tf_backprop import training
from tf_backprop.training import config, optimizers

# The README states this figure for the default run (see README "Results").
DEFAULT_TEST_RMSE_BOUND = 0.25


def _losses(result: training.TrainResult) -> np.ndarray:
    return np.array([record["loss"] for record in result.history])


class DefaultRunTest(tf.test.TestCase):
    def test_default_config_learns_the_regression_task(self):
        workdir = self.create_tempdir().full_path
        result = training.train(config.TrainConfig(workdir=workdir), progress=False)
        self.assertEqual(result.model.layer_sizes, (2, 3, 3, 1))
        self.assertEqual(result.final_metrics["split"], "test")
        target_std = result.datasets.preprocessing.target_std[0]
        # Predicting the mean would give RMSE ≈ target_std (≈ 0.59); the trained net beats it.
        self.assertLess(result.final_metrics["rmse"], DEFAULT_TEST_RMSE_BOUND)
        self.assertLess(result.final_metrics["rmse"], 0.5 * target_std)
        self.assertLess(result.history[-1]["loss"], result.history[0]["loss"])

    def test_workdir_files(self):
        workdir = self.create_tempdir().full_path
        cfg = _config(workdir, epochs=2)
        result = training.train(cfg, progress=False)
        with open(os.path.join(workdir, "config.json")) as handle:
            saved = json.load(handle)
        self.assertEqual((saved.pop("format"), saved.pop("format_version")), ("tf_backprop.run", 2))
        self.assertEqual(config.TrainConfig.from_dict(saved), cfg)
        with open(os.path.join(workdir, "metrics.json")) as handle:
            metrics = json.load(handle)
        self.assertLen(metrics["history"], 2)
        self.assertEqual(
            set(metrics["history"][0]), {"epoch", "loss", "rmse", "mae", "val_loss", "val_rmse", "val_mae"}
        )
        self.assertEqual(metrics["final"], result.final_metrics)
        self.assertTrue(os.path.exists(os.path.join(workdir, "data.json")))
        self.assertEqual(os.listdir(workdir).count("metrics.json"), 1)  # no temporary left behind
        self.assertFalse([name for name in os.listdir(workdir) if ".tmp" in name])
        with open(os.path.join(workdir, ".lock")) as handle:
            self.assertEqual(handle.read(), "")  # released: no stale pid

    def test_classification_reports_accuracy(self):
        result = training.train(
            _config(self.create_tempdir().full_path, data="xor", hidden=(8,), epochs=20, n_samples=800),
            progress=False,
        )
        self.assertEqual(result.model.layer_sizes, (2, 8, 1))
        self.assertGreater(result.final_metrics["accuracy"], 0.8)

    def test_multiclass_spirals(self):
        result = training.train(
            _config(self.create_tempdir().full_path, data="spirals:3", hidden=(16, 16), epochs=3),
            progress=False,
        )
        self.assertEqual(result.model.layer_sizes[-1], 3)
        self.assertIn("accuracy", result.final_metrics)


class ReproducibilityTest(tf.test.TestCase):
    def test_same_seed_gives_bit_identical_history(self):
        first = training.train(_config(self.create_tempdir().full_path), progress=False)
        second = training.train(_config(self.create_tempdir().full_path), progress=False)
        self.assertEqual(first.history, second.history)
        for a, b in zip(first.model.get_weights(), second.model.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_other_seed_differs(self):
        first = training.train(_config(self.create_tempdir().full_path), progress=False)
        second = training.train(_config(self.create_tempdir().full_path, seed=1), progress=False)
        self.assertNotEqual(first.history, second.history)

    def test_tape_and_manual_give_the_same_history_in_float64(self):
        runs = [
            training.train(
                _config(self.create_tempdir().full_path, dtype="float64", grad_source=source, l2=1e-3),
                progress=False,
            )
            for source in ("tape", "manual")
        ]
        tape, manual = (_losses(r) for r in runs)
        np.testing.assert_allclose(manual, tape, rtol=1e-9, atol=0)
        for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


class OptimizationTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(
        ("sgd", 0.05),
        ("momentum", 0.01),
        ("nesterov", 0.01),
        ("adam", 0.01),
        ("adamw", 0.01),
        ("rmsprop", 0.01),
        ("adagrad", 0.05),
    )
    def test_every_optimizer_lowers_the_loss(self, optimizer, learning_rate):
        result = training.train(
            _config(
                self.create_tempdir().full_path, optimizer=optimizer, learning_rate=learning_rate, epochs=4
            ),
            progress=False,
        )
        losses = _losses(result)
        self.assertLess(losses[-1], 0.8 * losses[0])

    def test_gradient_accumulation_equals_a_larger_batch_for_sgd(self):
        common = {"optimizer": "sgd", "dtype": "float64", "epochs": 2}
        big = training.train(
            _config(self.create_tempdir().full_path, batch_size=40, **common), progress=False
        )
        accumulated = training.train(
            _config(self.create_tempdir().full_path, batch_size=10, grad_accum_steps=4, **common),
            progress=False,
        )
        self.assertEqual(big.steps, accumulated.steps)
        for a, b in zip(big.model.get_weights(), accumulated.model.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)

    @parameterized.parameters(
        ("clip_value", "element"), ("clip_norm", "tensor"), ("clip_global_norm", "global")
    )
    def test_clipping_bounds_the_applied_update(self, flag, scope):
        bound, learning_rate = 1e-3, 1.0

        def update(**clip):
            cfg = _config(
                self.create_tempdir().full_path,
                optimizer="sgd",
                learning_rate=learning_rate,
                steps=1,
                epochs=None,
                initializer="random_normal",
                dtype="float64",
                **clip,
            )
            initial = [w.numpy() for w in training.build(cfg).model.weights]
            final = training.train(cfg, progress=False).model.get_weights()
            return [f - i for f, i in zip(final, initial)]

        def size(deltas):
            if scope == "element":
                return max(np.max(np.abs(d)) for d in deltas)
            if scope == "tensor":
                return max(np.linalg.norm(d) for d in deltas)
            return np.sqrt(sum(np.sum(d**2) for d in deltas))

        self.assertGreater(size(update()), 10 * bound)  # the test can fail: unclipped is larger
        self.assertLessEqual(size(update(**{flag: bound})), learning_rate * bound * (1 + 1e-5))

    def test_early_stopping_stops_and_restores_the_best_weights(self):
        with self.assertLogs("absl", level="INFO") as logs:
            result = training.train(
                _config(self.create_tempdir().full_path, epochs=200, patience=2, learning_rate=0.05),
                progress=False,
            )
        self.assertTrue(result.stopped_early)
        self.assertLess(len(result.history), 200)
        best = min(record["val_loss"] for record in result.history)
        best_epoch = 1 + min(range(len(result.history)), key=lambda i: result.history[i]["val_loss"])
        self.assertEqual(best_epoch, len(result.history) - 2)  # patience 2: two epochs without gain
        self.assertIn(
            f"restored the weights of epoch {best_epoch} (validation loss {best:.6g})", "\n".join(logs.output)
        )
        evaluator = training.build(_config("x"), result.datasets)
        for target, source in zip(evaluator.model.weights, result.model.weights):
            target.assign(source)
        restored = evaluator.engine.evaluator.evaluate(result.datasets.validation)
        self.assertAllClose(restored["loss"], best, rtol=1e-5)

    def test_learning_rate_schedules_build(self):
        for schedule in optimizers.LR_SCHEDULES:
            result = training.train(
                _config(self.create_tempdir().full_path, lr_schedule=schedule, lr_decay_steps=10, epochs=1),
                progress=False,
            )
            self.assertTrue(np.isfinite(result.history[-1]["loss"]))
