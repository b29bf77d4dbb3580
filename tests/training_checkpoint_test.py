"""Checkpoints and resume through the library (killed CLI runs are in cli_resume_test.py).

A resumed run must continue bit-identically, so the comparisons here are exact
(np.testing.assert_array_equal, == on histories), never assertAllClose.  The training runs
are small (16 steps per epoch) and their chunk sizes are chosen to compile few shapes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import shutil
import signal
import tempfile

import checkpoint_files
import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import training
from tf_backprop.model import MLP
from tf_backprop.training import checkpoint, config, resume
from tf_backprop.training import workdir as workdir_lib

# 200 rows -> 160 training rows -> 16 steps per epoch.  Chunks end every 8 steps of an epoch
# and at every 12th step, so checkpoints 12 and 36 fall mid-epoch and 48 ends the run;
# ckpt/ keeps 24, 36 and 48.  No monitoring or export: they cost time and are not resumed
# state (the CLI tests run with them).
_QUIET = {"monitor": False, "export": False}
_BASE = {"epochs": 3, "n_samples": 200, "steps_per_call": 8, "checkpoint_every": 12, **_QUIET}
# Plain SGD at this rate overflows at step 74 on this task; every=20 leaves ckpt-60 as the last good one.
_DIVERGING = {
    "optimizer": "sgd",
    "epochs": 6,
    "n_samples": 400,
    "steps_per_call": 10,
    "checkpoint_every": 20,
    **_QUIET,
}
_DIVERGING_RATE, _DIVERGING_STEP, _LAST_GOOD_STEP = 1.4, 74, 60
_TIMEOUT = 300  # seconds for a test (or a class set-up) that trains; each takes 2-15 s


def _config(workdir: str, **overrides) -> config.TrainConfig:
    """The small base run in `workdir`, with `overrides`."""
    return config.TrainConfig(**{**_BASE, "workdir": workdir, **overrides})


def _train(cfg: config.TrainConfig, **kwargs) -> training.TrainResult:
    return training.train(cfg, progress=False, **kwargs)


@contextlib.contextmanager
def _working_directory(path: str):
    """The block runs with `path` as the current folder."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _time_limit(seconds: int = _TIMEOUT):
    """Raises TimeoutError in the block after `seconds`, so a run that never ends fails the test."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a training loop that never ends?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _messages(logs) -> str:
    """The captured log messages, one per line."""
    return "\n".join(record.getMessage() for record in logs.records)


class ExactTestCase(tf.test.TestCase, parameterized.TestCase):
    """Exact comparisons of weights and runs, each test under _TIMEOUT."""

    def setUp(self):
        super().setUp()
        self.enterContext(_time_limit())

    def assert_weights_equal(self, actual, expected) -> None:
        """Same number of arrays, each bit-identical."""
        self.assertEqual(len(actual), len(expected))
        for a, e in zip(actual, expected):
            np.testing.assert_array_equal(a, e)

    def assert_same_run(self, result: training.TrainResult, reference: training.TrainResult) -> None:
        """Bit-identical weights, history, final metrics and step count."""
        self.assert_weights_equal(result.model.get_weights(), reference.model.get_weights())
        self.assertEqual(result.history, reference.history)
        self.assertEqual(result.final_metrics, reference.final_metrics)
        self.assertEqual(result.steps, reference.steps)


# ----------------------------------------------------------------------------- Keeper alone
class KeeperTest(ExactTestCase):
    """Keeper.save / restore_latest on a tiny model, without training."""

    def _keeper(self, workdir: str, keep: int = 3):
        """A fresh model, optimizer and RunState, and their Keeper."""
        model = MLP((2, 3, 1), seed=0)
        optimizer = keras.optimizers.Adam(0.01)
        optimizer.build(model.trainable_variables)
        state = checkpoint.RunState(model)
        return checkpoint.Keeper(workdir, model, optimizer, state, keep), model, optimizer, state

    def _save_steps(self, workdir: str, steps) -> dict[int, list[np.ndarray]]:
        """Saves a checkpoint at each step with distinct weights; returns those weights."""
        keeper, model, optimizer, _ = self._keeper(workdir)
        saved = {}
        for step in steps:
            optimizer.iterations.assign(step)
            model.set_weights([np.full_like(w, step) for w in model.get_weights()])
            keeper.save()
            saved[step] = model.get_weights()
        return saved

    def test_no_checkpoint_restores_nothing(self):
        keeper, *_ = self._keeper(self.create_tempdir().full_path)
        self.assertIsNone(keeper.restore_latest())

    def test_numbered_by_step_keeping_the_newest(self):
        workdir = self.create_tempdir().full_path
        self._save_steps(workdir, (5, 10, 15, 20))
        names = [
            os.path.basename(p)
            for p in tf.train.get_checkpoint_state(
                checkpoint_files.ckpt_dir(workdir)
            ).all_model_checkpoint_paths
        ]
        self.assertEqual(names, ["ckpt-10", "ckpt-15", "ckpt-20"])
        self.assertEmpty(checkpoint_files.ckpt_files(workdir, 5))  # swept

    def test_run_state_round_trip(self):
        workdir = self.create_tempdir().full_path
        keeper, model, optimizer, state = self._keeper(workdir)
        optimizer.iterations.assign(7)
        state.epoch.assign(2)
        state.step_in_epoch.assign(3)
        state.epoch_loss_sum.assign(1.25)
        state.epoch_metric_sums.assign([1.0, 2.0, 3.0])
        state.append_history({"epoch": 1, "loss": 0.5})
        state.best_val_loss.assign(0.25)
        state.waited.assign(1)
        state.stopped.assign(True)
        keeper.save()
        other, _, other_optimizer, restored = self._keeper(workdir)
        self.assertEqual(other.restore_latest(), os.path.join(checkpoint_files.ckpt_dir(workdir), "ckpt-7"))
        self.assertEqual(int(other_optimizer.iterations.numpy()), 7)
        for name in (
            "epoch",
            "step_in_epoch",
            "epoch_loss_sum",
            "epoch_metric_sums",
            "best_val_loss",
            "waited",
        ):
            self.assertAllEqual(getattr(restored, name), getattr(state, name), msg=name)
        self.assertTrue(bool(restored.stopped.numpy()))
        self.assertEqual(restored.history(), [{"epoch": 1, "loss": 0.5}])

    def _write_run_files(self, workdir: str) -> None:
        """config.json and data.json of a run of self._keeper's 2-3-1 net (for load_model)."""
        cfg = _config(workdir, hidden=(3,))
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(cfg.to_dict(), handle)
        with open(os.path.join(workdir, "data.json"), "w", encoding="utf-8") as handle:
            json.dump(training.load_datasets(cfg).preprocessing.to_dict(), handle)

    def test_a_run_checkpoint_restores_through_a_plain_tf_train_checkpoint(self):
        workdir = self.create_tempdir().full_path
        saved = self._save_steps(workdir, (4,))
        other = MLP((2, 3, 1), seed=1)
        path = tf.train.latest_checkpoint(checkpoint_files.ckpt_dir(workdir))
        tf.train.Checkpoint(model=other).restore(path).expect_partial()
        self.assert_weights_equal(other.get_weights(), saved[4])

    def test_checkpoints_of_the_first_format_still_load(self):
        # The first MLP hid its layers from tf.train.Checkpoint: its runs' checkpoints hold an
        # empty `model` node and the weights only under `weights` (and the optimizer's references).
        workdir = self.create_tempdir().full_path
        self._write_run_files(workdir)
        _, model, optimizer, state = self._keeper(workdir)
        model.set_weights([np.full_like(w, 3.0) for w in model.get_weights()])
        optimizer.iterations.assign(4)
        first_format = tf.train.Checkpoint(
            model=tf.Module(), weights=checkpoint._weights(model), optimizer=optimizer, state=state
        )
        tf.train.CheckpointManager(first_format, checkpoint_files.ckpt_dir(workdir), 3).save(4)
        loaded, *_ = checkpoint.load_model(workdir)
        self.assert_weights_equal(loaded.get_weights(), model.get_weights())
        keeper, resumed, *_ = self._keeper(workdir)
        self.assertEndsWith(keeper.restore_latest(), "ckpt-4")
        self.assert_weights_equal(resumed.get_weights(), model.get_weights())

    def test_history_of_a_checkpoint_that_kept_it_in_the_run_state(self):
        # Checkpoints written before ckpt/history.jsonl held the history as a JSON string
        # variable in the run state; a resume reads it from there.
        workdir = self.create_tempdir().full_path
        keeper, _, optimizer, state = self._keeper(workdir)
        records = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
        state.history_json = tf.Variable(json.dumps(records), dtype=tf.string, trainable=False)
        state.epoch.assign(2)
        optimizer.iterations.assign(8)
        keeper.save()
        self.assertFalse(
            os.path.exists(os.path.join(checkpoint_files.ckpt_dir(workdir), checkpoint.HISTORY_FILE))
        )
        other, _, _, restored = self._keeper(workdir)
        other.restore_latest()
        self.assertEqual(restored.history(), records)

    def test_the_history_file_is_appended_and_cut_back_to_the_checkpoint(self):
        workdir = self.create_tempdir().full_path
        keeper, _, optimizer, state = self._keeper(workdir)
        path = os.path.join(checkpoint_files.ckpt_dir(workdir), checkpoint.HISTORY_FILE)
        for epoch in (1, 2):
            state.append_history({"epoch": epoch})
            state.epoch.assign(epoch)
            optimizer.iterations.assign(4 * epoch)
            keeper.save()
        with open(path) as handle:
            self.assertEqual(handle.read(), '{"epoch": 1}\n{"epoch": 2}\n')  # each record once
        with open(path, "a") as handle:  # a later epoch's line, and one cut short by a kill
            handle.write('{"epoch": 3}\n{"epo')
        other, _, _, restored = self._keeper(workdir)
        other.restore_latest()
        self.assertEqual(restored.history(), [{"epoch": 1}, {"epoch": 2}])
        with open(path) as handle:
            self.assertEqual(handle.read(), '{"epoch": 1}\n{"epoch": 2}\n')

    @parameterized.named_parameters(("index", "index"), ("data", "data"))
    def test_truncated_latest_falls_back_to_the_previous(self, part):
        workdir = self.create_tempdir().full_path
        saved = self._save_steps(workdir, (10, 20, 30))
        checkpoint_files.truncate_checkpoint(workdir, 30, part)
        keeper, model, optimizer, _ = self._keeper(workdir)
        with self.assertLogs("absl", level="WARNING") as logs:
            path = keeper.restore_latest()
        self.assertEqual(path, os.path.join(checkpoint_files.ckpt_dir(workdir), "ckpt-20"))
        self.assertRegex(
            _messages(logs), r"checkpoint \S*ckpt-30 is unreadable \(.+\); trying the previous one"
        )
        self.assertEqual(int(optimizer.iterations.numpy()), 20)
        self.assert_weights_equal(model.get_weights(), saved[20])

    def test_all_unreadable_is_a_checkpoint_error(self):
        workdir = self.create_tempdir().full_path
        self._save_steps(workdir, (10, 20))
        checkpoint_files.truncate_checkpoint(workdir, 10, "data")
        checkpoint_files.truncate_checkpoint(workdir, 20, "index")
        keeper, *_ = self._keeper(workdir)
        with self.assertRaisesRegex(
            checkpoint.CheckpointError, r"no readable checkpoint .*tried 2.*--restart"
        ):
            keeper.restore_latest()

    def test_load_model_of_a_truncated_checkpoint_is_a_checkpoint_error(self):
        """Not the IndexError TF's checkpoint reader raises for a short data file."""
        workdir = self.create_tempdir().full_path
        self._write_run_files(workdir)
        saved = self._save_steps(workdir, (2, 4))
        model, *_ = checkpoint.load_model(workdir)
        self.assert_weights_equal(model.get_weights(), saved[4])
        checkpoint_files.truncate_checkpoint(workdir, 4, "data")
        # The message lists the checkpoints that remain, so the user can pick one.
        with self.assertRaisesRegex(
            checkpoint.CheckpointError,
            r"ckpt-4 is unreadable \(.+\); the run's other checkpoints: ckpt-2 \(give one as --checkpoint\)$",
        ):
            checkpoint.load_model(workdir)
        with self.assertRaisesRegex(
            checkpoint.CheckpointError, r"ckpt-9.*not found .*; the run's other checkpoints: ckpt-4, ckpt-2 "
        ):
            checkpoint.load_model(workdir, "ckpt-9")
        self.assert_weights_equal(checkpoint.load_model(workdir, "ckpt-2")[0].get_weights(), saved[2])


# ----------------------------------------------------------------------------- config checks
class CheckResumableTest(tf.test.TestCase, parameterized.TestCase):
    """check_resumable: harmful differences raise naming each field, harmless ones are logged."""

    def setUp(self):
        super().setUp()
        self.workdir = self.create_tempdir().full_path
        self.saved = _config(self.workdir)
        with open(os.path.join(self.workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(self.saved.to_dict(), handle)

    def test_new_workdir(self):
        self.assertIsNone(resume.check_resumable(self.create_tempdir().full_path, self.saved))

    @parameterized.named_parameters(
        ("hidden", "hidden", {"hidden": (4,)}),
        ("loss", "loss", {"loss": "half_mse"}),
        ("seed", "seed", {"seed": 1}),
        ("n_samples", "n_samples", {"n_samples": 300}),
        ("grad_accum_steps", "grad_accum_steps", {"grad_accum_steps": 2}),
        ("optimizer", "optimizer", {"optimizer": "sgd"}),
    )
    def test_harmful_difference_names_the_field(self, field, overrides):
        with self.assertRaises(training.ConfigMismatchError) as raised:
            resume.check_resumable(self.workdir, _config(self.workdir, **overrides))
        message = str(raised.exception)
        self.assertRegex(message, rf"\b{field}: saved .+, given .+")
        self.assertIn("--restart", message)

    def test_every_harmful_field_named_and_harmless_ones_not(self):
        cfg = _config(self.workdir, hidden=(4,), loss="half_mse", epochs=9, learning_rate=0.5)
        with self.assertRaises(training.ConfigMismatchError) as raised:
            resume.check_resumable(self.workdir, cfg)
        message = str(raised.exception)
        self.assertIn("hidden: saved the default [3, 3], given [4]", message)
        self.assertIn("loss: saved the default (by task), given 'half_mse'", message)
        self.assertNotIn("epochs", message)
        self.assertNotIn("learning_rate", message)

    def test_harmless_differences_are_logged(self):
        cfg = _config(self.workdir, epochs=9, learning_rate=0.5)
        with self.assertLogs("absl", level="INFO") as logs:
            saved = resume.check_resumable(self.workdir, cfg)
        self.assertEqual(saved, self.saved)
        self.assertIn("resume with changed epochs: 3 -> 9", _messages(logs))
        self.assertIn("resume with changed learning_rate: 0.01 -> 0.5", _messages(logs))

    def test_the_same_net_given_by_layers_or_hidden_is_no_change(self):
        # Saved with the default widths (2, 3, 3, 1 on this data).
        for same in ({"hidden": (3, 3)}, {"layers": (2, 3, 3, 1)}):
            with self.subTest(**same):
                resume.check_resumable(self.workdir, _config(self.workdir, **same))
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"\blayers: saved the default .*, given \[2, 4, 1\]"
        ):
            resume.check_resumable(self.workdir, _config(self.workdir, layers=(2, 4, 1)))
        resaved = _config(self.workdir, layers=(2, 3, 3, 1))
        with open(os.path.join(self.workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(resaved.to_dict(), handle)
        resume.check_resumable(self.workdir, _config(self.workdir, hidden=(3, 3)))
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"\blayers: saved \[2, 3, 3, 1\], given \[5, 3, 3, 1\]"
        ):
            resume.check_resumable(self.workdir, _config(self.workdir, layers=(5, 3, 3, 1)))

    def test_the_same_csv_spelled_another_way_is_no_change(self):
        saved = _config(self.workdir, data="csv:x.csv", target="y")
        with open(os.path.join(self.workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(saved.to_dict(), handle)
        for same in ("csv:./x.csv", f"csv:{os.path.abspath('x.csv')}"):
            with self.subTest(data=same):
                resume.check_resumable(self.workdir, _config(self.workdir, data=same, target="y"))
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"\bdata: saved 'csv:x.csv', given 'csv:y.csv'"
        ):
            resume.check_resumable(self.workdir, _config(self.workdir, data="csv:y.csv", target="y"))

    def test_the_saved_csv_given_from_another_folder_is_no_change(self):
        # Trained in root/ on csv:x.csv; resumed from root/sub/ as csv:../x.csv.  The saved path
        # is relative to root/ and names no file from sub/: the data's fingerprint decides.
        root = self.create_tempdir().full_path
        for folder in ("sub", "other"):
            os.makedirs(os.path.join(root, folder))
        for name in ("x.csv", os.path.join("other", "x.csv"), os.path.join("other", "y.csv")):
            with open(os.path.join(root, name), "w", encoding="utf-8") as handle:
                handle.write("a,y\n1,2\n")
        saved = _config(self.workdir, data="csv:x.csv", target="y")
        with open(os.path.join(self.workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(saved.to_dict(), handle)
        with _working_directory(os.path.join(root, "sub")):
            with self.assertLogs("absl", level="INFO") as logs:
                resume.check_resumable(self.workdir, _config(self.workdir, data="csv:../x.csv", target="y"))
            self.assertIn("relative to the folder the run trained in", _messages(logs))
            for other in ("csv:../other/y.csv", "csv:../missing/x.csv"):  # another name; no file
                with self.assertRaisesRegex(training.ConfigMismatchError, r"\bdata: saved 'csv:x.csv'"):
                    resume.check_resumable(self.workdir, _config(self.workdir, data=other, target="y"))
        with _working_directory(root):  # from here the saved path names a file: another one is refused
            with self.assertRaisesRegex(training.ConfigMismatchError, r"\bdata: saved 'csv:x.csv'"):
                resume.check_resumable(
                    self.workdir, _config(self.workdir, data="csv:other/x.csv", target="y")
                )

    def test_the_same_folder_given_relative_or_absolute_is_no_change(self):
        # config.json holds --workdir as given (a streamed run: resolved); either may be relative.
        for given in (os.path.relpath(self.workdir), self.workdir):
            with self.subTest(given=given):
                cfg = _config(given, epochs=9)
                with self.assertLogs("absl", level="INFO") as logs:
                    resume.check_resumable(self.workdir, cfg)
                self.assertNotIn("changed workdir", _messages(logs))
        saved = os.path.join(self.workdir, checkpoint.CONFIG_FILE)
        with open(saved, encoding="utf-8") as handle:
            document = json.load(handle)
        document["workdir"] = os.path.relpath(self.workdir)  # saved relative, given absolute
        with open(saved, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        with self.assertLogs("absl", level="INFO") as logs:
            resume.check_resumable(self.workdir, _config(self.workdir, epochs=9))
        self.assertNotIn("changed workdir", _messages(logs))


class MoveAsideTest(tf.test.TestCase):
    def test_empty_workdir(self):
        workdir = self.create_tempdir().full_path
        self.assertIsNone(workdir_lib.move_aside(workdir))
        self.assertEmpty(os.listdir(workdir))

    def test_moves_run_files_and_leaves_others(self):
        workdir = self.create_tempdir()
        for name in ("config.json", "data.json", "metrics.json", "notes.txt"):
            workdir.create_file(name, content=name)
        workdir.create_file("ckpt/checkpoint", content="index")
        aside = workdir_lib.move_aside(workdir.full_path)
        self.assertEqual(os.path.dirname(aside), workdir.full_path)
        self.assertStartsWith(os.path.basename(aside), "previous-")
        self.assertCountEqual(os.listdir(workdir.full_path), ["notes.txt", os.path.basename(aside)])
        self.assertCountEqual(os.listdir(aside), ["config.json", "data.json", "metrics.json", "ckpt"])
        with open(os.path.join(aside, "ckpt", "checkpoint"), encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "index")


# ----------------------------------------------------------------------------- resumed training
class ResumeTest(ExactTestCase):
    """Resuming a finished base run (3 epochs, checkpoints 24, 36, 48); each test works on a copy."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="checkpoint_test_")
        cls.addClassCleanup(shutil.rmtree, cls.root, ignore_errors=True)
        with _time_limit():
            cls.base = _train(_config(os.path.join(cls.root, "base")))

    def copy_of_base(self) -> str:
        """A copy of the base run's workdir in this test's temporary directory."""
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        shutil.copytree(self.base.workdir, workdir)
        return workdir

    def test_base_run_checkpoints(self):
        state = tf.train.get_checkpoint_state(checkpoint_files.ckpt_dir(self.base.workdir))
        names = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
        self.assertEqual(names, ["ckpt-24", "ckpt-36", "ckpt-48"])
        self.assertEqual(self.base.steps, 48)
        model, *_ = checkpoint.load_model(self.base.workdir)
        self.assert_weights_equal(model.get_weights(), self.base.model.get_weights())

    def test_more_epochs_continue_as_one_run(self):
        """3 epochs then 4 (a harmless change) == 4 epochs in one go."""
        workdir = self.copy_of_base()
        with self.assertLogs("absl", level="INFO") as logs:
            resumed = _train(_config(workdir, epochs=4))
        self.assertIn("resume with changed epochs: 3 -> 4", _messages(logs))
        self.assertRegex(_messages(logs), r"resumed from \S*ckpt-48: step 48, epoch 4")
        self.assertEqual(resumed.history[:3], self.base.history)
        uninterrupted = _train(_config(self.create_tempdir().full_path, epochs=4))
        self.assert_same_run(resumed, uninterrupted)
        self.assertEqual(resumed.steps, 64)

    def test_a_run_its_steps_cut_mid_epoch_resumes_with_more_steps(self):
        """--steps=40 ends epoch 3 after 8 of its 16 steps (its record written); rerun with
        --steps=70, epoch 4 runs steps 41-56 and a partial epoch 5 steps 57-70."""
        workdir = self.create_tempdir().full_path
        first = _train(_config(workdir, epochs=None, steps=40))
        self.assertEqual([record["epoch"] for record in first.history], [1, 2, 3])
        resumed = _train(_config(workdir, epochs=None, steps=70))  # (it looped forever)
        self.assertEqual(resumed.steps, 70)
        self.assertEqual([record["epoch"] for record in resumed.history], [1, 2, 3, 4, 5])
        self.assertEqual(resumed.history[:3], first.history)

    @parameterized.named_parameters(("data", "data"), ("index", "index"))
    def test_truncated_latest_resumes_from_the_previous_mid_epoch(self, part):
        """ckpt-48 unreadable: warning, resume at step 36 (epoch 3, step 4 of 16), same result."""
        workdir = self.copy_of_base()
        checkpoint_files.truncate_checkpoint(workdir, 48, part)
        with self.assertLogs("absl", level="INFO") as logs:
            resumed = _train(_config(workdir))
        messages = _messages(logs)
        self.assertRegex(messages, r"checkpoint \S*ckpt-48 is unreadable \(.+\); trying the previous one")
        self.assertRegex(messages, r"resumed from \S*ckpt-36: step 36, epoch 3")
        self.assert_same_run(resumed, self.base)
        self.assertEqual(checkpoint_files.read_json(workdir, "metrics.json")["history"], self.base.history)
        model, *_ = checkpoint.load_model(workdir)  # ckpt-48 was written again, whole
        self.assert_weights_equal(model.get_weights(), self.base.model.get_weights())

    def test_all_checkpoints_unreadable(self):
        workdir = self.copy_of_base()
        for step, part in ((24, "data"), (36, "index"), (48, "data")):
            checkpoint_files.truncate_checkpoint(workdir, step, part)
        with self.assertRaisesRegex(
            checkpoint.CheckpointError, r"no readable checkpoint in \S*ckpt .*--restart"
        ):
            _train(_config(workdir))

    @parameterized.named_parameters(
        ("hidden", "hidden", {"hidden": (4,)}),
        ("loss", "loss", {"loss": "half_mse"}),
    )
    def test_mismatch_raises_and_leaves_the_run_alone(self, field, overrides):
        self.assert_refused_leaving_the_run_alone(rf"\b{field}: saved ", overrides)

    def assert_refused_leaving_the_run_alone(self, pattern: str, overrides: dict) -> str:
        """Resuming a copy of the base run with `overrides` raises ConfigMismatchError matching
        `pattern` and changes none of its files; the copy's workdir."""
        workdir = self.copy_of_base()
        before = _run_file_states(workdir)
        with self.assertRaisesRegex(training.ConfigMismatchError, pattern):
            _train(_config(workdir, **overrides))
        self.assertEqual(_run_file_states(workdir), before)
        return workdir

    @parameterized.named_parameters(
        (
            "epochs",
            {"epochs": 2},
            r"--epochs=2: \S+ has already trained 48 steps \(3 epochs of 16 steps\); resume it with --epochs=3 or more, or start over with --restart",
        ),
        (
            "steps",
            {"epochs": None, "steps": 40},
            r"--steps=40: \S+ has already trained 48 steps .* --steps=48 or more, or start over with --restart",
        ),
    )
    def test_fewer_steps_than_trained_are_refused_and_leave_the_run_alone(self, overrides, message):
        # Resuming would train nothing and rewrite config.json to contradict the history.
        workdir = self.assert_refused_leaving_the_run_alone(f"^{message}$", overrides)
        self.assertEqual(resume.latest_step(workdir), 48)
        self.assertIsNone(resume.latest_step(self.create_tempdir().full_path))

    def test_a_whole_run_cosine_decay_is_not_stretched_over_another_length(self):
        # Decayed to 0 at step 16 of 16, then stretched over 32: the rate would jump back up.
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        cosine = {"lr_schedule": "cosine", "lr_decay_steps": 0}
        _train(_config(workdir, epochs=1, **cosine))
        before = _run_file_states(workdir)
        with self.assertRaisesRegex(
            training.ConfigMismatchError,
            r"^--epochs=2: \S+ decays its learning rate by cosine over the whole run "
            r"\(--lr_decay_steps=0\), laid over --epochs=1; .* resume it with --epochs=1, or start over with --restart$",
        ):
            _train(_config(workdir, epochs=2, **cosine))
        self.assertEqual(_run_file_states(workdir), before)
        self.assertEqual(_train(_config(workdir, epochs=1, **cosine)).steps, 16)  # as it was: fine
        fixed = os.path.join(self.create_tempdir().full_path, "run")  # a fixed decay length may grow
        _train(_config(fixed, epochs=1, lr_schedule="cosine", lr_decay_steps=40))
        self.assertEqual(_train(_config(fixed, epochs=2, lr_schedule="cosine", lr_decay_steps=40)).steps, 32)

    def test_restart_moves_the_run_aside_and_starts_at_step_0(self):
        workdir = self.copy_of_base()
        fresh = _train(_config(workdir, epochs=1), restart=True)
        self.assertEqual(fresh.steps, 16)
        self.assertLen(fresh.history, 1)
        (aside,) = [n for n in os.listdir(workdir) if n.startswith("previous-")]
        aside = os.path.join(workdir, aside)
        self.assertContainsSubset(["ckpt", "config.json", "data.json", "metrics.json"], os.listdir(aside))
        self.assertEqual(checkpoint_files.read_json(aside, "metrics.json")["history"], self.base.history)
        old, *_ = checkpoint.load_model(aside)
        self.assert_weights_equal(old.get_weights(), self.base.model.get_weights())
        self.assertEqual(checkpoint_files.read_json(workdir, "config.json")["epochs"], 1)


class _Records(logging.Handler):
    """Collects the records of a Python logger (TensorFlow's own warnings go to "tensorflow")."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class HealthResumeTest(ExactTestCase):
    def test_a_resumed_run_continues_the_gradient_health_counts_without_restore_warnings(self):
        # A threshold every gradient exceeds: each measurement warns for every layer.
        loud = {"monitor": True, "exploding_threshold": 1e-12}
        workdir = self.create_tempdir().full_path
        uninterrupted = self.create_tempdir().full_path
        records = _Records()
        with _time_limit():
            _train(_config(workdir, epochs=2, **loud))
            logging.getLogger("tensorflow").addHandler(records)
            try:
                _train(_config(workdir, epochs=4, **loud))
                gc.collect()  # TF reports unrestored values when the restore status is deleted
            finally:
                logging.getLogger("tensorflow").removeHandler(records)
            _train(_config(uninterrupted, epochs=4, **loud))
        resumed_health = _metrics(workdir)["gradient_health"]
        self.assertGreater(resumed_health["warnings"]["exploding"], 0)
        self.assertEqual(resumed_health, _metrics(uninterrupted)["gradient_health"])
        unrestored = [m for m in records.messages if "unrestored" in m or "could not be found" in m]
        self.assertEqual(unrestored, [])


def _run_file_states(workdir: str) -> dict:
    """file_states of the workdir and its ckpt/, but for the lock file (the refused run locked
    the folder while it checked it)."""
    states = {d: checkpoint_files.file_states(os.path.join(workdir, d)) for d in ("", "ckpt")}
    states[""].pop(workdir_lib.LOCK_FILE)
    return states


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as handle:
        return json.load(handle)


class DataChangeTest(ExactTestCase):
    """A resume on other data is refused: the CSV's bytes, or (runs from before fingerprints)
    the statistics data.json holds."""

    def _csv(self, folder: str, last: float = 2.0) -> str:
        rows = "".join(f"{i % 7},{i % 5},{(i % 7) * 0.3 + (i % 5) * 0.1:g}\n" for i in range(99))
        path = os.path.join(folder, "data.csv")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"x1,x2,y\n{rows}1,1,{last:g}\n")
        return path

    def _csv_config(self, workdir: str, path: str, **overrides) -> config.TrainConfig:
        return _config(workdir, **{"data": f"csv:{path}", "target": "y", "epochs": 1, **overrides})

    def test_a_changed_csv_is_refused_and_the_original_resumes(self):
        root = self.create_tempdir().full_path
        workdir, path = os.path.join(root, "run"), self._csv(root)
        _train(self._csv_config(workdir, path))
        self._csv(root, last=3.0)  # one value changed: same size, same rows
        before = _run_file_states(workdir)
        size = os.path.getsize(path)
        pattern = (
            rf"^{re.escape(workdir)} was trained on other data: csv:{re.escape(path)} has changed "
            rf"\(was {size} bytes, 100 rows, sha256 [0-9a-f]{{12}}…; now {size} bytes, 100 rows, "
            r"sha256 [0-9a-f]{12}…\); rerun with --restart"
        )
        with self.assertRaisesRegex(training.ConfigMismatchError, pattern):
            _train(self._csv_config(workdir, path, epochs=2))
        self.assertEqual(_run_file_states(workdir), before)
        self._csv(root)  # the original bytes again
        self.assertEqual(_train(self._csv_config(workdir, path, epochs=2)).steps, 2 * 8)
        self._csv(root, last=3.0)
        self.assertEqual(_train(self._csv_config(workdir, path), restart=True).steps, 8)

    def test_a_data_json_without_fingerprint_is_compared_by_its_statistics(self):
        root = self.create_tempdir().full_path
        workdir, path = os.path.join(root, "run"), self._csv(root)
        _train(self._csv_config(workdir, path))

        def forget_fingerprint():  # data.json as the previous version wrote it
            saved = checkpoint_files.read_json(workdir, "data.json")
            del saved["fingerprint"]
            with open(os.path.join(workdir, "data.json"), "w", encoding="utf-8") as handle:
                json.dump(saved, handle)

        forget_fingerprint()
        self.assertEqual(_train(self._csv_config(workdir, path, epochs=2)).steps, 2 * 8)
        forget_fingerprint()
        self._csv(root, last=9.0)
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"has changed \(its target_mean, target_std differ"
        ):
            _train(self._csv_config(workdir, path, epochs=3))


class EarlyStopResumeTest(ExactTestCase):
    """A run that stopped early is finished: rerunning it changes nothing; rerunning it with more
    epochs or another patience is refused (they would not apply), leaving it as it was."""

    def test_resumed_early_stopped_run_trains_nothing(self):
        workdir = self.create_tempdir().full_path
        cfg = _config(workdir, epochs=60, patience=1, learning_rate=0.05, checkpoint_every=0)
        stopped = _train(cfg)
        self.assertTrue(stopped.stopped_early)
        self.assertLess(stopped.steps, 60 * 16)
        metrics = checkpoint_files.read_json(workdir, "metrics.json")
        checkpoints = checkpoint_files.file_states(checkpoint_files.ckpt_dir(workdir))
        resumed = _train(cfg)
        self.assertTrue(resumed.stopped_early)
        self.assert_same_run(resumed, stopped)
        self.assertEqual(checkpoint_files.read_json(workdir, "metrics.json"), metrics)
        self.assertEqual(
            checkpoint_files.file_states(checkpoint_files.ckpt_dir(workdir)), checkpoints
        )  # not even rewritten
        before = _run_file_states(workdir)
        for changed, named in (({"epochs": 80}, "--epochs"), ({"patience": 5}, "--patience")):
            again = _config(
                workdir, **{**dict(epochs=60, patience=1, learning_rate=0.05, checkpoint_every=0), **changed}
            )
            with self.assertRaisesRegex(
                training.ConfigMismatchError,
                rf"^\S+ stopped early at step {stopped.steps} \(no better validation loss for 1 epochs\): "
                rf"resuming it trains nothing, so {named} would not apply; rerun it as it was, or start "
                r"over with --restart$",
            ):
                _train(again)
            self.assertEqual(_run_file_states(workdir), before)


class DivergenceResumeTest(ExactTestCase):
    """A non-finite stop keeps the last good checkpoint; a lower learning rate resumes from it."""

    def test_lower_learning_rate_resumes_from_the_last_good_checkpoint(self):
        workdir = self.create_tempdir().full_path
        diverging = config.TrainConfig(**_DIVERGING, learning_rate=_DIVERGING_RATE, workdir=workdir)
        with self.assertRaisesRegex(training.TrainingError, rf"step {_DIVERGING_STEP}: non-finite"):
            _train(diverging)
        state = tf.train.get_checkpoint_state(checkpoint_files.ckpt_dir(workdir))
        self.assertEqual(os.path.basename(state.model_checkpoint_path), f"ckpt-{_LAST_GOOD_STEP}")
        model, *_ = checkpoint.load_model(workdir)
        self.assertTrue(all(np.isfinite(w).all() for w in model.get_weights()))
        # Diverging again from it leaves the checkpoints as they were, to the byte and the mtime.
        checkpoints = checkpoint_files.file_states(checkpoint_files.ckpt_dir(workdir))
        with self.assertRaisesRegex(training.TrainingError, rf"step {_DIVERGING_STEP}: non-finite"):
            _train(diverging)
        self.assertEqual(checkpoint_files.file_states(checkpoint_files.ckpt_dir(workdir)), checkpoints)
        lower = config.TrainConfig(**_DIVERGING, learning_rate=0.05, workdir=workdir)
        with self.assertLogs("absl", level="INFO") as logs:
            result = _train(lower)
        messages = _messages(logs)
        self.assertIn(f"resume with changed learning_rate: {_DIVERGING_RATE} -> 0.05", messages)
        self.assertRegex(messages, rf"resumed from \S*ckpt-{_LAST_GOOD_STEP}: step {_LAST_GOOD_STEP},")
        self.assertEqual(result.steps, 6 * 32)
        self.assertTrue(all(np.isfinite(w).all() for w in result.model.get_weights()))
