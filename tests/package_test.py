"""tf_backprop/__init__.py: importing the package keeps TensorFlow's start-up lines off stderr.

Run in fresh interpreters (the test process has TensorFlow imported already), as a user of the
Python API would: on a CPU-only machine TensorFlow prints `E0000 … failed call to cuInit`
and oneDNN notes unless the package holds them back.
"""

import os
import subprocess
import sys
import tempfile

import tensorflow as tf

import tf_backprop

_TIMEOUT = 120
# Imports the package, then uses TensorFlow as a notebook would: devices, an op, a compiled call.
_SCRIPT = """
import tf_backprop.training
import tensorflow as tf
tf.config.list_physical_devices("GPU")
print(float(tf.function(lambda x: x * 2.0, jit_compile=True)(tf.constant(1.0))))
"""


def _python(script: str, **environ: str) -> subprocess.CompletedProcess:
    """script in a fresh interpreter, run outside the checkout: the installed package is imported
    (the source folder has no tf_backprop.cli: setup.cfg maps it from cli/)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", tf_backprop.VERBOSE_ENV)}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tempfile.gettempdir(),
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )


class QuietImportTest(tf.test.TestCase):
    def test_importing_the_package_prints_nothing_on_stderr(self):
        result = _python(_SCRIPT)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "2.0\n")
        self.assertEqual(result.stderr, "")

    def test_the_environment_variable_shows_tensorflows_lines(self):
        """The check above can fail: without the package's capture these lines are there."""
        result = _python(_SCRIPT, **{tf_backprop.VERBOSE_ENV: "1"})
        self.assertEqual(result.returncode, 0, result.stderr)
        if tf.config.list_physical_devices("GPU"):
            self.assertNotEqual(result.stderr, "")
        else:
            self.assertIn("cuInit", result.stderr)

    def test_a_failing_import_shows_what_tensorflow_printed(self):
        script = (
            "import os, sys\n"
            "class Fail:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'tensorflow':\n"
            "            os.write(2, b'tensorflow says why\\n')\n"
            "            raise ImportError('no tensorflow')\n"
            "sys.meta_path.insert(0, Fail())\n"
            "import tf_backprop\n"
        )
        result = _python(script)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("tensorflow says why", result.stderr)
        self.assertIn("ImportError: no tensorflow", result.stderr)

    def test_ctrl_c_during_the_import_ends_a_command_with_one_line(self):
        # A traceback through TensorFlow's import, as a command started (review).
        interrupt = (
            "import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'tensorflow':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
        )
        # A command imports TensorFlow once its flags are parsed (cli/common.py), as here.
        command = "sys.argv[0] = '/venv/bin/tf-backprop-train'\nimport tf_backprop\ntf_backprop.import_tensorflow()\n"
        result = _python(interrupt + command)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual(
            result.stderr,
            "tf-backprop-train: error: SIGINT: stopped while importing TensorFlow; nothing was done\n",
        )
        library = _python(interrupt + "import tf_backprop\n")  # not a command: the interrupt stands
        self.assertIn("KeyboardInterrupt", library.stderr)

    def test_ctrl_c_after_the_import_until_main_ends_a_command_with_one_line(self):
        # Importing Keras and the package and parsing flags took ~0.5 s more with a traceback.
        result = _python(_interrupted_command("tf_backprop.cli.common", "--help"))  # after TensorFlow
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual(
            result.stderr, "tf-backprop-train: error: SIGINT: stopped while starting; nothing was done\n"
        )
        self.assertEqual(result.stdout, "")
        ignored = _python(_interrupted_command("tf_backprop.cli.common", "--help", "signal.SIG_IGN"))
        self.assertEqual(ignored.returncode, 0, ignored.stderr)  # a background job's SIGINT stays ignored
        self.assertIn("--epochs", ignored.stdout)

    def test_once_main_runs_ctrl_c_is_the_commands_own(self):
        # Its main imports the run's modules as it starts: Ctrl-C there is the command's line.
        with tempfile.TemporaryDirectory() as folder:
            workdir = os.path.join(folder, "run")
            result = _python(_interrupted_command("tf_backprop.training.api", f"--workdir={workdir}"))
            self.assertEqual(result.returncode, 130, result.stderr)
            self.assertRegex(result.stderr, r"^tf-backprop-train: error: SIGINT outside the training loop: ")
            self.assertFalse(os.path.exists(workdir))


class GarbageCollectionTest(tf.test.TestCase):
    """The collector is paused while TensorFlow imports; commands freeze their imports."""

    _REPORT = "import gc\nprint(gc.isenabled(), gc.get_freeze_count() > 0)\n"

    def test_a_library_import_leaves_the_collector_as_it_was(self):
        result = _python("import tf_backprop\n" + self._REPORT)
        self.assertEqual((result.returncode, result.stdout), (0, "True False\n"), result.stderr)
        # A collector the user had switched off stays off.
        result = _python("import gc\ngc.disable()\nimport tf_backprop\n" + self._REPORT)
        self.assertEqual((result.returncode, result.stdout), (0, "False False\n"), result.stderr)

    def test_a_command_resumes_it_at_main_with_its_imports_frozen(self):
        script = "import sys\nsys.argv[0] = '/venv/bin/tf-backprop-train'\nimport tf_backprop\n"
        script += self._REPORT + "tf_backprop.command_started()\n" + self._REPORT
        result = _python(script)
        self.assertEqual((result.returncode, result.stdout), (0, "False False\nTrue True\n"), result.stderr)


def _interrupted_command(module: str, flag: str, sigint: str = "signal.default_int_handler") -> str:
    """tf-backprop-train with `flag`, sent SIGINT as it first imports `module`; SIGINT's handler
    at the start `sigint` (an interactive shell's: Python's default)."""
    return (
        "import os, signal, sys\n"
        f"signal.signal(signal.SIGINT, {sigint})\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        f"sys.argv = ['/venv/bin/tf-backprop-train', {flag!r}]\n"
        "from tf_backprop.cli import train\n"
        "train.run()\n"
    )


if __name__ == "__main__":
    tf.test.main()
