"""The engine: verification, non-finite stops, the fast chunk and its checked replay."""

import json
import os

import numpy as np
import planted_faults
import tensorflow as tf
from training_runs import small_config as _config

from tf_backprop import backprop, training
from tf_backprop.training import engine as engine_lib
from tf_backprop.training import optimizers

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


class VerificationTest(tf.test.TestCase):
    def test_verify_every_passes_on_the_real_paths(self):
        for dtype in ("float32", "float64"):
            result = training.train(
                _config(self.create_tempdir().full_path, dtype=dtype, verify_every=3, grad_accum_steps=2),
                progress=False,
            )
            self.assertGreater(result.steps, 0)

    def test_verify_every_catches_a_planted_disagreement(self):
        planted = {"tape": backprop.tape_step, "manual": planted_faults.flipped_sign(backprop.manual_step, 2)}
        cfg = _config(self.create_tempdir().full_path, grad_source="manual", verify_every=5)
        with self.assertRaisesRegex(training.TrainingError, r"step 5: .*dense_2/kernel"):
            training.train(cfg, progress=False, step_functions=planted)

    def test_without_verification_the_planted_fault_goes_unnoticed(self):
        planted = {"tape": backprop.tape_step, "manual": planted_faults.flipped_sign(backprop.manual_step, 2)}
        cfg = _config(self.create_tempdir().full_path, grad_source="manual", epochs=1)
        training.train(
            cfg, progress=False, step_functions=planted
        )  # no error: verification is what catches it


class FailureTest(tf.test.TestCase):
    def test_non_finite_loss_stops_at_that_step_and_keeps_the_workdir(self):
        workdir = self.create_tempdir().full_path
        cfg = _config(workdir, optimizer="sgd", learning_rate=1e6, epochs=3)
        with self.assertRaisesRegex(
            training.TrainingError, r"^step \d+: non-finite value in (the gradient of dense_\d/\w+|the loss)"
        ):
            training.train(cfg, progress=False)
        with open(os.path.join(workdir, "config.json")) as handle:
            self.assertEqual(json.load(handle)["learning_rate"], 1e6)
        self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.json")))

    def test_non_finite_stop_happens_before_the_bad_update(self):
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False)
        datasets = training.load_datasets(cfg)
        bad_step = 4  # with shuffle off, step s reads rows (s-1)·batch .. s·batch-1
        datasets.train.x[(bad_step - 1) * cfg.batch_size] = np.nan
        with self.assertRaisesRegex(training.TrainingError, rf"^step {bad_step}: .*dense_1/kernel"):
            training.train(cfg, datasets, progress=False)

    def _run_with_an_infinite_gradient_at(self, bad_step: int, **overrides):
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False, **overrides)
        datasets = training.load_datasets(cfg)
        self.assertGreater(
            training.build(cfg, datasets).plan.steps_per_call, bad_step
        )  # the fault is mid-chunk
        datasets.train.x[(bad_step - 1) * cfg.batch_size] = _SENTINEL
        planted = {"tape": _infinite_gradient_on_sentinel_rows(backprop.tape_step, 3), "manual": None}
        training.train(cfg, datasets, progress=False, step_functions=planted)

    def test_a_gradient_only_fault_mid_chunk_is_traced_to_its_step_and_variable(self):
        # The loss stays finite at the bad step; the fast chunk sees it only in its end state,
        # and the step-by-step replay names the step.
        with self.assertRaisesRegex(
            training.TrainingError, r"^step 7: non-finite value in the gradient of dense_2/bias"
        ):
            self._run_with_an_infinite_gradient_at(7)

    def test_clip_value_does_not_hide_an_infinite_gradient(self):
        # Clipping would turn the infinite element into a finite update.
        with self.assertRaisesRegex(training.TrainingError, r"^step 7: .*dense_2/bias"):
            self._run_with_an_infinite_gradient_at(7, clip_value=1.0)


class FastChunkTest(tf.test.TestCase):
    def test_the_fast_chunk_runs_the_same_steps_as_the_checked_replay(self):
        # What the replay of a failed chunk relies on: from the same start, both chunks
        # compute the same updates.
        for monitor in (False, True):
            cfg = _config(self.create_tempdir().full_path, dtype="float64", monitor=monitor)
            datasets = training.load_datasets(cfg)
            model = cfg.model_spec(datasets.n_features, datasets.n_outputs).build()
            loss = training.resolve_loss(cfg, datasets)
            engine = training.Engine(model, optimizers.build_optimizer(cfg, 100), loss, cfg, None)
            x = tf.constant(datasets.train.x)
            y = engine_lib.targets_tensor(datasets.train.y, "float64")
            indices = tf.constant(
                training.make_plan(cfg, len(datasets.train.x), (2, 3, 3, 1)).epoch_indices(0)[:7]
            )
            fast = engine._fast_chunk(x, y, indices)
            after_fast = [v.numpy() for v in engine._state]
            engine._restore_state(fast["start_state"])
            checked = engine._checked_chunk(x, y, indices)
            self.assertEqual(int(fast["steps_done"]), 7)
            self.assertEqual(int(engine.optimizer.iterations), 7)
            self.assertAllClose(fast["loss_sum"], checked["loss_sum"], rtol=1e-12, atol=0)
            for a, b in zip(after_fast, engine._state):
                self.assertAllClose(a, b.numpy(), rtol=1e-12, atol=1e-15)
