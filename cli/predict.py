"""tf-backprop-predict: append a SavedModel export's predictions to every row of a CSV.

tf-backprop-predict --model=runs/x/export --input=new.csv                   # CSV on stdout
tf-backprop-predict --model=runs/x/export --input=new.csv --output=scored.csv [--overwrite]
tf-backprop-predict --model=runs/x/export --input='parts/*.csv.gz' --output=scored.csv  # shards

Feature columns are matched by header name (any order); other columns are copied unchanged.
Needs only the export: names and classes come from its metadata signature.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from tf_backprop import names
from tf_backprop.cli import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "SavedModel folder written by tf-backprop-export (or by training).")
flags.DEFINE_string(
    "input",
    None,
    "CSV with a header row naming the model's features (.gz: gzip); a glob pattern of shards with the "
    "same header, predicted in sorted order under one header; - for stdin.",
)
flags.DEFINE_string(
    "output",
    "-",
    "CSV to write (.gz: gzip; created only once complete; an existing file needs --overwrite); - for stdout.",
)
flags.DEFINE_bool(
    "overwrite", False, "Replace an existing --output file (only once the new one is complete)."
)
flags.DEFINE_integer(
    "batch_size", names.PREDICT_BATCH_SIZE, "Rows read and predicted at a time.", lower_bound=1
)
flags.mark_flags_as_required(["model", "input"])
flags.register_validator("model", lambda value: value != "", "expected the export's folder, got nothing")
flags.register_validator(
    "input", lambda value: value != "", "expected a CSV path, a glob pattern, or - for stdin, got nothing"
)
flags.register_validator(
    "output", lambda value: value != "", "expected a file path, or - for stdout, got nothing"
)


def warn(message: str) -> None:
    """Prints `prog: warning: message` as one line on stderr."""
    sys.stderr.write(f"{common.program_name()}: warning: {' '.join(message.split())}\n")


def main(argv):
    del argv
    from tf_backprop.serving import predict  # here: the flags are parsed before TensorFlow loads
    from tf_backprop.serving import served as served_lib

    if not FLAGS["verbosity"].present:
        # stdout may be the CSV and stderr is for warnings and errors; --verbosity=0 shows progress.
        logging.set_verbosity(logging.WARNING)
    predict.predict_csv(
        served_lib.load_export(FLAGS.model),
        FLAGS.input,
        FLAGS.output,
        batch_size=FLAGS.batch_size,
        warn=warn,
        overwrite=FLAGS.overwrite,
    )


def run():
    """Console-script entry point."""
    common.run(main, failures=_failures)


def _failures() -> tuple[type[Exception], ...]:
    """What ends the command with exit 1, TensorFlow's errors among them (loaded by then)."""
    import tensorflow as tf  # here: the flags are parsed before TensorFlow loads

    return (OSError, RuntimeError, AssertionError, tf.errors.OpError)


if __name__ == "__main__":
    run()
