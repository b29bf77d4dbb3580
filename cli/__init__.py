"""Thin absl entry points: flags -> config -> library call (installed as tf_backprop.cli).

Importing this package loads TensorFlow with its C++ start-up chatter (oneDNN notes, CUDA
probes on machines without a GPU) held back: TF 2.21 prints those before its log level can
be set.  If the import fails, what TensorFlow printed is shown after all.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    if os.environ.get("TF_BACKPROP_VERBOSE_TF"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe, cached from here on
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_tensorflow_quietly()
