"""Tests of the training engine through the library (the CLI is in train_cli_test.py)."""

import json
import os

import numpy as np
import planted_faults
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import backprop, config, train
from tf_backprop import data as data_lib

# The README states this figure for the default run (see README "Results").
DEFAULT_TEST_RMSE_BOUND = 0.25


def _config(workdir: str, **overrides) -> config.TrainConfig:
    """A small, fast run on the default regression task."""
    values = {"epochs": 3, "n_samples": 400, "workdir": workdir}
    values.update(overrides)
    return config.TrainConfig(**values)


def _losses(result: train.TrainResult) -> np.ndarray:
    return np.array([record["loss"] for record in result.history])


_SENTINEL = 50.0  # a finite feature value that no standardized row of the default task reaches


def _infinite_gradient_on_sentinel_rows(step_fn, variable_index: int):
    """A gradient path with a planted fault: on a batch holding _SENTINEL, one variable's
    gradient is +inf while the loss stays finite."""

    def faulty(model, x, y, loss, l2=0.0, loss_scale=1.0):
        value, grads, output = step_fn(model, x, y, loss, l2, loss_scale)
        grads = list(grads)
        hit = tf.reduce_any(tf.equal(x, tf.cast(_SENTINEL, x.dtype)))
        grads[variable_index] += tf.where(hit, tf.cast(np.inf, x.dtype), tf.zeros([], x.dtype))
        return value, grads, output

    return faulty


class DefaultRunTest(tf.test.TestCase):
    def test_default_config_learns_the_regression_task(self):
        workdir = self.create_tempdir().full_path
        result = train.train(config.TrainConfig(workdir=workdir), progress=False)
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
        result = train.train(cfg, progress=False)
        with open(os.path.join(workdir, "config.json")) as handle:
            self.assertEqual(config.TrainConfig.from_dict(json.load(handle)), cfg)
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

    def test_classification_reports_accuracy(self):
        result = train.train(
            _config(self.create_tempdir().full_path, data="xor", hidden=(8,), epochs=20, n_samples=800),
            progress=False,
        )
        self.assertEqual(result.model.layer_sizes, (2, 8, 1))
        self.assertGreater(result.final_metrics["accuracy"], 0.8)

    def test_multiclass_spirals(self):
        result = train.train(
            _config(self.create_tempdir().full_path, data="spirals:3", hidden=(16, 16), epochs=3),
            progress=False,
        )
        self.assertEqual(result.model.layer_sizes[-1], 3)
        self.assertIn("accuracy", result.final_metrics)


class ReproducibilityTest(tf.test.TestCase):
    def test_same_seed_gives_bit_identical_history(self):
        first = train.train(_config(self.create_tempdir().full_path), progress=False)
        second = train.train(_config(self.create_tempdir().full_path), progress=False)
        self.assertEqual(first.history, second.history)
        for a, b in zip(first.model.get_weights(), second.model.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_other_seed_differs(self):
        first = train.train(_config(self.create_tempdir().full_path), progress=False)
        second = train.train(_config(self.create_tempdir().full_path, seed=1), progress=False)
        self.assertNotEqual(first.history, second.history)

    def test_tape_and_manual_give_the_same_history_in_float64(self):
        runs = [
            train.train(
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
        result = train.train(
            _config(
                self.create_tempdir().full_path, optimizer=optimizer, learning_rate=learning_rate, epochs=4
            ),
            progress=False,
        )
        losses = _losses(result)
        self.assertLess(losses[-1], 0.8 * losses[0])

    def test_gradient_accumulation_equals_a_larger_batch_for_sgd(self):
        common = {"optimizer": "sgd", "dtype": "float64", "epochs": 2}
        big = train.train(_config(self.create_tempdir().full_path, batch_size=40, **common), progress=False)
        accumulated = train.train(
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
            initial = [w.numpy() for w in train.build_model(cfg, train.load_datasets(cfg)).weights]
            final = train.train(cfg, progress=False).model.get_weights()
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
        result = train.train(
            _config(self.create_tempdir().full_path, epochs=200, patience=2, learning_rate=0.05),
            progress=False,
        )
        self.assertTrue(result.stopped_early)
        self.assertLess(len(result.history), 200)
        best = min(record["val_loss"] for record in result.history)
        restored = train.Engine(
            result.model,
            train.build_optimizer(_config("x"), 1),
            train.losses_lib.get("mse"),
            _config("x"),
            None,
        ).evaluate(result.datasets.validation)
        self.assertAllClose(restored["loss"], best, rtol=1e-5)

    def test_learning_rate_schedules_build(self):
        for schedule in config.LR_SCHEDULES:
            result = train.train(
                _config(self.create_tempdir().full_path, lr_schedule=schedule, lr_decay_steps=10, epochs=1),
                progress=False,
            )
            self.assertTrue(np.isfinite(result.history[-1]["loss"]))


class VerificationTest(tf.test.TestCase):
    def test_verify_every_passes_on_the_real_paths(self):
        for dtype in ("float32", "float64"):
            result = train.train(
                _config(self.create_tempdir().full_path, dtype=dtype, verify_every=3, grad_accum_steps=2),
                progress=False,
            )
            self.assertGreater(result.steps, 0)

    def test_verify_every_catches_a_planted_disagreement(self):
        planted = {"tape": backprop.tape_step, "manual": planted_faults.flipped_sign(backprop.manual_step, 2)}
        cfg = _config(self.create_tempdir().full_path, grad_source="manual", verify_every=5)
        with self.assertRaisesRegex(train.TrainingError, r"step 5: .*dense_2/kernel"):
            train.train(cfg, progress=False, step_functions=planted)

    def test_without_verification_the_planted_fault_goes_unnoticed(self):
        planted = {"tape": backprop.tape_step, "manual": planted_faults.flipped_sign(backprop.manual_step, 2)}
        cfg = _config(self.create_tempdir().full_path, grad_source="manual", epochs=1)
        train.train(cfg, progress=False, step_functions=planted)  # no error: verification is what catches it


class FailureTest(tf.test.TestCase):
    def test_non_finite_loss_stops_at_that_step_and_keeps_the_workdir(self):
        workdir = self.create_tempdir().full_path
        cfg = _config(workdir, optimizer="sgd", learning_rate=1e6, epochs=3)
        with self.assertRaisesRegex(
            train.TrainingError, r"^step \d+: non-finite value in (the gradient of dense_\d/\w+|the loss)"
        ):
            train.train(cfg, progress=False)
        with open(os.path.join(workdir, "config.json")) as handle:
            self.assertEqual(json.load(handle)["learning_rate"], 1e6)
        self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.json")))

    def test_non_finite_stop_happens_before_the_bad_update(self):
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False)
        datasets = train.load_datasets(cfg)
        bad_step = 4  # with shuffle off, step s reads rows (s-1)·batch .. s·batch-1
        datasets.train.x[(bad_step - 1) * cfg.batch_size] = np.nan
        with self.assertRaisesRegex(train.TrainingError, rf"^step {bad_step}: .*dense_1/kernel"):
            train.train(cfg, datasets, progress=False)

    def _run_with_an_infinite_gradient_at(self, bad_step: int, **overrides):
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False, **overrides)
        datasets = train.load_datasets(cfg)
        self.assertGreater(cfg.chunk_steps((2, 3, 3, 1)), bad_step)  # the fault is mid-chunk
        datasets.train.x[(bad_step - 1) * cfg.batch_size] = _SENTINEL
        planted = {"tape": _infinite_gradient_on_sentinel_rows(backprop.tape_step, 3), "manual": None}
        train.train(cfg, datasets, progress=False, step_functions=planted)

    def test_a_gradient_only_fault_mid_chunk_is_traced_to_its_step_and_variable(self):
        # The loss stays finite at the bad step; the fast chunk sees it only in its end state,
        # and the step-by-step replay names the step.
        with self.assertRaisesRegex(
            train.TrainingError, r"^step 7: non-finite value in the gradient of dense_2/bias"
        ):
            self._run_with_an_infinite_gradient_at(7)

    def test_clip_value_does_not_hide_an_infinite_gradient(self):
        # Clipping would turn the infinite element into a finite update.
        with self.assertRaisesRegex(train.TrainingError, r"^step 7: .*dense_2/bias"):
            self._run_with_an_infinite_gradient_at(7, clip_value=1.0)


class FastChunkTest(tf.test.TestCase):
    def test_the_fast_chunk_runs_the_same_steps_as_the_checked_replay(self):
        # What the replay of a failed chunk relies on: from the same start, both chunks
        # compute the same updates.
        for monitor in (False, True):
            cfg = _config(self.create_tempdir().full_path, dtype="float64", monitor=monitor)
            datasets = train.load_datasets(cfg)
            model = train.build_model(cfg, datasets)
            loss = train.resolve_loss(cfg, datasets)
            engine = train.Engine(model, train.build_optimizer(cfg, 100), loss, cfg, None)
            x = tf.constant(datasets.train.x)
            y = train.targets_tensor(datasets.train.y, "float64")
            indices = tf.constant(train.epoch_indices(cfg, len(datasets.train.x), 0)[:7])
            fast = engine._fast_chunk(x, y, indices)
            after_fast = [v.numpy() for v in engine._state]
            engine._restore_state(fast["start_state"])
            checked = engine._checked_chunk(x, y, indices)
            self.assertEqual(int(fast["steps_done"]), 7)
            self.assertEqual(int(engine.optimizer.iterations), 7)
            self.assertAllClose(fast["loss_sum"], checked["loss_sum"], rtol=1e-12, atol=0)
            for a, b in zip(after_fast, engine._state):
                self.assertAllClose(a, b.numpy(), rtol=1e-12, atol=1e-15)


class ConfigTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_split": 1.0}, "val_split"),
        ({"test_split": -0.1}, "test_split"),
        ({"val_split": 0.5, "test_split": 0.5}, "val_split \\+ test_split"),
        ({"optimizer": "nope"}, "optimizer.*sgd"),
        ({"activation": "nope"}, "activation.*relu"),
        ({"loss": "nope"}, "loss.*mse"),
        ({"layers": (2, 0, 1)}, "^layers: expected positive integers"),
        ({"layers": (2, 3, 1), "hidden": (4,)}, "hidden.*contradicts"),
        ({"epochs": 2, "steps": 3}, "epochs and steps"),
        ({"clip_norm": 1.0, "clip_value": 1.0}, "clip_norm and clip_value"),
        ({"data": "csv:x.csv"}, "target"),
        ({"grad_accum_steps": 0}, "grad_accum_steps"),
        ({"verify_every": -1}, "verify_every"),
        ({"device": "tpu"}, "device"),
    )
    def test_bad_values_name_the_field(self, values, pattern):
        with self.assertRaisesRegex(config.ConfigError, pattern):
            config.TrainConfig(**values)

    def test_a_bad_target_in_any_row_of_any_split_is_a_data_error(self):
        # Inside the compiled engine an out-of-range label would become an all-zero one-hot row.
        cases = [
            ("spirals:3", "train", -1, 3, r"train split: y: class labels must lie in \[0, 2\]"),
            (
                "xor",
                "validation",
                -1,
                2.0,
                r"validation split: y: binary_crossentropy targets must lie in \[0, 1\]",
            ),
        ]
        for data, split, row, bad, pattern in cases:
            workdir = self.create_tempdir().full_path
            cfg = _config(workdir, data=data)
            datasets = train.load_datasets(cfg)
            getattr(datasets, split).y[row] = bad
            with self.assertRaisesRegex(data_lib.DataError, pattern):
                train.train(cfg, datasets, progress=False)
            self.assertEmpty(os.listdir(workdir))  # rejected before the workdir is touched

    def test_layers_must_fit_the_data(self):
        cfg = _config(self.create_tempdir().full_path, layers=(3, 4, 1))
        with self.assertRaisesRegex(config.ConfigError, r"layers: \[3, 4, 1\] does not fit the data"):
            train.train(cfg, progress=False)

    def test_gpu_requested_without_a_gpu_is_a_clear_error(self):
        if tf.config.list_physical_devices("GPU"):
            self.skipTest("this machine has a GPU")
        with self.assertRaisesRegex(config.ConfigError, "device: 'gpu' requested but TensorFlow sees no GPU"):
            train.select_device("gpu")
        self.assertEqual(train.select_device("auto"), "/CPU:0")

    def test_article_preset_is_the_article(self):
        cfg = config.from_preset("article")
        self.assertEqual(cfg.layers, (2, 3, 3, 1))
        self.assertEqual(
            (cfg.activation, cfg.output_activation, cfg.initializer), ("relu", "relu", "random_normal")
        )
        self.assertEqual(
            (cfg.optimizer, cfg.learning_rate, cfg.batch_size, cfg.steps), ("adam", 0.001, 10, 1000)
        )
        self.assertEqual(config.from_preset("article", steps=5).steps, 5)

    def test_article_preset_cannot_learn(self):
        cfg = config.from_preset("article", workdir=self.create_tempdir().full_path)
        result = train.train(cfg, progress=False)
        self.assertEqual(result.steps, 1000)
        # Random labels in [0, 1): the best constant guess gives half-MSE 1/24 ≈ 0.042; the
        # article's net does no better than that, and with its ReLU output it usually dies at 0
        # (half-MSE E[y²]/2 = 1/6).
        self.assertGreater(result.final_metrics["loss"], 1 / 24 - 0.005)
