"""Training on a streamed source through the library: the engine fed blocks from tf.data.

The command line (SIGKILL and resume) is in cli_stream_test.py; several workers in
training_stream_distributed_test.py.
"""

import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
import training_runs
from csv_files import CsvTestCase
from training_runs import assert_same_training

from tf_backprop import data, training
from tf_backprop.data import pipeline
from tf_backprop.training import config, resume
from tf_backprop.training import plan as plan_lib

_FEATURES = 3


def _write_shards(folder: str, shards: int = 3, rows: int = 120, seed: int = 0) -> str:
    """Regression shards (y = a smooth function of 3 features + noise); their glob pattern."""
    rng = np.random.default_rng(seed)
    for s in range(shards):
        x = rng.uniform(-2, 2, size=(rows, _FEATURES))
        y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] / 4 + 0.05 * rng.standard_normal(rows)
        lines = "".join(",".join(repr(float(v)) for v in (*row, t)) + "\n" for row, t in zip(x, y))
        with open(os.path.join(folder, f"part-{s}.csv"), "w") as handle:
            handle.write("a,b,c,y\n" + lines)
    return os.path.join(folder, "part-*.csv")


def _config(pattern: str, workdir: str | None, **overrides) -> config.TrainConfig:
    values = {
        "data": f"csv:{pattern}",
        "target": "y",
        "stream": True,
        "hidden": (8,),
        "batch_size": 10,
        "epochs": 3,
        "dtype": "float64",
        "workdir": workdir,
        "histogram_every": 0,
    }
    return config.TrainConfig(**{**values, **overrides})


def _contents(folder: str) -> dict[str, bytes | None]:
    """Every path below `folder` (relative) with its bytes (None for a folder)."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.relpath(os.path.join(root, name), folder)] = handle.read()
    return found


class StreamedTrainingTest(CsvTestCase):
    def setUp(self):
        super().setUp()
        self.pattern = _write_shards(self.create_tempdir().full_path)

    def test_the_streamed_engine_equals_the_in_memory_engine_fed_the_same_rows(self):
        # Shuffling off: a streamed epoch is the training rows in shard and file order.  The
        # same rows, in that order, as an in-memory split give the same updates, bit for bit.
        common = {
            "shuffle": False,
            "grad_accum_steps": 2,
            "steps_per_call": 7,
            "val_split": 0.2,
            "test_split": 0.0,
        }
        streamed_dir, loaded_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
        streamed = training.train(_config(self.pattern, streamed_dir, **common), progress=False)
        datasets = streamed.datasets
        self.assertIsInstance(datasets.train, data.StreamedSplit)
        in_memory = data.Datasets(
            pipeline.read_split(datasets.train, datasets.preprocessing),
            datasets.validation,
            None,
            datasets.preprocessing,
            datasets.source,
        )
        loaded = training.train(
            _config(self.pattern, loaded_dir, stream=False, **common),
            in_memory,
            progress=False,
        )
        self.assertEqual(streamed.steps, loaded.steps)
        self.assertEqual(streamed.history, loaded.history)
        for a, b in zip(streamed.model.get_weights(), loaded.model.get_weights()):
            np.testing.assert_array_equal(a, b)
        # Each call's last step is measured from the same rows (a streamed block's row).
        streamed_events = training_runs.events(streamed_dir, "train")
        self.assertGreater(len(streamed_events["gradient_norm/dense_1/kernel"]), 3)
        training_runs.assert_same_events(self, streamed_events, training_runs.events(loaded_dir, "train"))

    def test_a_streamed_run_compiling_its_whole_call_trains_the_same(self):
        # A long streamed run compiles its whole call with XLA (Plan.compiles_whole_call), the
        # call's block of rows as its argument: the same training, bit for bit; the validation
        # figures, summed by XLA's reduction, to float64 rounding.
        runs = []
        for whole in (False, True):
            common = {"steps_per_call": 7, "val_split": 0.2}
            with mock.patch.object(plan_lib, "WHOLE_CALL_FLOPS", 0 if whole else 1e30):
                trainer = training.build(_config(self.pattern, None, **common))  # a temporary folder
                self.assertEqual(trainer.engine.compiles_whole_call, whole)
                cfg = _config(self.pattern, self.create_tempdir().full_path, **common)
                runs.append(training.train(cfg, progress=False))
        loops, whole = runs
        self.assertEqual(whole.steps, loops.steps)
        self.assertLen(whole.history, 3)
        assert_same_training(self, whole, loops)

    def test_a_streamed_run_learns_and_is_evaluated_on_its_streamed_test_split(self):
        workdir = self.create_tempdir().full_path
        result = training.train(_config(self.pattern, workdir, epochs=30, learning_rate=0.02), progress=False)
        self.assertLess(result.history[-1]["loss"], 0.5 * result.history[0]["loss"])
        self.assertEqual(result.final_metrics["split"], "test")
        test = pipeline.read_split(result.datasets.test, result.datasets.preprocessing)
        trainer = training.build(_config(self.pattern, workdir, epochs=30))
        trainer.model.set_weights(result.model.get_weights())
        expected = trainer.engine.evaluator.evaluate(test)
        for name in ("loss", "rmse", "mae"):
            self.assertAllClose(result.final_metrics[name], expected[name], rtol=1e-12)
        self.assertContainsSubset(["stream", "ckpt", "data.json"], os.listdir(workdir))
        # The input pipeline's position, saved with the run's last checkpoint.
        self.assertTrue(
            os.path.exists(os.path.join(workdir, "ckpt", "input-0", f"ckpt-{result.steps}.index"))
        )
        with open(os.path.join(workdir, "data.json")) as handle:
            self.assertEqual(json.load(handle), result.datasets.preprocessing.to_dict())

    def test_two_mirrored_replicas_equal_one_device(self):
        results = []
        for strategy in ({}, {"strategy": "mirrored", "cpu_replicas": 2}):
            cfg = _config(
                self.pattern, self.create_tempdir().full_path, batch_size=20, steps_per_call=5, **strategy
            )
            results.append(training.train(cfg, progress=False))
        one, two = results
        for a, b in zip(one.model.get_weights(), two.model.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
        for x, y in zip(one.history, two.history):
            self.assertAllClose(y["loss"], x["loss"], rtol=1e-12)

    def test_build_without_a_workdir_streams_from_a_temporary_folder(self):
        trainer = training.build(_config(self.pattern, None))
        self.assertIsNotNone(trainer.feed)
        loop = trainer.loop()
        loop.run(total_steps=trainer.plan.steps_per_epoch)
        self.assertLen(loop.history, 1)
        self.assertTrue(os.path.isdir(os.path.dirname(trainer.datasets.train.files[0])))

    def test_bad_data_leaves_every_folder_as_it_was(self):
        # The statistics pass writes into the run folder before the data is known to be good;
        # bad data puts the folder back: made (with its parents) → gone, empty → empty, a
        # finished run moved aside by restart → back in place, byte for byte.
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "part-9.csv"), "w") as handle:  # sorts last
            handle.write("a,b,c,y\n1,2,3,4\n1,2,oops,4\n")
        _write_shards(folder)
        bad = os.path.join(folder, "part-*.csv")
        parent = os.path.join(self.create_tempdir().full_path, "new")
        with self.assertRaises(data.DataError) as caught:
            training.train(_config(bad, os.path.join(parent, "deeper", "run")), progress=False)
        self.assert_one_line_error(
            caught.exception, 'part-9.csv:3:3 (column "c"): expected a number, got "oops"'
        )
        self.assertFalse(os.path.exists(parent))
        empty = self.create_tempdir().full_path
        with self.assertRaises(data.DataError):
            training.train(_config(bad, empty), progress=False)
        self.assertEqual(os.listdir(empty), [])
        finished = self.create_tempdir().full_path
        training.train(_config(self.pattern, finished, epochs=1), progress=False)
        before = _contents(finished)
        with self.assertRaises(data.DataError):
            training.train(_config(bad, finished, epochs=1), restart=True, progress=False)
        self.assertEqual(_contents(finished), before)

    def test_a_missing_shard_fails_before_any_folder_is_made(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        missing = os.path.join(self.create_tempdir().full_path, "missing.csv")
        with self.assertRaises(data.DataError) as caught:
            training.train(_config(missing, workdir), progress=False)
        self.assertEqual(
            str(caught.exception), f"{missing}: cannot read the file (No such file or directory)"
        )
        self.assertFalse(os.path.exists(workdir))

    def test_build_writes_nothing_into_the_workdir(self):
        workdir = self.create_tempdir().full_path  # any folder, not checked as a run folder by build
        trainer = training.build(_config(self.pattern, workdir))
        self.assertEqual(os.listdir(workdir), [])
        self.assertNotEqual(os.path.commonpath([trainer.datasets.train.files[0], workdir]), workdir)

    def test_a_changed_shard_is_refused_on_resume_naming_the_data(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        training.train(_config(self.pattern, workdir, epochs=1), progress=False)
        with open(os.path.join(workdir, "data.json"), encoding="utf-8") as handle:
            saved = json.load(handle)["fingerprint"]
        self.assertEqual((saved["kind"], saved["rows"]), ("csv", 360))
        with open(self.pattern.replace("*", "1"), "a") as handle:  # one more row in shard 1
            handle.write("0.5,0.5,0.5,0.25\n")
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"was trained on other data: csv:\S+part-\*\.csv has changed"
        ):
            training.train(_config(self.pattern, workdir, epochs=2), progress=False)

    def test_a_run_saved_with_the_per_replica_batch_is_not_resumed(self):
        workdir = self.create_tempdir().full_path
        saved = {k: v for k, v in _config(self.pattern, workdir).to_dict().items() if k != "stream"}
        with open(os.path.join(workdir, "config.json"), "w") as handle:
            json.dump({**saved, "strategy": "mirrored", "cpu_replicas": 2}, handle)
        cfg = _config(self.pattern, workdir, strategy="mirrored", cpu_replicas=2)
        with self.assertRaisesRegex(
            training.ConfigMismatchError, r"saved when --batch_size was the per-replica batch.*--restart$"
        ):
            resume.check_resumable(workdir, cfg)
        saved_none = {**saved, "strategy": "none"}
        with open(os.path.join(workdir, "config.json"), "w") as handle:
            json.dump(saved_none, handle)
        # Saved with --strategy=none (and so without --stream): resumes as before.
        self.assertIsNotNone(resume.check_resumable(workdir, _config(self.pattern, workdir, stream=None)))


if __name__ == "__main__":
    tf.test.main()
