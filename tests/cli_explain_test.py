"""tf-backprop-explain as a subprocess: the library's output, --workdir, files, one-line errors."""

import json
import os
import subprocess
import sys

import commands
import numpy as np
import tensorflow as tf
from explain_examples import DEFAULT_TITLE, default_trace
from training_runs import small_config

from tf_backprop import data as data_lib
from tf_backprop import training
from tf_backprop.explaining import render, svg

TIMEOUT = 180  # seconds; a run takes a few (mostly importing TensorFlow)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags: str, cwd: str, fresh: bool = False) -> subprocess.CompletedProcess:
    """The command, forked from a warm interpreter unless `fresh` (commands.run)."""
    command = [sys.executable, "-m", "tf_backprop.cli.explain", *flags]
    return commands.run(command, cwd=cwd, timeout=TIMEOUT, fresh=fresh)


class ExplainCliTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.cwd = self.get_temp_dir()

    def test_default_is_the_article_net_as_the_library_renders_it(self):
        result = _run(cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, render.to_text(default_trace(), DEFAULT_TITLE))
        self.assertNotIn("Traceback", result.stderr)

    def test_svg_output_file_is_the_committed_picture(self):
        result = _run("--format=svg", "--output=net.svg", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "")
        with open(os.path.join(self.cwd, "net.svg"), encoding="utf-8") as handle:
            drawn = handle.read()
        self.assertEqual(drawn, svg.render(default_trace(), DEFAULT_TITLE))
        with open(os.path.join(ROOT, "docs", "article_net.svg"), encoding="utf-8") as handle:
            self.assertEqual(drawn, handle.read())
        self.assertEqual([n for n in os.listdir(self.cwd) if n.startswith(".")], [])  # no temporary left

    def test_an_existing_output_is_replaced_only_with_overwrite(self):
        path = os.path.join(self.cwd, "mine.svg")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("my own picture")
        result = _run("--format=svg", "--output=mine.svg", cwd=self.cwd)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip(),
            "tf-backprop-explain: error: --output: mine.svg already exists; pass --overwrite to replace it",
        )
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "my own picture")
        result = _run("--format=svg", "--output=mine.svg", "--overwrite", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), svg.render(default_trace(), DEFAULT_TITLE))

    def test_json_and_markdown_of_a_given_sample(self):
        result = _run("--x=0.5,-1.2", "--y=0.3", "--seed=0", "--format=json", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, result.stderr)
        data = json.loads(result.stdout)
        self.assertEqual((data["x"], data["y"]), ([[0.5, -1.2]], [[0.3]]))
        self.assertLess(data["layers"][2]["terms"][0]["value"][0][0], 0)  # this seed's output is off
        self.assertIn("the output unit is off", data["errata"][0]["notes"][0])
        result = _run(
            "--layers=3,4,2", "--loss=mse", "--output_activation=linear", "--format=md", cwd=self.cwd
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.count("| term | formula | value | tape |"), 2)
        self.assertNotIn("errata", result.stdout)

    def test_bad_flags_exit_2_with_one_line(self):
        with open(os.path.join(self.cwd, "mine.txt"), "w", encoding="utf-8") as handle:
            handle.write("not a run folder")
        cases = {
            ("--x=1,abc",): "--x: expected comma-separated finite numbers like 0.5,-1.2, got '1,abc'",
            ("--x=1,2,3",): "--x: expected 2 numbers (the net's inputs), got 3",
            ("--y=1,2",): "error: --y: one sample takes 1 target(s) (one per output), got shape [2]",
            ("--layers=2,3,2", "--output_activation=linear", "--y=1"): "--y: one sample takes 2 target(s)",
            ("--seed=-1",): "error: --seed: expected a non-negative integer, got -1",
            ("--initializer=nope",): "error: --initializer: unknown name 'nope'",
            ("--dtype=float16",): "error: flag --dtype: expected one of float32, float64, got 'float16'",
            ("--l2=-1",): "error: --l2: expected a finite number ≥ 0",
            ("--l2=inf",): "error: --l2: expected a finite number ≥ 0, got inf",
            ("--workdir=",): "error: flag --workdir=: expected a run folder, got nothing",
            ("--workdir= ",): "error: flag --workdir= : expected a run folder, got nothing",
            ("--y=1e308",): "x, y: the loss L is not finite in float64 (the pass overflows)",
            ("--row=1",): "--row: only with --workdir",
            ("--layers=2,4,1", "--errata=on"): "error: --errata: the article's errata do not apply here",
            ("--activation=nope",): "error: --activation: unknown name 'nope'",
            ("--layers=2",): "error: --layers: expected at least 2 sizes",  # not layer_sizes
            ("--loss=nope",): "--loss",
            ("--workdir=missing",): "config.json: not found",
            ("--workdir=missing", "--layers=2,3,1"): "--layers: only without --workdir",
            ("--format=svg", "--output=no/such/dir/net.svg"): "--output: cannot write no/such/dir/net.svg",
            ("--output=.",): "--output: . is a folder; give the path of the file to write",
            ("--output=adir/",): "--output: adir/ is a folder; give the path of the file to write",
            ("--workdir=mine.txt",): "mine.txt: is a file, not a run folder",
        }
        for index, (flags, expected) in enumerate(cases.items()):
            with self.subTest(flags=flags):
                result = _run(*flags, cwd=self.cwd, fresh=index == 0)  # one where TensorFlow imports
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(result.stdout, "")
                lines = result.stderr.strip().splitlines()
                self.assertLen(lines, 1, result.stderr)
                self.assertIn(expected, lines[0])
                self.assertTrue(lines[0].startswith("tf-backprop-explain: error: "), lines[0])

    def test_a_full_disk_at_output_is_a_failure_in_one_line(self):
        # The write of --output fails as on a full disk (the OSError names no file): exit 1, one
        # line naming the output, no file left; not a usage error.
        script = (
            "import contextlib, errno, sys\n"
            "from tf_backprop import files\n"
            "class Full:\n"
            "    def write(self, text):\n"
            "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "@contextlib.contextmanager\n"
            "def full(temporary, path, compress):\n"
            "    yield Full()\n"
            "files._open_text = full\n"
            "from tf_backprop.cli import explain\n"
            "sys.argv = ['tf-backprop-explain', '--format=svg', '--output=net.svg']\n"
            "explain.run()\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=self.cwd, capture_output=True, text=True, timeout=TIMEOUT
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertLen(lines, 1, result.stderr)
        self.assertEqual(lines[0], "tf-backprop-explain: error: net.svg: No space left on device")
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "net.svg")))


class WorkdirTest(tf.test.TestCase):
    """--workdir explains a trained run's model on one row of its data, standardized as in training."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = os.path.join(tf.compat.v1.test.get_temp_dir(), "explain-run")
        config = small_config(cls.workdir, epochs=1, n_samples=200, export=False)
        cls.result = training.train(config)

    def test_a_row_of_the_test_split(self):
        result = _run(f"--workdir={self.workdir}", "--row=2", "--format=json", cwd=self.get_temp_dir())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")  # not the data loader's INFO line (review)
        data = json.loads(result.stdout)
        self.assertEqual(
            data["title"], f"{self.workdir}: test split, row 2 (x and y standardized as in training)"
        )
        test = self.result.datasets.test
        self.assertAllEqual(data["x"], test.x[2:3])  # standardized, as training saw it
        self.assertAllEqual(data["y"], test.y[2:3])
        self.assertEqual(data["net"]["dtype"], "float64")  # the float32 weights, converted exactly
        kernel = self.result.model.kernels[0].numpy().astype(np.float64)
        self.assertAllEqual(data["layers"][0]["kernel"], kernel)
        self.assertTrue(data["tape_check"]["agreed"])
        self.assertEqual(data["net"]["activations"], ["relu", "relu", "linear"])

    def test_run_sample_errors(self):
        with self.assertRaisesRegex(
            ValueError, r"row: expected an integer in \[0, 20\) \(the test split's rows\)"
        ):
            training.run_sample(self.workdir, row=20)
        with self.assertRaisesRegex(ValueError, "split: expected one of test, validation, train"):
            training.run_sample(self.workdir, split="nope")
        sample = training.run_sample(self.workdir, row=0, split="train")
        self.assertAllEqual(sample.x, self.result.datasets.train.x[:1])
        self.assertEqual(sample.loss.name, "mse")
        result = _run(f"--workdir={self.workdir}", "--row=99", cwd=self.get_temp_dir())
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("row: expected an integer in [0, 20)", result.stderr)

    def test_a_classification_row_names_its_class(self):
        # The trace shows y as the class id the loss takes (y = [1]); the title names the class.
        folder = self.create_tempdir().full_path
        rows = np.random.default_rng(1).uniform(-1, 1, (60, 2))
        path = os.path.join(folder, "pets.csv")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(
                "a,b,pet\n" + "".join(f"{a!r},{b!r},{'cat' if a > b else 'dog'}\n" for a, b in rows.tolist())
            )
        workdir = os.path.join(folder, "run")
        training.train(small_config(workdir, data=f"csv:{path}", target="pet", epochs=1, export=False))
        sample = training.run_sample(workdir, row=0)
        expected = "cat" if int(np.asarray(sample.y).reshape(-1)[0]) == 0 else "dog"
        self.assertEqual(
            sample.description,
            f'{workdir}: test split, row 0, class "{expected}" (x standardized as in training)',
        )

    def test_a_relative_data_path_is_relative_to_where_the_run_trained(self):
        folder = self.create_tempdir().full_path
        rows = np.random.default_rng(0).uniform(-1, 1, (60, 2))
        with open(os.path.join(folder, "d.csv"), "w", encoding="utf-8") as handle:
            handle.write("a,b,y\n" + "".join(f"{a!r},{b!r},{a - b!r}\n" for a, b in rows.tolist()))
        previous = os.getcwd()
        os.chdir(folder)
        try:
            cfg = small_config("run", data="csv:d.csv", target="y", epochs=1, export=False)
            training.train(cfg, progress=False)
            self.assertLen(training.run_sample("run").x, 1)  # from the folder it trained in
        finally:
            os.chdir(previous)
        with self.assertRaisesRegex(
            data_lib.DataError,
            r"^d\.csv: cannot read the file \(No such file or directory\): the run's data, as \S+/run/"
            r"config\.json names it, relative to the folder it was trained in; run from that folder, or "
            r"put the data back$",
        ):
            training.run_sample(os.path.join(folder, "run"))


if __name__ == "__main__":
    tf.test.main()
