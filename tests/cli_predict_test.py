"""Tests of CSV prediction from an export: predict.predict_csv in-process, tf-backprop-predict as a subprocess."""

import csv
import errno
import gzip
import io
import os
import re
import shutil
import sys
import tempfile
from unittest import mock

import commands
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from predict_exports import CLASS_NAMES, FEATURES, make_export

from tf_backprop import data
from tf_backprop.serving import export, predict
from tf_backprop.serving import served as served_lib

PREDICT = os.path.join(os.path.dirname(sys.executable), "tf-backprop-predict")
TIMEOUT = 180  # seconds for one subprocess


def write_csv(path: str, header: list[str], rows: list[list]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def shuffled_rows(m: int, seed: int = 0) -> tuple[list[str], list[list[str]], np.ndarray]:
    """A CSV layout with features out of order plus two extra columns; and the features [m, 3]."""
    x = np.random.default_rng(seed).normal(size=(m, 3)).astype(np.float32) * 2
    header = ["id", "x3", "note", "x1", "x2"]
    rows = [
        [str(i), repr(float(r[2])), f"row {i}", repr(float(r[0])), repr(float(r[1]))] for i, r in enumerate(x)
    ]
    return header, rows, x


def read_csv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


class PredictCsvTest(tf.test.TestCase, parameterized.TestCase):
    """predict.predict_csv, the library function behind the CLI."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="predict_test-")
        cls.served = {task: served_lib.load_export(make_export(cls.folder, task)) for task in CLASS_NAMES}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.dir = self.create_tempdir().full_path
        self.warnings = []

    def predict(self, task: str, header: list[str], rows: list[list], **kwargs) -> str:
        """Runs predict_csv on a CSV of these rows; returns the output file's text."""
        source = write_csv(os.path.join(self.dir, "in.csv"), header, rows)
        output = os.path.join(self.dir, "out.csv")
        predict.predict_csv(self.served[task], source, output, warn=self.warnings.append, **kwargs)
        with open(output, encoding="utf-8") as handle:
            return handle.read()

    def assertNoOutput(self):
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.csv"])  # no output, no temporary

    @parameterized.parameters("regression", "binary", "multiclass")
    def test_output_equals_the_signature_whatever_the_column_order(self, task):
        header, rows, x = shuffled_rows(10)
        out_header, out_rows = read_csv(self.predict(task, header, rows, batch_size=4))
        expected = self.served[task].predict(x)
        self.assertEqual(out_header, header + predict.prediction_columns(self.served[task]))
        self.assertEqual([r[: len(header)] for r in out_rows], rows)  # input cells copied unchanged
        first = len(header) + (task != "regression")  # after the predicted class name, if any
        predicted = np.array([r[first:] for r in out_rows], dtype=np.float32)
        # Batches of 4 here, one batch of 10 in `expected`: matmul blocking may differ by an ulp.
        if task == "regression":
            self.assertEqual(out_header[-1], "predicted_y")
            self.assertAllClose(predicted, expected["predictions"], atol=1e-6, rtol=1e-6)
        else:
            self.assertAllClose(predicted, expected["probabilities"], atol=1e-6, rtol=1e-6)
            names = [CLASS_NAMES[task][i] for i in expected["class_ids"]]
            self.assertEqual([r[len(header)] for r in out_rows], names)
        self.assertLen(self.warnings, 1)
        self.assertIn('"id", "note"', self.warnings[0])

    def test_column_names(self):
        self.assertEqual(predict.prediction_columns(self.served["regression"]), ["predicted_y"])
        self.assertEqual(
            predict.prediction_columns(self.served["binary"]), ["predicted_label", "probability_yes"]
        )
        self.assertEqual(
            predict.prediction_columns(self.served["multiclass"]),
            ["predicted_label", "probability_cat", "probability_dog", "probability_eel"],
        )

    def test_streams_in_batches(self):
        header, rows, _ = shuffled_rows(10)
        served = self.served["regression"]
        sizes = []
        real_predict = served.predict
        served.predict = lambda x: sizes.append(len(x)) or real_predict(x)
        try:
            self.predict("regression", header, rows, batch_size=4)
        finally:
            del served.predict
        self.assertEqual(sizes, [4, 4, 2])

    def test_no_warning_without_extra_columns(self):
        self.predict("regression", FEATURES, [[1, 2, 3]])
        self.assertEqual(self.warnings, [])

    def test_header_only_gives_header_only(self):
        text = self.predict("binary", FEATURES, [])
        self.assertEqual(text, "x1,x2,x3,predicted_label,probability_yes\n")
        self.assertEqual(
            self.warnings, [f"{self.dir}/in.csv: no data rows; the output holds the header only"]
        )

    def test_missing_columns_are_named(self):
        with self.assertRaisesRegex(data.DataError, r'in\.csv:1: missing column\(s\) "x1", "x3"'):
            self.predict("regression", ["x2", "other"], [[1, 2]])
        self.assertNoOutput()

    @parameterized.parameters(
        ("abc", 'expected a number, got "abc"'),
        ("", "expected a number, got an empty cell"),
        ("nan", "expected a finite float32 number"),
        ("1e39", "expected a finite float32 number"),
    )
    def test_bad_cell_names_file_line_and_column(self, cell, message):
        header, rows, _ = shuffled_rows(10)
        rows[8][3] = cell  # line 10 (header is line 1), field 4: "x1"; in the third batch
        with self.assertRaises(data.DataError) as raised:
            self.predict("multiclass", header, rows, batch_size=4)
        where = os.path.join(self.dir, "in.csv") + ':10:4 (column "x1"): '
        self.assertStartsWith(str(raised.exception), where + message)
        self.assertNoOutput()  # batches already predicted were never visible

    def test_ragged_row(self):
        with self.assertRaisesRegex(data.DataError, r"in\.csv:3: expected 3 fields as in the header, got 2"):
            self.predict("regression", FEATURES, [[1, 2, 3], [1, 2]])
        self.assertNoOutput()

    def test_line_numbers_count_blank_lines_and_multiline_cells(self):
        source = os.path.join(self.dir, "in.csv")
        with open(source, "w", encoding="utf-8") as handle:
            handle.write('note,x1,x2,x3\n\n"two\nlines",1,2,3\n\nok,1,x,3\n')
        with self.assertRaisesRegex(data.DataError, r'in\.csv:6:3 \(column "x2"\)'):
            predict.predict_csv(
                self.served["regression"],
                source,
                os.path.join(self.dir, "out.csv"),
                warn=self.warnings.append,
            )

    def test_prediction_column_clash(self):
        with self.assertRaisesRegex(data.DataError, r'"predicted_y" would be written as predictions'):
            self.predict("regression", FEATURES + ["predicted_y"], [[1, 2, 3, 4]])

    def test_not_an_export(self):
        with self.assertRaisesRegex(export.ExportError, r"not a SavedModel folder \(no saved_model.pb\)$"):
            served_lib.load_export(self.dir)
        run = os.path.join(self.dir, "run")  # a run folder, its export inside
        os.makedirs(run)
        os.symlink(self.served["regression"].path, os.path.join(run, "export"))
        with self.assertRaisesRegex(
            export.ExportError,
            f"not a SavedModel folder .*; a run folder\\? its export is {re.escape(run)}/export$",
        ):
            served_lib.load_export(run)
        missing = os.path.join(self.dir, "missing")
        with self.assertRaisesRegex(export.ExportError, f"^{re.escape(missing)}: no such folder"):
            served_lib.load_export(missing)

    def counting_predictions(self, task: str) -> list[int]:
        """Rows the served model of `task` is asked to predict during this test."""
        served, calls = self.served[task], []
        real_predict = served.predict
        served.predict = lambda x: calls.append(len(x)) or real_predict(x)
        self.addCleanup(delattr, served, "predict")
        return calls

    def test_an_existing_output_is_refused_before_scoring_unless_overwrite(self):
        output = os.path.join(self.dir, "out.csv")
        with open(output, "w", encoding="utf-8") as handle:
            handle.write("my results\n")
        calls = self.counting_predictions("regression")
        with self.assertRaisesRegex(
            predict.OutputError, r"out\.csv: already exists; pass overwrite=True \(--overwrite\)"
        ):
            self.predict("regression", FEATURES, [[1, 2, 3]])
        self.assertEqual(calls, [])  # refused before scoring
        with open(output, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "my results\n")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.csv", "out.csv"])
        text = self.predict("regression", FEATURES, [[1, 2, 3]], overwrite=True)
        self.assertStartsWith(text, "x1,x2,x3,predicted_y\n")
        self.assertEqual(calls, [1])

    def test_an_output_folder_is_refused_before_scoring(self):
        calls = self.counting_predictions("regression")
        source = write_csv(os.path.join(self.dir, "in.csv"), FEATURES, [[1, 2, 3]])
        for folder in (self.dir, os.path.join(self.dir, "new") + os.sep):  # a path ending in / too
            for overwrite in (False, True):
                with self.assertRaisesRegex(
                    predict.OutputError, r"is a folder; give the path of the CSV file"
                ):
                    predict.predict_csv(self.served["regression"], source, folder, overwrite=overwrite)
        self.assertEqual(calls, [])
        self.assertNoOutput()

    def test_an_output_that_cannot_be_made_is_an_input_error_unless_the_disk_is_full(self):
        source = write_csv(os.path.join(self.dir, "in.csv"), FEATURES, [[1, 2, 3]])
        missing = os.path.join(self.dir, "no", "out.csv")
        with self.assertRaisesRegex(data.DataError, r"no/out\.csv: cannot write the file \(No such file"):
            predict.predict_csv(self.served["regression"], source, missing)
        # A full disk is not the user's input: an OSError naming the output (the CLI exits 1).
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        output = os.path.join(self.dir, "out.csv")
        with mock.patch.object(predict.files, "atomic_text", side_effect=full):
            with self.assertRaises(OSError) as raised:
                predict.predict_csv(self.served["regression"], source, output)
        self.assertNotIsInstance(raised.exception, data.DataError)
        self.assertEqual((raised.exception.errno, raised.exception.filename), (errno.ENOSPC, output))
        self.assertNoOutput()

    def test_an_output_that_appears_while_scoring_is_not_replaced(self):
        output = os.path.join(self.dir, "out.csv")
        served = self.served["regression"]
        real_predict = served.predict

        def predict_then_collide(x):  # another program writes the output meanwhile
            with open(output, "w", encoding="utf-8") as handle:
                handle.write("theirs")
            return real_predict(x)

        served.predict = predict_then_collide
        self.addCleanup(delattr, served, "predict")
        with self.assertRaisesRegex(predict.OutputError, r"out\.csv: appeared while predicting"):
            self.predict("regression", FEATURES, [[1, 2, 3]])
        with open(output, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "theirs")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.csv", "out.csv"])  # no temporary left


class PredictCliTest(tf.test.TestCase):
    """tf-backprop-predict in a subprocess: exit codes and what reaches stdout and stderr."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="predict_cli_test-")
        cls.model = make_export(cls.folder, "multiclass")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()

    def run_predict(
        self, header: list[str], rows: list[list], *flags: str, existing: str | None = None, prepare=None
    ):
        """Runs the CLI on in.csv in a fresh folder (with out.csv holding `existing`, if given,
        and `prepare(folder)` called first, if given); returns (result, folder)."""
        cwd = self.create_tempdir().full_path
        write_csv(os.path.join(cwd, "in.csv"), header, rows)
        if existing is not None:
            with open(os.path.join(cwd, "out.csv"), "w", encoding="utf-8") as handle:
                handle.write(existing)
        if prepare is not None:
            prepare(cwd)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        args = [PREDICT, f"--model={self.model}", "--input=in.csv", *flags]
        return commands.run(args, cwd=cwd, env=env, timeout=TIMEOUT), cwd

    def test_shuffled_and_extra_columns_to_stdout(self):
        header, rows, x = shuffled_rows(6)
        result, _ = self.run_predict(header, rows)
        self.assertEqual(result.returncode, 0, result.stderr)
        (line,) = result.stderr.strip().splitlines()  # exactly one line: the warning
        self.assertEqual(
            line,
            'tf-backprop-predict: warning: in.csv: copying column(s) "id", "note" through unchanged '
            "(not features of the model)",
        )
        out_header, out_rows = read_csv(result.stdout)
        served = served_lib.load_export(self.model)
        expected = served.predict(x)
        self.assertEqual(out_header, header + predict.prediction_columns(served))
        self.assertEqual(
            [r[-4] for r in out_rows], [CLASS_NAMES["multiclass"][i] for i in expected["class_ids"]]
        )
        probabilities = np.array([r[-3:] for r in out_rows], dtype=np.float32)
        self.assertAllClose(probabilities, expected["probabilities"], atol=1e-6, rtol=1e-6)

    def test_missing_column_exits_2_with_one_line(self):
        result, cwd = self.run_predict(["x1", "x3"], [[1, 2]], "--output=out.csv")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr.strip(),
            'tf-backprop-predict: error: in.csv:1: missing column(s) "x2" that the model needs '
            '(its features: "x1", "x2", "x3")',
        )
        self.assertEqual(os.listdir(cwd), ["in.csv"])

    def test_a_glob_input_predicts_every_shard_under_one_header(self):
        cwd = self.create_tempdir().full_path
        header, rows, x = shuffled_rows(6)
        write_csv(os.path.join(cwd, "part-1.csv"), header, rows[:4])
        write_csv(os.path.join(cwd, "part-2.csv"), header, rows[4:])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        args = [PREDICT, f"--model={self.model}", "--input=part-*.csv", "--output=out.csv"]
        result = commands.run(args, cwd=cwd, env=env, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(cwd, "out.csv")) as handle:
            out_header, out_rows = read_csv(handle.read())
        served = served_lib.load_export(self.model)
        self.assertEqual(out_header, header + predict.prediction_columns(served))
        self.assertEqual([r[0] for r in out_rows], [str(i) for i in range(6)])
        expected = served.predict(x)["class_ids"]
        self.assertEqual([r[-4] for r in out_rows], [CLASS_NAMES["multiclass"][i] for i in expected])

    def test_a_killed_runs_hidden_file_is_removed_by_the_next_run(self):
        # What SIGKILL leaves beside --output (nothing could remove it then): an hour old, no
        # writer holding its lock.  The next run writing the same file removes it.
        import time

        def plant_leftover(cwd: str) -> None:
            leftover = os.path.join(cwd, ".out.csv.tmp-0123456789ab")
            with open(leftover, "w", encoding="utf-8") as handle:
                handle.write("id,x3\n0,")
            stamp = time.time() - 3600
            os.utime(leftover, (stamp, stamp))

        header, rows, _ = shuffled_rows(6)
        result, cwd = self.run_predict(header, rows, "--output=out.csv", prepare=plant_leftover)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertCountEqual(os.listdir(cwd), ["in.csv", "out.csv"])

    def test_a_gz_output_is_gzip_and_reads_back(self):
        header, rows, _ = shuffled_rows(6)
        plain, _ = self.run_predict(header, rows)
        result, cwd = self.run_predict(header, rows, "--output=out.csv.gz")
        self.assertEqual(result.returncode, 0, result.stderr)
        with gzip.open(os.path.join(cwd, "out.csv.gz"), "rt", encoding="utf-8", newline="") as handle:
            self.assertEqual(handle.read(), plain.stdout)  # was plain text under a .gz name

    def test_a_reader_that_leaves_early_ends_it_quietly(self):
        # `tf-backprop-predict ... | head -1`: once head exits, writing stdout fails with EPIPE.
        import subprocess

        cwd = self.create_tempdir().full_path
        rng = np.random.default_rng(0)
        write_csv(os.path.join(cwd, "in.csv"), FEATURES, rng.standard_normal((20000, len(FEATURES))).tolist())
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        args = [PREDICT, f"--model={self.model}", "--input=in.csv", "--batch_size=1000"]
        with subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            self.assertTrue(process.stdout.readline().startswith(b"x1,"))
            process.stdout.close()  # the reader leaves, as head does, long before the 20,000 rows
            _, stderr = process.communicate(timeout=TIMEOUT)
        self.assertEqual(process.returncode, 141, stderr)  # as a filter killed by SIGPIPE
        self.assertEqual(stderr.decode(), "")

    def test_bad_cell_exits_2_naming_file_line_and_column(self):
        result, cwd = self.run_predict(["x2", "x1", "x3"], [[1, 2, 3], [4, "oops", 6]], "--output=out.csv")
        self.assertEqual(result.returncode, 2)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            'tf-backprop-predict: error: in.csv:3:2 (column "x1"): expected a number, got "oops"',
        )
        self.assertEqual(os.listdir(cwd), ["in.csv"])

    def test_existing_output_exits_2_unless_overwrite(self):
        result, cwd = self.run_predict(FEATURES, [[1, 2, 3]], "--output=out.csv", existing="mine\n")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-predict: error: out.csv: already exists; pass overwrite=True (--overwrite) to replace it",
        )
        with open(os.path.join(cwd, "out.csv"), encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "mine\n")
        result, cwd = self.run_predict(
            FEATURES, [[1, 2, 3]], "--output=out.csv", "--overwrite", existing="mine\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(cwd, "out.csv"), encoding="utf-8") as handle:
            self.assertStartsWith(handle.read(), "x1,x2,x3,predicted_label,")
        self.assertEqual(sorted(os.listdir(cwd)), ["in.csv", "out.csv"])

    def test_sigterm_midway_leaves_no_hidden_file_and_the_old_output(self):
        """SIGTERM left a hidden half-written .out.csv.tmp-* that nothing removed (review); now
        it ends like Ctrl-C: one line, exit 143, the old file kept, nothing else written."""
        import subprocess

        cwd = self.create_tempdir().full_path
        header, rows, _ = shuffled_rows(50)
        write_csv(os.path.join(cwd, "in.csv"), header, rows)
        with open(os.path.join(cwd, "out.csv"), "w", encoding="utf-8") as handle:
            handle.write("mine\n")
        # The CLI as its console script runs it, terminated by itself after its first batch.
        script = (
            "import os, signal, sys\n"
            "from tf_backprop.serving import predict\n"
            "cells = predict._prediction_cells\n"
            "calls = []\n"
            "def terminated_after_one(*args):\n"
            "    calls.append(1)\n"
            "    if len(calls) == 2:\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return cells(*args)\n"
            "predict._prediction_cells = terminated_after_one\n"
            "from tf_backprop.cli import predict as cli\n"
            "sys.argv = ['tf-backprop-predict', *sys.argv[1:]]\n"
            "cli.run()\n"
        )
        args = [
            f"--model={self.model}",
            "--input=in.csv",
            "--output=out.csv",
            "--overwrite",
            "--batch_size=10",
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        self.assertEqual(result.returncode, 143, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],  # after the warning about the extra columns
            "tf-backprop-predict: error: SIGTERM: stopped; no output was replaced or left half-written "
            "(each is written whole)",
        )
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(sorted(os.listdir(cwd)), ["in.csv", "out.csv"])
        with open(os.path.join(cwd, "out.csv"), encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "mine\n")

    def test_output_folder_exits_2_with_one_line(self):
        result, cwd = self.run_predict(FEATURES, [[1, 2, 3]], "--output=.")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-predict: error: .: is a folder; give the path of the CSV file to write",
        )
        self.assertEqual(os.listdir(cwd), ["in.csv"])

    def test_a_missing_required_flag_is_named(self):
        cwd = self.create_tempdir().full_path
        result = commands.run([PREDICT], cwd=cwd, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr, "tf-backprop-predict: error: flags --model and --input are required\n"
        )
        args = [PREDICT, f"--model={self.model}"]
        # Fresh: the one line alone where the command imports TensorFlow itself (commands.run).
        result = commands.run(args, cwd=cwd, timeout=TIMEOUT, fresh=True)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stderr.strip(), "tf-backprop-predict: error: flag --input is required")
        result = commands.run([*args, "--input="], cwd=cwd, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-predict: error: flag --input=: expected a CSV path, a glob pattern, or - for "
            "stdin, got nothing",
        )
        # An empty --output said ": appeared while predicting; pass overwrite=True" (review).
        result = commands.run([*args, "--input=x.csv", "--output="], cwd=cwd, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-predict: error: flag --output=: expected a file path, or - for stdout, got nothing",
        )
