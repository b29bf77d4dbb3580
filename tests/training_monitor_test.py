"""Gradient health: TensorBoard events read back, and vanishing/exploding detection."""

import dataclasses
import glob
import json
import os
import sys
from unittest import mock

import checkpoint_files
import commands
import numpy as np
import tensorflow as tf
import training_runs

from tf_backprop import backprop, training
from tf_backprop.training import config, monitor
from tf_backprop.training import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEEP = [2] + [32] * 9 + [1]  # a 10-layer MLP


class EventFileTest(tf.test.TestCase):
    def test_tags_steps_and_a_gradient_norm_checked_independently(self):
        workdir = self.create_tempdir().full_path
        cfg = config.TrainConfig(
            workdir=workdir, n_samples=400, steps=1, dtype="float64", verify_every=1, histogram_every=1
        )
        result = training.train(cfg, progress=False)
        events = training_runs.events(workdir, "train")
        self.assertEqual({step for step, _ in events["gradient_norm/dense_1/kernel"]}, {1})
        # The first step's gradient, recomputed from the initial weights and the first batch.
        datasets = training.load_datasets(cfg)
        fresh = cfg.model_spec(datasets.n_features, datasets.n_outputs).build()
        rows = training.make_plan(cfg, len(datasets.train.x), (2, 3, 3, 1)).epoch_indices(0)[0, 0]
        _, grads = backprop.tape_gradients(fresh, datasets.train.x[rows], datasets.train.y[rows], "mse")
        for name, grad in zip(fresh.variable_names, grads):
            logged = events[f"gradient_norm/{name}"][0][1]
            self.assertAllClose(logged, np.linalg.norm(grad), rtol=1e-6)
        # Weight norms are of the updated weights; the update ratio of that update.
        final = result.model.trainable_variables
        for name, variable, initial in zip(fresh.variable_names, final, fresh.trainable_variables):
            logged_norm = events[f"weight_norm/{name}"][0][1]
            self.assertAllClose(logged_norm, np.linalg.norm(variable.numpy()), rtol=1e-6)
            before = max(np.linalg.norm(initial.numpy()), 1e-30)  # biases start at zero
            ratio = np.linalg.norm(variable.numpy() - initial.numpy()) / before
            self.assertAllClose(events[f"update_ratio/{name}"][0][1], ratio, rtol=1e-5)
        for tag in ("learning_rate", "loss", "rmse", "mae", "verify/max_rel_error/dense_3/bias"):
            self.assertIn(tag, events)
        self.assertAllClose(events["learning_rate"][0][1], cfg.learning_rate)
        self.assertLess(events["verify/max_rel_error/dense_1/kernel"][0][1], 1e-9)
        for prefix in ("weights/", "gradients/", "activations/"):
            histograms = [tag for tag in events if tag.startswith(prefix)]
            self.assertNotEmpty(histograms, prefix)
            buckets = events[histograms[0]][0][1]
            self.assertEqual(buckets.shape[1], 3)  # (left, right, count)
        self.assertEqual(events["activations/dense_1"][0][1][:, 2].sum(), cfg.batch_size * 3)
        validation = training_runs.events(workdir, "validation")
        self.assertEqual(set(validation), {"loss", "rmse", "mae"})
        self.assertAllClose(validation["loss"][0][1], result.history[0]["val_loss"], rtol=1e-6)

    def test_each_call_measures_its_last_step_checked_independently(self):
        # Calls of 7 steps: the call ending at step 14 (the second epoch's 4th step) logs the
        # gradient step 14 applied, recomputed here from the weights after step 13 and its rows.
        cfg = config.TrainConfig(n_samples=400, batch_size=32, epochs=3, dtype="float64", steps_per_call=7)
        workdir = self.create_tempdir().full_path
        training.train(dataclasses.replace(cfg, workdir=workdir), progress=False)
        logged = training_runs.events(workdir, "train")
        self.assertIn(14, [step for step, _ in logged["gradient_norm/dense_1/kernel"]])
        trainer = training.build(dataclasses.replace(cfg, workdir=self.create_tempdir().full_path))
        trainer.loop().run(total_steps=13)
        spe = trainer.plan.steps_per_epoch
        self.assertEqual(13 // spe, 1)  # step 14 is in the second epoch
        rows = trainer.plan.epoch_indices(13 // spe)[13 % spe, 0]
        x, y = trainer.datasets.train.x[rows], trainer.datasets.train.y[rows]
        _, grads = backprop.tape_gradients(trainer.model, x, y, "mse")
        for name, grad in zip(trainer.model.variable_names, grads):
            at_14 = dict(logged[f"gradient_norm/{name}"])[14]
            self.assertAllClose(at_14, np.linalg.norm(grad), rtol=1e-6, msg=name)

    def test_monitoring_changes_nothing_in_the_training(self):
        # The step loop is the same program with monitoring on or off (the measured step's
        # gradients are computed beside it): the same history and weights, bit for bit, whether
        # XLA compiles each epoch's step loop or the whole call; the measurements agree between
        # the two (the whole call's are computed by XLA) to float64 rounding.
        measured = []
        for whole in (False, True):
            runs = []
            for monitoring in (False, True):
                workdir = self.create_tempdir().full_path
                cfg = config.TrainConfig(
                    workdir=workdir,
                    n_samples=400,
                    epochs=3,
                    dtype="float64",
                    histogram_every=10,
                    steps_per_call=7,
                    monitor=monitoring,
                )
                with mock.patch.object(plan_lib, "WHOLE_CALL_FLOPS", 0 if whole else 1e30):
                    self.assertEqual(training.build(cfg).engine.compiles_whole_call, whole)
                    runs.append(training.train(cfg, progress=False))
            training_runs.assert_same_training(self, *runs)
            measured.append(training_runs.events(workdir, "train"))
        self.assertGreater(len(measured[0]["gradient_norm/dense_1/kernel"]), 5)
        self.assertEqual(*({tag: [s for s, _ in values] for tag, values in m.items()} for m in measured))
        # Histograms aside: a value on a bucket's edge may move to the next bucket by rounding.
        scalars = [{tag: v for tag, v in m.items() if v[0][1].ndim == 0} for m in measured]
        training_runs.assert_same_events(self, *scalars, rtol=1e-12)

    def test_a_full_disk_at_the_event_writer_is_one_line_naming_its_folder(self):
        # TensorFlow writes an event file's first event as it makes the writer; on a full disk
        # its error runs over several lines.  The run's error is one line (the CLI exits 1).
        workdir = self.create_tempdir().full_path
        full = tf.errors.ResourceExhaustedError(
            None,
            None,
            "{{function_node __wrapped__CreateSummaryFileWriter}} /x/events.out.tfevents.1.v2; "
            "No space left on device\n\tFailed to flush 1 events to /x\n\tFlushing first event.\n\t"
            "Could not initialize events writer. [Op:CreateSummaryFileWriter] name: ",
        )
        cfg = config.TrainConfig(workdir=workdir, n_samples=200, epochs=1)
        with mock.patch.object(tf.summary, "create_file_writer", side_effect=full):
            with self.assertRaises(OSError) as raised:
                training.train(cfg, progress=False)
        folder = os.path.join(workdir, "tb", "train")
        self.assertEqual(
            str(raised.exception), f"{folder}: cannot write the TensorBoard events (No space left on device)"
        )

    def test_monitor_off_writes_no_events(self):
        workdir = self.create_tempdir().full_path
        training.train(
            config.TrainConfig(workdir=workdir, n_samples=200, epochs=1, monitor=False), progress=False
        )
        self.assertFalse(os.path.exists(os.path.join(workdir, "tb")))

    def test_histogram_buckets_count_every_finite_value(self):
        values = np.array([0.0, 1.0, 1.0, 2.0, np.nan])
        buckets = monitor.histogram_buckets(values, buckets=4).numpy()
        self.assertEqual(buckets[:, 2].sum(), 4)
        self.assertEqual(buckets[0, 0], 0.0)
        self.assertEqual(buckets[-1, 1], 2.0)
        self.assertEqual(buckets[-1, 2], 1)  # the maximum lands in the last bucket
        self.assertEqual(monitor.histogram_buckets(np.ones(3)).numpy()[:, 2].sum(), 3)
        self.assertEqual(monitor.histogram_buckets(np.full(2, 3e16)).numpy()[:, 2].sum(), 2)  # huge constant


class DetectionTest(tf.test.TestCase):
    def test_deep_sigmoid_glorot_vanishes_and_relu_he_does_not(self):
        for activation, initializer, expect_vanishing in (
            ("sigmoid", "glorot_uniform", True),
            ("relu", "he_normal", False),
        ):
            report = monitor.gradient_norms_at_init(DEEP, activation, initializer)
            detector = monitor.HealthDetector(report["layers"], monitor.HealthThresholds(patience=1))
            detector.observe(0, np.array(report["gradient_norm"]))
            self.assertEqual(detector.warnings["vanishing"] > 0, expect_vanishing, activation)
            self.assertEqual(detector.warnings["exploding"], 0)

    def test_vanishing_needs_patience_consecutive_measurements(self):
        detector = monitor.HealthDetector(["a", "out"], monitor.HealthThresholds(patience=3))
        small = np.array([1e-9, 1.0])
        self.assertEmpty(detector.observe(1, small) + detector.observe(2, small))
        detector.observe(3, np.array([1.0, 1.0]))  # recovers: the streak restarts
        self.assertEmpty(detector.observe(4, small) + detector.observe(5, small))
        messages = detector.observe(6, small)
        self.assertLen(messages, 1)
        self.assertRegex(messages[0], r"vanishing gradients in a at step 6")

    def test_every_gradient_exactly_zero_is_said_at_once_and_once(self):
        detector = monitor.HealthDetector(["a", "out"], monitor.HealthThresholds(patience=3))
        (message,) = detector.observe(1, np.zeros(2))
        self.assertRegex(
            message, r"^vanishing gradients in every layer at step 1: .*\(every gradient is exactly 0"
        )
        self.assertEmpty(detector.observe(2, np.zeros(2)) + detector.observe(3, np.zeros(2)))
        resumed = monitor.HealthDetector(["a", "out"], monitor.HealthThresholds(patience=3))
        resumed.load_state(json.loads(json.dumps(detector.state())))
        self.assertEmpty(resumed.observe(4, np.zeros(2)))  # said once a run, resumes included
        self.assertEqual(resumed.warnings["vanishing"], 1)
        self.assertEmpty(detector.observe(4, np.array([0.0, 1.0])))  # one layer moving: patience again

    def test_the_article_preset_warns_that_nothing_moves(self):
        workdir = self.create_tempdir().full_path
        with self.assertLogs("absl", "WARNING") as logged:
            training.train(config.from_preset("article", workdir=workdir, epochs=1), progress=False)
        self.assertTrue(any("every gradient is exactly 0" in line for line in logged.output), logged.output)

    def test_the_article_page_shows_the_warning_as_it_is(self):
        (message,) = monitor.HealthDetector(["a", "out"], monitor.HealthThresholds()).observe(
            1000, np.zeros(2)
        )
        with open(os.path.join(ROOT, "docs", "article.md"), encoding="utf-8") as handle:
            self.assertIn(message, handle.read())

    def test_exploding_and_non_finite(self):
        detector = monitor.HealthDetector(["a", "out"], monitor.HealthThresholds(exploding_threshold=10))
        messages = detector.observe(7, np.array([1e3, np.inf]))
        self.assertLen(messages, 2)
        self.assertEqual(detector.warnings["exploding"], 2)

    def test_training_a_deep_sigmoid_net_reports_vanishing_in_metrics_json(self):
        workdir = self.create_tempdir().full_path
        cfg = config.TrainConfig(
            workdir=workdir,
            hidden=tuple(DEEP[1:-1]),
            activation="sigmoid",
            n_samples=400,
            epochs=4,
            steps_per_call=10,
            histogram_every=0,
        )
        training.train(cfg, progress=False)
        with open(os.path.join(workdir, "metrics.json")) as handle:
            health = json.load(handle)["gradient_health"]
        self.assertGreater(health["warnings"]["vanishing"], 0)
        self.assertEqual(health["events"][0]["layer"], "dense_1")

    def test_training_relu_he_reports_no_warning(self):
        workdir = self.create_tempdir().full_path
        cfg = config.TrainConfig(
            workdir=workdir,
            hidden=tuple(DEEP[1:-1]),
            activation="relu",
            initializer="he_normal",
            n_samples=400,
            epochs=2,
            steps_per_call=10,
            histogram_every=0,
            learning_rate=1e-3,
        )
        training.train(cfg, progress=False)
        with open(os.path.join(workdir, "metrics.json")) as handle:
            self.assertEqual(
                json.load(handle)["gradient_health"]["warnings"], {"vanishing": 0, "exploding": 0}
            )


class InspectCliTest(tf.test.TestCase):
    def _run(self, *flags, fresh: bool = False):
        """The command, forked from a warm interpreter unless `fresh` (commands.run)."""
        return commands.run(
            [sys.executable, "-m", "tf_backprop.cli.inspect", "--json", *flags],
            cwd=self.create_tempdir().full_path,
            timeout=120,
            fresh=fresh,
        )

    def test_sigmoid_is_flagged_and_exit_1(self):
        done = self._run("--activation=sigmoid")
        self.assertEqual(done.returncode, 1, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual(report["verdict"][0], "vanishing")
        self.assertEqual(report["verdict"][-1], "ok")

    def test_bad_flag_exit_2(self):
        for index, (flag, name) in enumerate(
            (
                ("--activation=nope", "activation"),
                ("--exploding_threshold=-1", "exploding_threshold: expected a number > 0"),
                ("--vanishing_ratio=nan", "vanishing_ratio: expected a finite number > 0"),
                (
                    "--batches=0",
                    "flag --batches: expected a positive integer, got '0'",
                ),  # absl: "0 is not a ..."
            )
        ):
            with self.subTest(flag=flag):
                done = self._run(flag, fresh=index == 0)  # one where TensorFlow imports
                self.assertEqual(done.returncode, 2, done.stderr)
                self.assertNotIn("Traceback", done.stderr)
                self.assertIn(name, done.stderr)

    def test_no_gradient_at_all_is_vanishing(self):
        report = {"gradient_norm": [0.0, 0.0, 5.0, 2e3], "ratio_to_output": [float("nan"), 0.0, 2.5, 1.0]}
        self.assertEqual(
            monitor.health_verdicts(report, vanishing_ratio=1e-3, exploding_threshold=1e3),
            ["vanishing", "vanishing", "ok", "exploding"],
        )


class ResumedEventsTest(tf.test.TestCase):
    """A run resumed from an earlier checkpoint writes each (tag, step) once, as an uninterrupted run."""

    def test_resumed_run_does_not_repeat_steps(self):
        # 160 training rows: 16 steps per epoch, 8-step chunks; checkpoints at 16, 32 and 48.
        values = {"n_samples": 200, "epochs": 3, "steps_per_call": 8, "histogram_every": 8, "export": False}
        values["checkpoint_every"] = 16  # the end of every epoch
        workdir, uninterrupted = (self.create_tempdir().full_path for _ in range(2))
        training.train(config.TrainConfig(workdir=workdir, **values), progress=False)
        # As if killed after writing the events of steps 40 and 48 but before checkpoint 48.
        checkpoint_files.truncate_checkpoint(workdir, 48, "data")
        training.train(config.TrainConfig(workdir=workdir, **values), progress=False)
        training.train(config.TrainConfig(workdir=uninterrupted, **values), progress=False)
        for split in ("train", "validation"):
            resumed, reference = (
                training_runs.events(workdir, split),
                training_runs.events(uninterrupted, split),
            )
            self.assertEqual(set(resumed), set(reference))
            for tag, events in resumed.items():
                steps = [step for step, _ in events]
                self.assertEqual(steps, sorted(set(steps)), f"{split} {tag}: a step written twice")
                self.assertEqual(steps, [step for step, _ in reference[tag]], f"{split} {tag}")
        self.assertEqual([step for step, _ in training_runs.events(workdir, "train")["loss"]], [16, 32, 48])

    def test_dropping_events_handles_a_record_cut_short_by_a_kill(self):
        directory = self.create_tempdir().full_path
        writer = tf.summary.create_file_writer(directory)
        with writer.as_default():
            for step in range(1, 6):
                tf.summary.write("x", tf.constant(float(step)), step=step)
        writer.close()
        (path,) = glob.glob(os.path.join(directory, "events.out.tfevents.*"))
        with open(path, "rb+") as handle:
            handle.truncate(os.path.getsize(path) - 5)  # the last event's record cut short
        self.assertEqual(monitor.drop_events_after(directory, 3), 2)  # step 4, and the cut one (5)
        steps = [e.step for e in tf.compat.v1.train.summary_iterator(path) if e.summary.value]
        self.assertEqual(steps, [1, 2, 3])
        self.assertEqual(monitor.drop_events_after(directory, 0), 3)
        self.assertEqual(os.listdir(directory), [])  # nothing but the header was left: removed
