"""tf_backprop/names.py: the commands' names without TensorFlow, and the commands' use of them.

The modules that implement the names keep their own registries; these must offer exactly the
names the flags offer.  Each command parses its flags before TensorFlow is imported: a usage
error or --help is checked in a fresh process to import no TensorFlow (the process reports at
its exit whether TensorFlow and Keras are among its modules), and a command that gets past its
flags to import it, with TensorFlow's start-up lines still held back.
"""

import os
import re
import subprocess
import sys
import tempfile

import tensorflow as tf

import tf_backprop
from tf_backprop import activations, backprop, data, explaining, losses, model, names
from tf_backprop.serving import predict
from tf_backprop.training import api as training_api
from tf_backprop.training import optimizers

_TIMEOUT = 120
# Each command with a flag value it refuses.
_BAD_FLAGS = {
    "train": "--epochs=abc",
    "gradcheck": "--seed=abc",
    "inspect": "--batches=0",
    "export": "--overwrite=maybe",
    "predict": "--batch_size=abc",
    "explain": "--format=pdf",
}


class RegistriesTest(tf.test.TestCase):
    def test_each_registry_offers_the_names_the_flags_offer(self):
        self.assertEqual(tuple(losses.LOSSES), names.LOSS_NAMES)
        self.assertEqual(tuple(model.INITIALIZERS), names.INITIALIZERS)
        self.assertEqual(tuple(backprop.STEP_FUNCTIONS), names.GRAD_SOURCES)
        self.assertEqual(optimizers.OPTIMIZERS, names.OPTIMIZERS)
        for name in names.HIDDEN_ACTIVATIONS + names.OUTPUT_ACTIVATIONS:
            self.assertEqual(
                activations.get(name, names.HIDDEN_ACTIVATIONS + names.OUTPUT_ACTIVATIONS).name, name
            )

    def test_the_modules_name_the_same_lists(self):
        self.assertEqual(model.DTYPES, names.DTYPES)
        self.assertEqual(data.TASKS, names.TASKS)
        self.assertEqual(data.STREAM_ABOVE_BYTES, names.STREAM_ABOVE_BYTES)
        self.assertEqual(training_api.SPLIT_ORDER, names.SPLIT_ORDER)
        self.assertEqual(explaining.ERRATA_MODES, names.ERRATA_MODES)
        self.assertEqual(predict.PREDICT_BATCH_SIZE, names.PREDICT_BATCH_SIZE)


# Runs a console script as its own file does, and at exit (sys.exit: a usage error, --help)
# writes one last line on stderr naming which of TensorFlow and Keras the process imported.
_REPORTING = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write(
    "imported: " + " ".join(m for m in ("tensorflow", "keras") if m in sys.modules) + "\\n"))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _command(name: str, *flags: str) -> subprocess.CompletedProcess:
    """tf-backprop-NAME with flags in a fresh process, reporting its imports at exit."""
    script = os.path.join(os.path.dirname(sys.executable), f"tf-backprop-{name}")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", tf_backprop.VERBOSE_ENV)}
    return subprocess.run(
        [sys.executable, "-c", _REPORTING, script, *flags],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )


def _imported(result: subprocess.CompletedProcess) -> set[str]:
    """Which of tensorflow and keras the process had imported at its exit."""
    last = result.stderr.splitlines()[-1] if result.stderr else ""
    if not last.startswith("imported:"):
        raise AssertionError(f"no report of the imports at exit; stderr: {result.stderr}")
    return set(last.removeprefix("imported:").split())


def _messages(result: subprocess.CompletedProcess) -> str:
    """stderr without the report of the imports."""
    return "".join(
        line for line in result.stderr.splitlines(keepends=True) if not line.startswith("imported:")
    )


class CommandsBeforeTensorFlowTest(tf.test.TestCase):
    def test_a_bad_flag_is_refused_without_tensorflow(self):
        for name, flag in _BAD_FLAGS.items():
            with self.subTest(command=name):
                result = _command(name, flag)
                self.assertEqual(result.returncode, 2, _messages(result))
                self.assertRegex(
                    _messages(result), rf"^tf-backprop-{name}: error: flag --\w+: expected .*\n$"
                )
                self.assertNotIn("tensorflow", _imported(result))
                self.assertNotIn("keras", _imported(result))

    def test_trains_config_is_checked_without_tensorflow(self):
        # The flags as a whole (training.config, TF_CONFIG): each value alone is valid.
        refused = {
            ("--val_split=0.6", "--test_split=0.4"): "val_split + test_split: must be < 1",
            ("--patience=2", "--val_split=0"): "--patience: early stopping watches the validation loss",
            ("--layers=2,0,1",): "--layers: expected positive integers",
            ("--hidden=4,x",): "--hidden: expected comma-separated integers",
            ("--strategy=multi_worker",): "needs the TF_CONFIG environment variable",
        }
        for flags, expected in refused.items():
            with self.subTest(flags=flags):
                result = _command("train", *flags)
                self.assertEqual(result.returncode, 2, _messages(result))
                self.assertRegex(
                    _messages(result), rf"^tf-backprop-train: error: [^\n]*{re.escape(expected)}[^\n]*\n$"
                )
                self.assertNotIn("tensorflow", _imported(result))

    def test_the_net_flags_are_checked_without_tensorflow(self):
        refused = {
            ("gradcheck", "--activation=nope"): "--activation: unknown name 'nope'",
            ("gradcheck", "--layers=2,0,1"): "--layers: expected positive integers",
            ("explain", "--output_activation=nope"): "--output_activation: unknown name 'nope'",
            ("explain", "--x=1,a"): "--x: expected comma-separated finite numbers",
            ("explain", "--row=3"): "--row: only with --workdir",
            ("inspect", "--initializer=nope"): "--initializer: unknown name 'nope'",
            ("inspect", "--vanishing_ratio=-1"): "--vanishing_ratio: expected a number > 0",
        }
        for (name, flag), expected in refused.items():
            with self.subTest(command=name, flag=flag):
                result = _command(name, flag)
                self.assertEqual(result.returncode, 2, _messages(result))
                self.assertRegex(
                    _messages(result), rf"^tf-backprop-{name}: error: {re.escape(expected)}[^\n]*\n$"
                )
                self.assertNotIn("tensorflow", _imported(result))

    def test_help_answers_without_tensorflow(self):
        result = _command("train", "--help")
        self.assertEqual(result.returncode, 0, _messages(result))
        self.assertIn("--epochs", result.stdout)
        self.assertIn("relu | leaky_relu", result.stdout)  # the names, from tf_backprop.names
        self.assertNotIn("tensorflow", _imported(result))

    def test_past_its_flags_a_command_imports_tensorflow_quietly(self):
        # The check above can fail: here the command imports TensorFlow (export reads the run
        # with it), and TensorFlow's own start-up lines stay held back.
        with tempfile.TemporaryDirectory() as folder:
            result = _command("export", f"--workdir={os.path.join(folder, 'none')}")
        self.assertEqual(result.returncode, 2, _messages(result))
        self.assertIn("tensorflow", _imported(result))
        self.assertRegex(_messages(result), r"^tf-backprop-export: error: [^\n]*\n$")


# A stand-in for TensorFlow, first on the path: importing it leaves a mark, then fails.
_STAND_IN = "import os\nopen(os.environ['STAND_IN_MARK'], 'w').close()\nraise ImportError('a stand-in')\n"


class ModuleCommandTest(tf.test.TestCase):
    """`python -m tf_backprop.cli.NAME` parses its flags before TensorFlow too (sys.argv[0] is
    "-m" while the package imports: the interpreter's command line names the module)."""

    def _module_command(self, folder: str, *flags: str) -> tuple[subprocess.CompletedProcess, bool]:
        """(the run, whether it imported TensorFlow), with the stand-in for TensorFlow."""
        os.makedirs(os.path.join(folder, "tensorflow"), exist_ok=True)
        with open(os.path.join(folder, "tensorflow", "__init__.py"), "w", encoding="utf-8") as handle:
            handle.write(_STAND_IN)
        mark = os.path.join(folder, "imported")
        path = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
        result = subprocess.run(
            [sys.executable, "-m", "tf_backprop.cli.train", *flags],
            cwd=tempfile.gettempdir(),
            env={**os.environ, "PYTHONPATH": path, "STAND_IN_MARK": mark},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        imported = os.path.exists(mark)
        if imported:
            os.remove(mark)
        return result, imported

    def test_a_bad_flag_is_refused_without_tensorflow(self):
        with tempfile.TemporaryDirectory() as folder:
            result, imported = self._module_command(folder, "--epochs=abc")
            self.assertEqual(
                (result.returncode, result.stderr),
                (2, "tf-backprop-train: error: flag --epochs: expected an integer, got 'abc'\n"),
            )
            self.assertFalse(imported)
            # The check can fail: past its flags the command imports the stand-in.
            _, imported = self._module_command(folder, "--epochs=1", f"--workdir={folder}/run")
            self.assertTrue(imported)
