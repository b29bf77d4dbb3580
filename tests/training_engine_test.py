"""The engine: verification, non-finite stops, the fast chunk and its checked replay."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import planted_faults
import tensorflow as tf
from training_runs import assert_same_training
from training_runs import small_config as _config

from tf_backprop import backprop, training
from tf_backprop.training import engine as engine_lib
from tf_backprop.training import permutation as permutation_lib
from tf_backprop.training import plan as plan_lib

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
        ) as caught:
            training.train(cfg, progress=False)
        self.assertTrue(str(caught.exception).endswith("; try a lower --learning_rate or clipping"))
        with open(os.path.join(workdir, "config.json")) as handle:
            self.assertEqual(json.load(handle)["learning_rate"], 1e6)
        self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.json")))

    def test_unstandardized_features_are_in_the_advice(self):
        folder = self.create_tempdir()
        rows = "".join(f"{i * 1e29},{i % 3},{i % 5}\n" for i in range(1, 80))  # a: up to 8e30
        source = folder.create_file("big.csv", content="a,b,y\n" + rows).full_path
        cfg = _config(
            os.path.join(folder.full_path, "run"), data=f"csv:{source}", target="y", standardize=False
        )
        with self.assertRaisesRegex(
            training.TrainingError,
            r"^step 1: non-finite value .*; try a lower --learning_rate or clipping, or standardize the "
            r"features \(drop --nostandardize\)$",
        ):
            training.train(cfg, progress=False)

    def test_non_finite_stop_happens_before_the_bad_update(self):
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False)
        datasets = training.load_datasets(cfg)
        bad_step = 4  # with shuffle off, step s reads rows (s-1)·batch .. s·batch-1
        datasets.train.x[(bad_step - 1) * cfg.batch_size] = np.nan
        with self.assertRaisesRegex(
            training.TrainingError,
            rf"^step {bad_step}: .*dense_1/kernel; stopped \(that step's update was applied in memory, "
            r"never saved\), and no checkpoint was written yet: a rerun starts over; try a lower",
        ):
            training.train(cfg, datasets, progress=False)
        cfg = _config(self.create_tempdir().full_path, epochs=1, shuffle=False, checkpoint_every=2)
        with self.assertRaisesRegex(
            training.TrainingError,
            rf"^step {bad_step}: .*, and the last checkpoint, at step 2, is untouched: a rerun resumes there;",
        ):
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

    def test_a_whole_compiled_call_replays_to_the_failing_step_too(self):
        # A long run compiles its whole call with XLA (Plan.compiles_whole_call); its failed
        # call is restored and replayed step by step all the same.
        with mock.patch.object(plan_lib, "WHOLE_CALL_FLOPS", 0):
            with self.assertRaisesRegex(
                training.TrainingError, r"^step 7: non-finite value in the gradient of dense_2/bias"
            ):
                self._run_with_an_infinite_gradient_at(7)


class FastCallTest(tf.test.TestCase):
    def test_the_fast_call_runs_the_same_steps_as_the_checked_replay(self):
        # What the replay of a failed call relies on: from the same start, both calls compute
        # the same updates (and end in the same run state), epochs included.
        for monitor in (False, True):
            cfg = _config(self.create_tempdir().full_path, dtype="float64", monitor=monitor)
            trainer = training.build(cfg)
            engine, loop = trainer.engine, trainer.loop()
            stop = trainer.plan.steps_per_epoch + 7  # across an epoch's end
            args = (*loop.train, *loop.validation, tf.constant(0, tf.int64), tf.constant(stop, tf.int64))
            args += (tf.constant(trainer.plan.total_steps, tf.int64),)
            fast = engine._fast_call(*args)
            after_fast = [v.numpy() for v in engine._state]
            engine._restore(fast["start_state"])
            checked = engine._checked_call(*args)
            self.assertEqual(int(engine.optimizer.iterations), stop)
            self.assertEqual(int(fast["count"]), 1)
            self.assertAllClose(fast["records"], checked["records"], rtol=1e-12, atol=0)
            for a, b in zip(after_fast, engine._state):
                self.assertAllClose(a, b.numpy(), rtol=1e-12, atol=1e-15)


class MultiEpochCallTest(tf.test.TestCase):
    def test_where_calls_end_changes_nothing(self):
        # Calls of 7 steps (many per epoch) or of a whole run (many epochs per call), with
        # early stopping: the same history, bit for bit, and the same weights.
        results = []
        for steps_per_call in (7, 10_000):
            cfg = _config(
                self.create_tempdir().full_path,
                dtype="float64",
                epochs=40,
                patience=2,
                learning_rate=0.05,
                steps_per_call=steps_per_call,
            )
            results.append(training.train(cfg, progress=False))
        short, long = results
        self.assertTrue(long.stopped_early)
        self.assertLess(len(long.history), 40)
        self.assertEqual(long.steps, short.steps)
        self._assert_same_run(long, short)

    def _runs_either_way(self, limits, engine_property: str, **overrides):
        """The same float64 run of the small config with `overrides`, with plan_lib's constants
        patched to `limits(on)` for on = False, True, the engine's `engine_property` following
        on: (the off run, the on run)."""
        results = []
        for on in (False, True):
            cfg = _config(self.create_tempdir().full_path, dtype="float64", **overrides)
            with mock.patch.multiple(plan_lib, **limits(on)):
                trainer = training.build(cfg)
                self.assertEqual(getattr(trainer.engine, engine_property), on)
                results.append(training.train(cfg, progress=False))
        return results

    def test_gathering_each_steps_rows_in_the_loop_changes_nothing(self):
        # Large nets gather each step's rows inside the loop, small ones the epoch's rows before
        # it: the same history and weights, bit for bit, with monitoring, across calls and
        # accumulated micro-batches.
        before, inside = self._runs_either_way(
            lambda on: {"GATHER_EACH_STEP_WEIGHTS": 0 if on else 10**12},
            "gathers_each_step",
            epochs=4,
            steps_per_call=7,
            grad_accum_steps=2,
            histogram_every=5,
        )
        self._assert_same_run(inside, before)

    def test_compiling_the_whole_call_changes_nothing(self):
        # Long runs compile the whole call with XLA, short ones each epoch's step loop with the
        # epoch ends in a plain graph: the same training, bit for bit, with validation, early
        # stopping, monitoring and calls that end mid-epoch; the validation figures, summed by
        # XLA's reduction rather than TensorFlow's, to float64 rounding.
        loops, whole = self._runs_either_way(
            lambda on: {"WHOLE_CALL_FLOPS": 0 if on else 1e30},
            "compiles_whole_call",
            epochs=40,
            patience=2,
            learning_rate=0.05,
            steps_per_call=7,
            histogram_every=5,
        )
        self.assertTrue(whole.stopped_early)
        self.assertEqual(whole.steps, loops.steps)
        assert_same_training(self, whole, loops)

    def test_running_the_last_step_after_the_loop_changes_nothing(self):
        # Long runs stop each call's loop one step short and run its last step after it
        # (Plan.peels_last_step), unmonitored ones when they compile the whole call: the same
        # history and weights, bit for bit.
        inside, after = self._runs_either_way(
            lambda on: {"PEEL_MIN_STEPS": 0 if on else 10**9, "WHOLE_CALL_FLOPS": 0},
            "peels_last_step",
            epochs=4,
            steps_per_call=7,
            monitor=False,
        )
        self._assert_same_run(after, inside)

    def test_compiling_the_step_loop_while_the_call_is_traced_changes_nothing(self):
        # The first call has XLA compile its step loop on a second thread, by a launch of no
        # steps, while it traces the call: the same training, bit for bit, as one after the
        # other — with validation, early stopping and monitoring, and with clipping (whose calls
        # check every step: the other step loop).
        for overrides in ({"patience": 2, "histogram_every": 5}, {"clip_value": 0.5}):
            with self.subTest(**overrides):
                results = []
                for ahead in (False, True):
                    cfg = _config(
                        self.create_tempdir().full_path,
                        dtype="float64",
                        epochs=6,
                        learning_rate=0.05,
                        steps_per_call=7,
                        **overrides,
                    )
                    with mock.patch.object(engine_lib.Engine, "compiles_step_loop_ahead", ahead):
                        results.append(training.train(cfg, progress=False))
                self._assert_same_run(*results)

    def _whole_and_split_runs(self, step_functions=None):
        """The same float64 SGD run with each micro-batch whole and split in two halves (the
        halves' shapes recorded): mid-size steps split (Plan.splits_batch); here forced."""
        results, rows_seen = [], []

        def recording(model, x, y, loss, l2=0.0, loss_scale=1.0):
            rows_seen.append(int(x.shape[0]))  # at trace time
            return (step_functions or backprop.STEP_FUNCTIONS)["tape"](model, x, y, loss, l2, loss_scale)

        for split in (False, True):
            cfg = _config(
                self.create_tempdir().full_path,
                dtype="float64",
                optimizer="sgd",
                epochs=4,
                grad_accum_steps=2,
                histogram_every=5,
                l2=1e-3,
            )
            limits = {"SPLIT_MIN_ROWS": 2, "SPLIT_MIN_MACS": 0} if split else {"SPLIT_MIN_ROWS": 10**9}
            with mock.patch.multiple(plan_lib, **limits):
                trainer = training.build(cfg)
                self.assertEqual(trainer.engine.step.halves, 2 if split else 1)
                functions = {"tape": recording, "manual": backprop.manual_step}
                results.append(training.train(cfg, progress=False, step_functions=functions))
        return results, rows_seen, cfg.batch_size

    def _assert_same_run(self, first, second, rtol: float = 0.0):
        """Two runs' histories and weights: bit for bit (rtol 0), or equal to rtol."""
        first_weights, second_weights = first.model.get_weights(), second.model.get_weights()
        self.assertEqual(len(first_weights), len(second_weights))
        if not rtol:
            self.assertEqual(first.history, second.history)
            for a, b in zip(first_weights, second_weights):
                self.assertAllEqual(a, b)
            return
        self.assertEqual(len(first.history), len(second.history))
        for a, b in zip(first.history, second.history):
            self.assertAllClose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=rtol, atol=0)
        for a, b in zip(first_weights, second_weights):
            self.assertAllClose(a, b, rtol=rtol, atol=1e-15)

    def test_splitting_the_batch_in_halves_computes_the_same_run(self):
        # The mean of two halves' losses and gradients is the batch's, summed in another order:
        # the same run up to float64 rounding, metrics included.
        (whole, split), rows_seen, batch = self._whole_and_split_runs()
        self.assertIn(batch, rows_seen)
        self.assertIn(batch // 2, rows_seen)  # the split run's step saw halves
        self._assert_same_run(split, whole, rtol=1e-12)

    def test_the_halves_check_catches_a_half_computed_wrongly(self):
        # A planted fault that only a split run meets: a half-size batch's loss and gradients
        # come out doubled (a sum over the halves where the mean belongs).
        def doubled_on_halves(model, x, y, loss, l2=0.0, loss_scale=1.0):
            value, grads, output = backprop.tape_step(model, x, y, loss, l2, loss_scale)
            if x.shape[0] == 5:  # the small config's batch of 10, halved
                value, grads = 2 * value, [2 * g for g in grads]
            return value, grads, output

        (whole, split), _, batch = self._whole_and_split_runs({"tape": doubled_on_halves})
        self.assertEqual(batch, 10)
        with self.assertRaises(AssertionError):
            self._assert_same_run(split, whole, rtol=1e-12)

    def test_calls_leave_tensorflows_graph_rewrite_option_as_it_was(self):
        # The engine's calls run without Grappler (a global option of TensorFlow's), then put
        # the option back, whichever way the user had set it.
        for disabled in (False, True):
            with self.subTest(disabled_before=disabled):
                tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": disabled})
                before = tf.config.optimizer.get_experimental_options()
                training.train(_config(self.create_tempdir().full_path, epochs=1), progress=False)
                self.assertEqual(tf.config.optimizer.get_experimental_options(), before)
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})

    def test_the_training_call_is_traced_once(self):
        # Launching its XLA step loop per epoch segment (that loop traced once, for the first
        # call's compilation on a second thread and the call alike; with clipping, the loop that
        # checks every step), or compiling the whole call with XLA.
        for whole, clip_value in ((False, None), (True, None), (False, 1.0)):
            with self.subTest(whole_call=whole, clip_value=clip_value):
                cfg = _config(
                    self.create_tempdir().full_path,
                    epochs=5,
                    steps_per_call=30,
                    checkpoint_every=45,
                    clip_value=clip_value,
                )
                with mock.patch.object(plan_lib, "WHOLE_CALL_FLOPS", 0 if whole else 1e30):
                    trainer = training.build(cfg)
                self.assertEqual(trainer.engine.compiles_whole_call, whole)
                loop = trainer.loop()
                loop.run()
                self.assertGreater(loop.calls, 5)  # calls of 30 and 15 steps, across epochs
                self.assertEqual(trainer.engine._fast_call.experimental_get_tracing_count(), 1)
                if not whole:  # and its XLA-compiled step loop, once
                    checks = bool(clip_value)
                    for check, traced in ((checks, 1), (not checks, 0)):
                        step_loop = trainer.engine._step_loops[check]
                        self.assertEqual(step_loop.experimental_get_tracing_count(), traced, check)
                self.assertEqual(trainer.engine._checked_call.experimental_get_tracing_count(), 0)

    def test_the_epoch_order_is_traced_once_for_the_step_loop_and_the_measured_step(self):
        cfg = _config(self.create_tempdir().full_path, seed=9_137, monitor=True)  # a seed of its own
        trainer = training.build(cfg)
        trainer.loop().run()
        permutation = permutation_lib._traced(trainer.plan.n_train, cfg.seed)
        self.assertEqual(permutation.experimental_get_tracing_count(), 1)

    def test_the_epoch_order_of_a_seed_is_the_one_earlier_versions_gave(self):
        # A run's history depends on it: a change would change every history (and a resumed
        # run's later epochs).  Eager and under XLA, with cycle walks (13 rows in 16, 17 in 64).
        pinned = {
            (10, 0, 0): [0, 1, 9, 5, 7, 6, 4, 3, 2, 8],
            (10, 0, 1): [5, 9, 0, 7, 8, 6, 2, 3, 4, 1],
            (13, 7, 3): [4, 7, 0, 9, 2, 5, 6, 3, 8, 11, 12, 10, 1],
            (17, 1, 0): [6, 7, 9, 8, 14, 15, 11, 16, 13, 5, 12, 1, 3, 2, 0, 4, 10],  # 17 in 64
        }
        order = permutation_lib.permutation(5_000, 3, tf.constant(2, tf.int64)).numpy()  # by doubling
        self.assertEqual(order[:8].tolist(), [1440, 833, 1943, 4250, 738, 4556, 4413, 1232])
        self.assertEqual(int(np.sum(order.astype(np.int64) * np.arange(5_000))), 31_412_514_379)
        for (n, seed, epoch), order in pinned.items():
            compiled = tf.function(
                lambda e, n=n, seed=seed: permutation_lib.permutation(n, seed, e), jit_compile=True
            )
            epoch = tf.constant(epoch, tf.int64)
            self.assertAllEqual(permutation_lib.permutation(n, seed, epoch), order)
            self.assertAllEqual(compiled(epoch), order)

    def test_both_cycle_walks_give_the_same_order(self):
        # The permutation walks index by index in small domains and by doubling in larger ones
        # (up to a bound on its tables' memory).
        walks = permutation_lib.walk_each, permutation_lib.walk_by_doubling
        self.assertEqual(
            [permutation_lib.walk_for(s) for s in (1024, 4096, 2**27, 2**28)],
            [walks[0], walks[1], walks[1], walks[0]],
        )
        for n in (1, 2, 5, 17, 300, 800, 1025, 4096, 5000):
            encrypt, size = permutation_lib.feistel(n, 11, tf.constant(4, tf.int64))
            each = permutation_lib.walk_each(encrypt, n, size)
            self.assertAllEqual(np.sort(each), np.arange(n))
            self.assertAllEqual(permutation_lib.walk_by_doubling(encrypt, n, size), each)

    def test_the_epoch_order_is_a_permutation_of_seed_and_epoch(self):
        plan = training.build(_config(self.create_tempdir().full_path)).plan
        first, again, other = plan.epoch_indices(0), plan.epoch_indices(0), plan.epoch_indices(1)
        self.assertAllEqual(first, again)
        self.assertNotAllEqual(first, other)
        used = plan.steps_per_epoch * plan.rows_per_step
        self.assertLen(np.unique(first), used)  # no row twice in an epoch
        self.assertLessEqual(int(first.max()), plan.n_train - 1)


class OverflowTest(tf.test.TestCase):
    def test_metrics_of_a_huge_target_stay_finite(self):
        # A regression target around 1e30: squared errors ~1e60 overflow float32; the engine
        # sums them in float64, so the RMSE comes out around 1e30, not inf.
        cfg = _config(self.create_tempdir().full_path, epochs=2, export=False)
        datasets = training.load_datasets(cfg)
        datasets.preprocessing.target_std = [3e30]
        result = training.train(cfg, datasets, progress=False)
        for record in result.history:
            self.assertTrue(np.isfinite(record["rmse"]) and 1e29 < record["rmse"] < 1e32, record)
            self.assertTrue(np.isfinite(record["val_rmse"]) and 1e29 < record["val_rmse"] < 1e32, record)
        self.assertTrue(1e29 < result.final_metrics["rmse"] < 1e32, result.final_metrics)


class BoundedCallTest(tf.test.TestCase):
    def test_a_call_whose_steps_stop_advancing_fails_instead_of_spinning(self):
        # A planted fault in the engine's step arithmetic: each epoch's step loop returns without
        # running a step.  The call's epoch loop is bounded, so the call ends and the run fails
        # with an internal error.  (In a child process with a hard timeout: without the bound
        # the compiled call never ends, and it cannot be interrupted in-process.)
        for whole in (False, True):
            with self.subTest(whole_call=whole):
                script = (
                    "from unittest import mock\n"
                    "from tf_backprop import training\n"
                    "from tf_backprop.training import engine, plan\n"
                    f"cfg = training.TrainConfig(n_samples=400, workdir={self.create_tempdir().full_path!r})\n"
                    "no_steps = lambda self, *args, **flags: args[5]  # (x, y, epoch, offset, end, carry)\n"
                    f"with mock.patch.object(plan, 'WHOLE_CALL_FLOPS', {0 if whole else 1e30}), "
                    "mock.patch.object(engine.Engine, '_steps', no_steps):\n"
                    "    training.train(cfg, progress=False)\n"
                )
                done = subprocess.run(
                    [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
                )
                self.assertNotEqual(done.returncode, 0)
                self.assertRegex(
                    done.stderr,
                    r"RuntimeError: internal error: the engine's call ended at step 0, not at \d+",
                )


class PartialEpochTest(tf.test.TestCase):
    def test_a_run_longer_than_its_partial_last_epoch_resumes_and_ends(self):
        # --steps=100 ends inside epoch 3 (32 steps an epoch); resumed with --steps=290 the run
        # goes on from epoch 4 and ends inside another partial epoch.  (Run in a child process
        # with a hard timeout: a compiled loop that never ends cannot be interrupted in-process.)
        workdir = self.create_tempdir().full_path
        script = (
            "from tf_backprop import training\n"
            "for steps in (100, 290):\n"
            f"    cfg = training.TrainConfig(n_samples=400, steps=steps, workdir={workdir!r}, export=False)\n"
            "    result = training.train(cfg, progress=False)\n"
            "    print(result.steps, [r['epoch'] for r in result.history])\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        first, second = done.stdout.strip().splitlines()
        self.assertEqual(first, "100 [1, 2, 3, 4]")
        self.assertEqual(second, f"290 {list(range(1, 11))}")
