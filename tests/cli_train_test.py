"""End-to-end tests of tf-backprop-train, run in a subprocess as a user would run it.

Most runs are forked from an interpreter that has imported TensorFlow (commands.run); the
tests of what a fresh process prints or leaves run fresh.  Training runs are kept to a few
dozen steps.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import commands
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop.training import config as config_lib

_TIMEOUT = 120  # seconds per run; the slowest here takes ~6 s alone, ~20 s on a busy machine
_TINY = ("--epochs=2", "--n_samples=200")  # 32 steps on the default 2-3-3-1 regression
_REGRESSION_METRICS = ("loss", "rmse", "mae")
# absl's log lines (I1126 15:09:26.080638 ... file.py:702] ...), as INFO progress on stderr.
_ABSL_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def _env() -> dict[str, str]:
    """The caller's environment without the switches that change what the CLI prints."""
    env = dict(os.environ)
    env.pop("TF_BACKPROP_VERBOSE_TF", None)  # would let TensorFlow's import chatter through
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet TensorFlow on its own
    return env


def _run(*flags: str, cwd: str, fresh: bool = False, **environ: str) -> subprocess.CompletedProcess:
    """Runs `python -m tf_backprop.cli.train FLAGS` in `cwd` (with `environ` added to the
    environment; forked from a warm interpreter unless `fresh`: commands.run); never raises on
    a non-zero exit."""
    return _python("-m", "tf_backprop.cli.train", *flags, cwd=cwd, fresh=fresh, **environ)


def _python(*args: str, cwd: str, fresh: bool = False, **environ: str) -> subprocess.CompletedProcess:
    """Runs `python ARGS` in `cwd` as `_run` does."""
    env = {**_env(), **environ}
    return commands.run([sys.executable, *args], cwd=cwd, env=env, timeout=_TIMEOUT, fresh=fresh)


def _describe(result: subprocess.CompletedProcess) -> str:
    """The run's exit code and output, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"


def _read_json(*path: str):
    """The parsed JSON file at os.path.join(*path)."""
    with open(os.path.join(*path), encoding="utf-8") as handle:
        return json.load(handle)


def _write(directory: str, name: str, text: str) -> str:
    """Writes `text` to directory/name and returns `name` (the path relative to `directory`)."""
    with open(os.path.join(directory, name), "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return name


def _expected_config(preset: str = "default", **flags) -> dict:
    """config.json as it should be written for `flags` given over `preset`: the run-folder
    marker, then every field."""
    return {
        "format": "tf_backprop.run",
        "format_version": 2,
        **config_lib.from_preset(preset, **flags).to_dict(),
    }


class CliTestCase(tf.test.TestCase, parameterized.TestCase):
    """Runs the CLI in a fresh temporary directory and checks its exit code and output."""

    def setUp(self):
        super().setUp()
        self.cwd = self.create_tempdir().full_path

    def run_ok(self, *flags: str, fresh: bool = False) -> subprocess.CompletedProcess:
        """Runs the CLI in self.cwd and asserts it succeeded without a traceback."""
        result = _run(*flags, cwd=self.cwd, fresh=fresh)
        self.assertEqual(result.returncode, 0, _describe(result))
        self.assert_no_traceback(result)
        return result

    def run_json(self, *flags: str) -> dict:
        """Runs the CLI with --json; returns the one JSON line it printed on stdout."""
        result = self.run_ok(*flags, "--json")
        lines = result.stdout.splitlines()
        self.assertLen(lines, 1, _describe(result))
        return json.loads(lines[0])

    def run_failing(
        self, *flags: str, code: int, log_lines: bool = False, fresh: bool = False, **environ: str
    ) -> str:
        """Runs the CLI, asserts exit `code` and a one-line error on stderr; returns that line.

        log_lines: allow absl INFO progress lines (logged before training starts) above the
        error line, which must then be the last line.
        """
        result = _run(*flags, cwd=self.cwd, fresh=fresh, **environ)
        self.assertEqual(result.returncode, code, _describe(result))
        self.assert_no_traceback(result)
        self.assertEqual(result.stdout, "", _describe(result))
        lines = result.stderr.splitlines()
        if log_lines:
            for line in lines[:-1]:
                self.assertRegex(line, _ABSL_LOG_LINE, _describe(result))
            lines = lines[-1:]
        self.assertLen(lines, 1, _describe(result))
        self.assertRegex(lines[0], r"^\S+: error: \S", _describe(result))
        return lines[0]

    def assert_no_traceback(self, result: subprocess.CompletedProcess) -> None:
        """Neither stream shows a Python traceback."""
        self.assertNotIn("Traceback", result.stderr, _describe(result))
        self.assertNotIn("Traceback", result.stdout, _describe(result))

    def assert_names(self, line: str, *names: str) -> None:
        """Each name appears in `line` as a whole word ('layer_sizes' does not name 'layers')."""
        for name in names:
            self.assertRegex(line, rf"(?<!\w){re.escape(name)}(?!\w)")

    def assert_finite_metrics(self, metrics: dict, names) -> None:
        """metrics holds every name, each a finite number."""
        for name in names:
            self.assertIn(name, metrics)
            self.assertTrue(math.isfinite(metrics[name]), f"{name}={metrics[name]}")


class EndToEndTest(CliTestCase):
    """Successful runs: outputs on stdout and in the workdir, both gradient sources, presets."""

    def test_default_run_writes_its_workdir(self):
        workdir = os.path.join(self.cwd, "run")
        result = self.run_ok(*_TINY, "--grad_source=tape", f"--workdir={workdir}", fresh=True)
        self.assertIn(workdir, result.stdout)
        for line in result.stderr.splitlines():  # no start-up line of TensorFlow's, as imported
            self.assertRegex(line, _ABSL_LOG_LINE, _describe(result))
        self.assertEqual(
            _read_json(workdir, "config.json"),
            _expected_config(epochs=2, n_samples=200, grad_source="tape", workdir=workdir),
        )
        data = _read_json(workdir, "data.json")
        self.assertEqual(data["task"], "regression")
        self.assertEqual(data["feature_names"], ["x1", "x2"])
        metrics = _read_json(workdir, "metrics.json")
        self.assertLen(metrics["history"], 2)
        for record in metrics["history"]:
            names = (*_REGRESSION_METRICS, *(f"val_{name}" for name in _REGRESSION_METRICS))
            self.assert_finite_metrics(record, names)
        self.assertEqual(metrics["final"]["split"], "test")
        self.assert_finite_metrics(metrics["final"], _REGRESSION_METRICS)
        self.assertIn(f"trained {metrics['steps']} steps", result.stdout)
        # The log holds the run's own lines: no TensorFlow-internal INFO (checkpoint sharding,
        # SavedModel builder) unless --verbosity asks for it.
        for internal in ("Sharding callback", "Assets written", "fingerprint", "unsupported characters"):
            self.assertNotIn(internal, result.stderr)
        self.assertIn("exported SavedModel", result.stderr)

    def test_leaves_nothing_in_the_temp_folder(self):
        """AutoGraph's generated sources go with the process, though the CLI skips atexit."""
        temp = self.create_tempdir().full_path
        result = _run(*_TINY, "--grad_source=manual", "--workdir=run", cwd=self.cwd, fresh=True, TMPDIR=temp)
        self.assertEqual(result.returncode, 0, _describe(result))
        self.assertEqual(os.listdir(temp), [])

    def test_flags_without_effect_are_named(self):
        result = _run(*_TINY, "--momentum=0.5", "--norestore_best", "--workdir=run", cwd=self.cwd)
        self.assertEqual(result.returncode, 0, _describe(result))
        self.assertRegex(result.stderr, r"flag --momentum has no effect: optimizer 'adam' takes none")
        self.assertRegex(result.stderr, r"flag --restore_best has no effect: there is no early stopping")
        self.assertNotIn("--epochs has no effect", result.stderr)

    def test_verbosity_shows_tensorflow_lines(self):
        result = self.run_ok(*_TINY, "--verbosity=0", f"--workdir={os.path.join(self.cwd, 'run')}")
        self.assertIn("Sharding callback", result.stderr)

    def test_flagfile_manual_gradients_classification_default_workdir(self):
        """--flagfile, --grad_source=manual, xor with cross-entropy, and ./runs/<stamp>."""
        flagfile = _write(
            self.cwd,
            "xor.flags",
            "# a comment line\n--grad_source=manual\n--data=xor\n--loss=binary_crossentropy\n"
            "--epochs=2\n--n_samples=200\n",
        )
        final = self.run_json(f"--flagfile={flagfile}")
        runs = os.path.realpath(os.path.join(self.cwd, "runs"))
        self.assertEqual(os.path.dirname(os.path.realpath(final["workdir"])), runs)
        self.assertEqual(
            _read_json(final["workdir"], "config.json"),
            _expected_config(
                grad_source="manual", data="xor", loss="binary_crossentropy", epochs=2, n_samples=200
            ),
        )
        self.assertEqual(final["split"], "test")
        self.assertBetween(final["accuracy"], 0.0, 1.0)
        self.assertTrue(math.isfinite(final["loss"]))
        saved = _read_json(final["workdir"], "metrics.json")["final"]
        self.assertEqual({name: final.get(name) for name in saved}, saved)  # --json = metrics.json

    def test_article_preset_cannot_learn(self):
        """The article's TF1 loop: ReLU output on random targets stays at loss ≈ E[y²]/2 = 1/6."""
        final = self.run_json("--preset=article", "--workdir=article")
        workdir = os.path.join(self.cwd, "article")
        self.assertEqual(os.path.realpath(final["workdir"]), os.path.realpath(workdir))
        self.assertEqual(_read_json(workdir, "config.json"), _expected_config("article", workdir="article"))
        self.assertEqual(final["steps"], 1000)
        self.assertEqual(final["split"], "train")  # the article holds no data out
        self.assertGreater(final["loss"], 0.1)
        self.assertNear(final["loss"], 1 / 6, 0.01)


class CsvTest(CliTestCase):
    """CSV sources: valid files train; bad files exit 2 naming file, line and column."""

    def test_numeric_target_trains_regression(self):
        rows = [f"{i / 10:g},{(3 * i / 10 - (i % 7)) + 0.5:g},{i % 7}" for i in range(50)]
        path = _write(self.cwd, "houses.csv", "x1,price,x2\n" + "\n".join(rows) + "\n")
        self.run_ok(f"--data=csv:{path}", "--target=price", "--epochs=2", "--workdir=run")
        data = _read_json(self.cwd, "run", "data.json")
        self.assertEqual(data["task"], "regression")
        self.assertEqual(data["feature_names"], ["x1", "x2"])
        self.assertEqual(data["target_name"], "price")
        self.assert_finite_metrics(_read_json(self.cwd, "run", "metrics.json")["final"], _REGRESSION_METRICS)

    def test_string_target_trains_classification(self):
        colours = ("red", "green", "blue")
        rows = [f"{i % 5},{i % 3 + 0.5 * (i % 2)},{colours[i % 3]}" for i in range(60)]
        path = _write(self.cwd, "colours.csv", "x1,x2,colour\n" + "\n".join(rows) + "\n")
        final = self.run_json(f"--data=csv:{path}", "--target=colour", "--epochs=2", "--workdir=run")
        self.assertBetween(final["accuracy"], 0.0, 1.0)
        self.assertNotIn("rmse", final)
        data = _read_json(self.cwd, "run", "data.json")
        self.assertEqual(data["task"], "multiclass")
        self.assertEqual(data["class_names"], ["blue", "green", "red"])

    @parameterized.named_parameters(
        ("missing_file", None, ["missing.csv"]),
        ("empty_file", "", ["bad.csv", "empty"]),
        ("header_only", "x1,x2,y\n", ["bad.csv:1"]),
        ("non_numeric_feature", "x1,x2,y\n1,2,3\n4,abc,6\n", ['bad.csv:3:2 (column "x2")', '"abc"']),
        ("nan_feature", "x1,x2,y\n1,2,3\n4,5,6\nnan,2,3\n", ['bad.csv:4:1 (column "x1")', "nan"]),
        ("inf_feature", "x1,x2,y\n1,2,3\n4,inf,6\n", ['bad.csv:3:2 (column "x2")', "inf"]),
        ("ragged_row", "x1,x2,y\n1,2,3\n4,5\n7,8,9\n", ["bad.csv:3", "3 fields"]),
        ("missing_target_column", "x1,x2,label\n1,2,3\n", ["bad.csv:1", '"y"']),
        ("single_class", "x1,x2,y\n1,2,cat\n3,4,cat\n5,6,cat\n", ['bad.csv (column "y")', "2 classes"]),
    )
    def test_bad_csv_exits_2_naming_the_place(self, text, fragments):
        """One line on stderr, naming the file and, where there is one, line and column."""
        if text is not None:
            _write(self.cwd, "bad.csv", text)
        source = "missing.csv" if text is None else "bad.csv"
        line = self.run_failing(f"--data=csv:{source}", "--target=y", "--epochs=2", code=2)
        for fragment in fragments:
            self.assertIn(fragment, line)
        self.assertNotIn("runs", os.listdir(self.cwd))  # nothing trained, no run folder

    def test_csv_without_target_exits_2(self):
        path = _write(self.cwd, "x.csv", "x1,y\n1,2\n3,4\n")
        line = self.run_failing(f"--data=csv:{path}", code=2)
        self.assertRegex(line, r"--target|\btarget\b")


class BadFlagTest(CliTestCase):
    """Out-of-range or inconsistent flags exit 2 with one line naming the flag."""

    @parameterized.named_parameters(
        ("learning_rate_zero", ["--learning_rate=0"], ["learning_rate"]),
        ("learning_rate_negative", ["--learning_rate=-1"], ["learning_rate"]),
        ("batch_size_zero", ["--batch_size=0"], ["batch_size"]),
        ("val_split_above_one", ["--val_split=1.2"], ["val_split"]),
        ("splits_leave_no_train", ["--val_split=0.6", "--test_split=0.5"], ["val_split", "test_split"]),
        ("unknown_optimizer", ["--optimizer=nope"], ["optimizer", "nope"]),
        ("unknown_activation", ["--activation=nope"], ["activation", "nope"]),
        ("unknown_loss", ["--loss=nope"], ["loss", "nope"]),
        ("layers_not_integers", ["--layers=2,x"], ["layers"]),
        ("layers_zero_width", ["--layers=2,0,1"], ["layers"]),
        ("epochs_and_steps", ["--epochs=2", "--steps=5"], ["epochs", "steps"]),
        ("layers_contradict_hidden", ["--layers=2,3,1", "--hidden=4"], ["layers", "hidden"]),
        ("two_clipping_modes", ["--clip_norm=1", "--clip_value=1"], ["clip_norm", "clip_value"]),
        ("positional_argument", ["--epochs=2", "extra"], ["extra"]),
        ("workdir_empty", ["--workdir="], ["workdir"]),  # not the current folder
    )
    def test_bad_flag_exits_2(self, flags, names):
        line = self.run_failing(*flags, code=2)
        self.assert_names(line, *names)
        self.assertEmpty(os.listdir(self.cwd))  # rejected before any run folder is made

    def test_a_bad_flag_in_a_fresh_process_is_one_line(self):
        """The line alone where the process imports TensorFlow itself (the tests above fork one
        that has: commands.run)."""
        line = self.run_failing("--batch_size=0", code=2, fresh=True)
        self.assert_names(line, "batch_size")

    def test_an_unparsable_flag_value_says_what_was_expected(self):
        # absl's own words would be Python's: "invalid literal for int() with base 10: 'abc'".
        for flag, line in (
            ("--batch_size=abc", "flag --batch_size: expected an integer, got 'abc'"),
            ("--learning_rate=fast", "flag --learning_rate: expected a number, got 'fast'"),
            ("--stream=maybe", "flag --stream: expected true or false, got 'maybe'"),
            ("--flagfile=nope.flags", "flag --flagfile: cannot read nope.flags (No such file or directory)"),
            (
                "--hidden=3,,3",
                "--hidden: expected comma-separated integers like 64,64, got '3,,3'",
            ),  # not 2,3,3,1
            ("--layers=2,x,1", "--layers: expected comma-separated integers like 2,3,3,1, got '2,x,1'"),
            (
                "--optimizer=Adam",  # absl: "value should be one of <sgd|momentum|...>"
                "flag --optimizer: expected one of sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad, "
                "got 'Adam'",
            ),
        ):
            with self.subTest(flag=flag):
                self.assertEqual(self.run_failing(flag, code=2), f"tf-backprop-train: error: {line}")

    def test_layers_that_do_not_fit_the_data_exit_2_writing_nothing(self):
        """Found once the data is loaded, but before config.json, which would block a fixed rerun."""
        line = self.run_failing("--layers=3,3,1", *_TINY, "--workdir=run", code=2, log_lines=True)
        self.assert_names(line, "layers")
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "run", "config.json")))

    def test_a_batch_that_does_not_split_among_the_replicas_exits_2_naming_both_numbers(self):
        flags = ("--strategy=mirrored", "--cpu_replicas=2", "--batch_size=15", *_TINY, "--workdir=run")
        line = self.run_failing(*flags, code=2, log_lines=True)
        self.assertIn(
            "batch_size: the global batch of 15 rows does not split evenly among the 2 replicas", line
        )
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "run", "config.json")))

    def test_a_malformed_tf_config_is_named_before_a_missing_workdir(self):
        line = self.run_failing("--strategy=multi_worker", code=2, TF_CONFIG="{not json")
        self.assertIn("TF_CONFIG: not valid JSON", line)
        self.assertNotIn("workdir", line)

    def test_a_worker_port_already_taken_exits_2_naming_it(self):
        """TensorFlow's 'Could not start gRPC server' came as a traceback (review)."""
        import json
        import socket

        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            taken = f"127.0.0.1:{other.getsockname()[1]}"
            tf_config = {
                "cluster": {"worker": [taken, "127.0.0.1:1"]},
                "task": {"type": "worker", "index": 0},
            }
            line = self.run_failing(
                "--strategy=multi_worker",
                *_TINY,
                "--workdir=run",
                code=2,
                log_lines=True,
                TF_CONFIG=json.dumps(tf_config),
            )
        self.assertIn(f"TF_CONFIG: this task's address {taken} (worker 0) cannot be served", line)

    def test_gpu_without_gpu_exits_2(self):
        if tf.config.list_physical_devices("GPU"):
            self.skipTest("this machine has a GPU")
        line = self.run_failing("--device=gpu", *_TINY, code=2)
        self.assert_names(line, "device", "GPU")
        self.assertEmpty(os.listdir(self.cwd))


class DivergenceTest(CliTestCase):
    """A non-finite loss stops the run with exit 1 and leaves the workdir's config intact."""

    def test_non_finite_loss_exits_1(self):
        # Plain SGD at lr 1e6 overflows float32 within the first few steps on the default task.
        flags = ("--optimizer=sgd", "--learning_rate=1e6", "--epochs=3", "--n_samples=200")
        line = self.run_failing(*flags, "--workdir=run", code=1, log_lines=True)
        self.assertRegex(line, r"\bstep \d+\b.*non-finite.*(the loss|the gradient of \S+)")
        self.assertEqual(
            _read_json(self.cwd, "run", "config.json"),
            _expected_config(optimizer="sgd", learning_rate=1e6, epochs=3, n_samples=200, workdir="run"),
        )


class InterruptOutsideTheLoopTest(CliTestCase):
    """Ctrl-C outside the training loop (here: during the export, after the final checkpoint)
    ends with one line and exit 130, not a traceback; rerunning the command finishes the run."""

    # The CLI as its console script runs it, with the export raising what Ctrl-C raises there.
    _INTERRUPTED_EXPORT = (
        "import sys\n"
        "from tf_backprop.serving import export\n"
        "def interrupted(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "export.export_saved_model = interrupted\n"
        "from tf_backprop.cli import train\n"
        "sys.argv = ['tf-backprop-train', *sys.argv[1:]]\n"
        "train.run()\n"
    )

    def test_ctrl_c_during_the_export_is_one_line_and_a_rerun_finishes(self):
        flags = (*_TINY, "--workdir=run")
        result = _python("-c", self._INTERRUPTED_EXPORT, *flags, cwd=self.cwd)
        self.assertEqual(result.returncode, 130, _describe(result))
        self.assert_no_traceback(result)
        last = result.stderr.splitlines()[-1]
        self.assertRegex(
            last, r"^tf-backprop-train: error: SIGINT outside the training loop: .*rerun the same command"
        )
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "run", "export")))
        rerun = _run(*flags, cwd=self.cwd)
        self.assertEqual(rerun.returncode, 0, _describe(rerun))
        self.assertTrue(os.path.isdir(os.path.join(self.cwd, "run", "export")))


class FullDiskTest(CliTestCase):
    """A full disk ends the run with one line naming what could not be written (exit 1), not a
    traceback; the checkpoints written before are kept and the same command finishes the run."""

    # The CLI as its console script runs it, with one write failing as a full disk fails it.
    _FULL = (
        "import errno, sys\n"
        "import tensorflow as tf\n"
        "from tf_backprop import files\n"
        "FAILS = sys.argv.pop(1)\n"
        "NO_SPACE = '{{function_node __wrapped__SaveV2}} /x/part-00000.tempstate1; No space left on device [Op:SaveV2]'\n"
        "def no_space(*args, **kwargs):\n"
        "    raise tf.errors.ResourceExhaustedError(None, None, NO_SPACE)\n"
        "if FAILS == 'checkpoint':  # the second save (step 32), after the first (step 16)\n"
        "    save, calls = tf.train.CheckpointManager.save, []\n"
        "    def second_fails(self, *args, **kwargs):\n"
        "        calls.append(1)\n"
        "        return no_space() if len(calls) == 2 else save(self, *args, **kwargs)\n"
        "    tf.train.CheckpointManager.save = second_fails\n"
        "elif FAILS == 'export':\n"
        "    tf.saved_model.save = no_space\n"
        "else:  # a file of ours: the write itself fails, as on a full disk (no file name)\n"
        "    open_text = files._open_text\n"
        "    class Full:\n"
        "        def write(self, text):\n"
        "            raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    def failing(temporary, path, compress):\n"
        "        return open_text(temporary, path, compress) if not path.endswith(FAILS) else _full()\n"
        "    import contextlib\n"
        "    @contextlib.contextmanager\n"
        "    def _full():\n"
        "        yield Full()\n"
        "    files._open_text = failing\n"
        "from tf_backprop.cli import train\n"
        "sys.argv = ['tf-backprop-train', *sys.argv[1:]]\n"
        "train.run()\n"
    )

    @parameterized.named_parameters(
        (
            "checkpoint",
            "checkpoint",
            r"cannot write the checkpoint of step 32 in \S+/run/ckpt \(No space left "
            r"on device\); the checkpoints written before it are kept: make room and rerun the same command",
        ),
        (
            "export",
            "export",
            r"\S+/run/export: cannot write the export \(No space left on device\); nothing was replaced$",
        ),
        ("metrics", "metrics.json", r"\S+/run/metrics.json: No space left on device$"),
    )
    def test_one_line_and_a_rerun_finishes(self, fails, line):
        flags = (*_TINY, "--workdir=run", "--checkpoint_every=16", "--nomonitor")
        result = _python("-c", self._FULL, fails, *flags, cwd=self.cwd)
        self.assertEqual(result.returncode, 1, _describe(result))
        self.assert_no_traceback(result)
        self.assertRegex(result.stderr.splitlines()[-1], "^tf-backprop-train: error: " + line)
        self.assertTrue(os.path.exists(os.path.join(self.cwd, "run", "ckpt", "ckpt-16.index")))
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "run", "export")))
        rerun = _run(*flags, cwd=self.cwd)
        self.assertEqual(rerun.returncode, 0, _describe(rerun))
        self.assertTrue(os.path.isdir(os.path.join(self.cwd, "run", "export")))


class RunFolderTest(CliTestCase):
    """--workdir that is not ours, is a file, or changed data under it: exit 2, one line, nothing touched."""

    def test_a_foreign_folder_is_refused_and_its_files_kept(self):
        _write(self.cwd, "data.json", '{"my": "data"}\n')
        _write(self.cwd, "metrics.json", '{"my": "metrics"}\n')
        line = self.run_failing(*_TINY, f"--workdir={self.cwd}", code=2, log_lines=True)
        self.assertIn(f"workdir: {self.cwd} is not empty and not a tf_backprop run folder", line)
        self.assertIn("use a new or empty folder", line)
        self.assertEqual(sorted(os.listdir(self.cwd)), ["data.json", "metrics.json"])
        self.assertEqual(_read_json(self.cwd, "data.json"), {"my": "data"})
        self.assertEqual(_read_json(self.cwd, "metrics.json"), {"my": "metrics"})

    def test_a_file_or_a_folder_under_a_file_exits_2(self):
        _write(self.cwd, "notes", "mine")
        for workdir, message in (("notes", "is a file, not a folder"), ("notes/run", "(Not a directory)")):
            line = self.run_failing(*_TINY, f"--workdir={workdir}", code=2, log_lines=True)
            self.assertIn(message, line)
        self.assertEqual(os.listdir(self.cwd), ["notes"])

    def test_changed_csv_data_is_not_resumed(self):
        rows = [f"{i % 9},{i % 4},{(i % 9) * 0.5 - (i % 4):g}" for i in range(60)]
        _write(self.cwd, "houses.csv", "x1,x2,y\n" + "\n".join(rows) + "\n")
        flags = ("--data=csv:houses.csv", "--target=y", "--epochs=1", "--workdir=run")
        self.run_ok(*flags)
        _write(self.cwd, "houses.csv", "x1,x2,y\n" + "\n".join(rows[:-1]) + "\n")  # a row fewer
        line = self.run_failing(*flags[:-2], "--epochs=2", "--workdir=run", code=2, log_lines=True)
        self.assertRegex(
            line, r"was trained on other data: csv:\S+houses\.csv has changed \(was \d+ bytes, 60 rows"
        )
        self.assertIn("now", line)
        self.assertIn("--restart", line)


class StrictJsonTest(CliTestCase):
    def test_metrics_of_a_huge_target_are_strict_json(self):
        """A target around 1e30 (its squares overflow float32): every JSON output parses strictly."""
        rows = [f"{i},{i % 7},{(1.5 * i + i % 7) * 1e30:g}" for i in range(60)]
        _write(self.cwd, "huge.csv", "x1,x2,y\n" + "\n".join(rows) + "\n")
        result = self.run_ok("--data=csv:huge.csv", "--target=y", "--epochs=2", "--workdir=run", "--json")
        (line,) = result.stdout.splitlines()
        for document in (_strict(line), _strict(_read_text(self.cwd, "run", "metrics.json"))):
            final = document.get("final", document)
            for name in _REGRESSION_METRICS:
                value = final[name]
                if value is None:  # not finite: named
                    self.assertIn(name, " ".join(document["non_finite"]))
                else:
                    self.assertTrue(math.isfinite(value), f"{name}={value}")


def _read_text(*path: str) -> str:
    with open(os.path.join(*path), encoding="utf-8") as handle:
        return handle.read()


def _strict(text: str):
    """json.loads refusing NaN and ±Infinity, as strict JSON parsers do."""

    def refuse(constant: str):
        raise AssertionError(f"not strict JSON: {constant} in {text[:200]}")

    return json.loads(text, parse_constant=refuse)


if __name__ == "__main__":
    tf.test.main()


class HelpTest(CliTestCase):
    def test_help_lists_the_commands_own_flags_and_exits_0(self):
        result = self.run_ok("--help")
        for flag in ("--workdir", "--[no]restart", "--checkpoint_seconds", "--[no]shuffle"):
            self.assertIn(flag, result.stdout)
        self.assertNotIn("logtostderr", result.stdout)  # absl's own: --helpfull lists them

    def test_helpfull_adds_absl_flags_and_exits_0(self):
        result = self.run_ok("--helpfull")
        self.assertIn("--[no]logtostderr", result.stdout)
        self.assertIn("--workdir", result.stdout)


class FlagsDocumentedTest(tf.test.TestCase):
    def test_every_config_field_is_a_documented_flag(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        docs = ""
        for page in ("training.md", "distributed.md"):
            with open(os.path.join(root, "docs", page), encoding="utf-8") as handle:
                docs += handle.read()
        undocumented = [f.name for f in config_lib.fields() if f"--{f.name}" not in docs]
        self.assertEqual(undocumented, [])
