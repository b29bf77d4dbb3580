"""tf-backprop-export: write a run's checkpoint as a SavedModel that serves without this package.

tf-backprop-export --workdir=runs/20250101-120000                  # latest checkpoint -> <workdir>/export
tf-backprop-export --workdir=runs/x --checkpoint=ckpt-480 --output=/models/houses/1 --overwrite
"""

from __future__ import annotations

from absl import flags

from tf_backprop.cli import common
from tf_backprop.training.errors import CheckpointError

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Run folder holding config.json, data.json and ckpt/.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "Checkpoint name inside <workdir>/ckpt (e.g. ckpt-480) or a path. Default: the latest.",
)
flags.DEFINE_string("output", None, "SavedModel folder to create. Default: <workdir>/export.")
flags.register_validator("output", lambda value: value != "", "expected a folder path, got nothing")
flags.DEFINE_bool("overwrite", False, "Replace an existing export (only once the new one is complete).")
flags.mark_flag_as_required("workdir")
# An empty value (a shell variable unset) would be the current folder.
flags.register_validator("workdir", lambda value: value != "", "expected a run folder, got nothing")


def main(argv):
    del argv
    from tf_backprop.serving import export  # here: the flags are parsed before TensorFlow loads

    try:
        path = export.export_run(FLAGS.workdir, FLAGS.output, FLAGS.checkpoint, FLAGS.overwrite)
    except CheckpointError as error:
        # A wrong --workdir or --checkpoint is an input error (exit 2), not a failure.
        raise common.UsageError(str(error)) from None
    print(f"exported {path} (signatures: {export.SERVING_SIGNATURE}, {export.METADATA_SIGNATURE})")


def run():
    """Console-script entry point."""
    common.run(main, failures=_failures)


def _failures() -> tuple[type[Exception], ...]:
    """What ends the command with exit 1, TensorFlow's errors among them (loaded by then)."""
    import tensorflow as tf  # here: the flags are parsed before TensorFlow loads

    return (OSError, RuntimeError, AssertionError, tf.errors.OpError)


if __name__ == "__main__":
    run()
