"""pytest set-up shared by every test module.

Runs at import time, before any test imports TensorFlow ops:
* two logical CPU devices, so MirroredStrategy tests run on a CPU-only machine;
* absl flags marked parsed, so tf.test.TestCase.create_tempdir works under pytest;
* TestCase.test_session not collected as a test;
* the test subprocesses' temp folder (TMPDIR) a folder of the session's own, removed at its end:
  a run the tests SIGKILL on purpose cannot remove the AutoGraph sources TensorFlow writes there
  (a CI run left ~350 in /tmp).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SUBPROCESS_TMP = tempfile.mkdtemp(prefix="tf_backprop-tests-")  # this process keeps its own
os.environ["TMPDIR"] = _SUBPROCESS_TMP
atexit.register(shutil.rmtree, _SUBPROCESS_TMP, ignore_errors=True)

import tf_backprop  # noqa: E402, F401, I001 - first: imports TensorFlow with its start-up lines held back
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
flags.FLAGS.mark_as_parsed()
# tf.test.TestCase.test_session is a deprecated context manager, not a test; unittest's naming
# rule would collect it in every class (and TensorFlow then skips it as "Not a test").
tf.test.TestCase.test_session.__test__ = False
