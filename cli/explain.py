"""tf-backprop-explain: one forward and backward pass with its numbers, its formulas and the tape's check.

tf-backprop-explain                                  # the article's net (ReLU output, N(0, 1) weights)
tf-backprop-explain --x=0.5,0.8 --y=0.3 --format=md
tf-backprop-explain --format=svg --output=net.svg    # a picture of the net
tf-backprop-explain --workdir=runs/x --row=3         # a trained run's model on row 3 of its test split

Without --workdir the net is built from the flags (default: the article's 2-3-3-1, ReLU on every
layer, N(0, 1) kernels, half-MSE) and explained on one sample (--x, --y; default: drawn from
--seed).  For nets shaped like the article's with a squared-error loss the article's errata are
evaluated on the same numbers (--errata).  Exit codes: 0 every gradient agreed with
tf.GradientTape, 1 one did not, 2 bad flags or input (one line on stderr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import flags, logging

from tf_backprop import files, names
from tf_backprop.cli import common
from tf_backprop.training.errors import CheckpointError

if TYPE_CHECKING:
    from tf_backprop import explaining

FLAGS = flags.FLAGS
NET_FLAGS = (
    "layers",
    "activation",
    "output_activation",
    "initializer",
    "loss",
    "dtype",
    "seed",
    "l2",
    "x",
    "y",
)
RUN_FLAGS = ("row", "split", "checkpoint")
FORMATS = ("text", "md", "json", "svg")

flags.DEFINE_string("layers", "2,3,3,1", "All widths n_0,...,n_L (default: the article's net).")
flags.DEFINE_string("activation", "relu", "Hidden activation.")
flags.DEFINE_string("output_activation", "relu", "Output activation (the article's code: relu).")
flags.DEFINE_enum("loss", "half_mse", names.LOSS_NAMES, "Loss (the article's: half_mse, 1/(2m) Σ (y − ŷ)²).")
flags.DEFINE_string(
    "initializer", "random_normal", "Kernel initializer (the article's: random_normal, N(0, 1))."
)
flags.DEFINE_enum("dtype", "float64", names.DTYPES, "Model dtype (float64: the numbers are exact to print).")
flags.DEFINE_integer(
    "seed", 3, "Seeds the weights and the default sample (3: the article's output unit is on, in float64)."
)
flags.DEFINE_float("l2", 0.0, "L2 penalty λ of λ/2 Σ‖W‖² on the kernels.")
flags.DEFINE_string(
    "x", None, "The sample's n_0 features, comma-separated, e.g. 0.5,-1.2 (default: from --seed)."
)
flags.DEFINE_string("y", None, "Its target(s), comma-separated, or a class label (default: from --seed).")
flags.DEFINE_string("workdir", None, "Explain a trained run's model on one row of its data instead.")
# An empty value (a shell variable unset) is a mistake, not the net's flags.
flags.register_validator(
    "workdir", lambda value: value is None or value.strip() != "", "expected a run folder, got nothing"
)
flags.DEFINE_integer("row", 0, "With --workdir: the row of the split, counted from 0.")
flags.DEFINE_enum(
    "split",
    None,
    names.SPLIT_ORDER,
    "With --workdir: the split (default: test, else validation, else train).",
)
flags.DEFINE_string(
    "checkpoint", None, "With --workdir: a checkpoint name in <workdir>/ckpt (default: the latest)."
)
flags.DEFINE_enum(
    "errata", "auto", names.ERRATA_MODES, "The article's errata: auto (when they apply), on, off."
)
flags.DEFINE_enum("format", "text", FORMATS, "text (aligned tables), md, json, or svg (a picture).")
flags.DEFINE_string("output", None, "Write to this file (atomically) instead of stdout.")
flags.DEFINE_bool(
    "overwrite", False, "Replace an existing --output file (only once the new one is complete)."
)


def _check_exclusive() -> None:
    """The net's flags and the run's flags exclude each other."""
    for name in NET_FLAGS if FLAGS.workdir else RUN_FLAGS:
        if FLAGS[name].present:
            raise common.UsageError(
                f"--{name}: only without --workdir (a run fixes its net)"
                if FLAGS.workdir
                else f"--{name}: only with --workdir"
            )


def check_flags() -> None:
    """What the flags alone can get wrong, checked before TensorFlow loads: the net's and the
    run's flags mixed, the output, the net's flags, the sample's numbers."""
    _check_exclusive()
    check_output()
    if not FLAGS.workdir:
        common.check_net_flags()
        common.parse_float_list("x", FLAGS.x)
        common.parse_float_list("y", FLAGS.y)


def explain_from_flags() -> tuple[explaining.Trace, str]:
    """The trace the flags ask for (checked by `check_flags`, which `run` calls first), and its title."""
    return _explain_run() if FLAGS.workdir else _explain_net()


def _explain_run() -> tuple[explaining.Trace, str]:
    """A trained run's model on one row of its data, in float64."""
    from tf_backprop import explaining  # here: the flags are parsed before TensorFlow loads
    from tf_backprop.training import api as training_api

    try:
        sample = training_api.run_sample(FLAGS.workdir, FLAGS.row, FLAGS.split, FLAGS.checkpoint)
    except CheckpointError as error:  # a wrong --workdir or --checkpoint is an input error
        raise common.UsageError(str(error)) from None
    model = explaining.float64_copy(sample.model)
    trace = explaining.explain(model, sample.x, sample.y, sample.loss, sample.l2, FLAGS.errata)
    return trace, sample.description


def _explain_net() -> tuple[explaining.Trace, str]:
    """A net built from the flags on --x, --y (default: a sample drawn from --seed)."""
    from tf_backprop import explaining  # here: as in _explain_run
    from tf_backprop.model import MLPSpec

    layers = common.parse_int_list("layers", FLAGS.layers)
    spec = MLPSpec(
        layers, FLAGS.activation, FLAGS.output_activation, FLAGS.initializer, FLAGS.dtype, FLAGS.seed
    )
    model = spec.build()
    x, y = explaining.default_sample(model, FLAGS.loss, FLAGS.seed)
    x = x if FLAGS.x is None else common.parse_float_list("x", FLAGS.x)
    y = y if FLAGS.y is None else common.parse_float_list("y", FLAGS.y)
    if len(x) != spec.layer_sizes[0]:
        raise common.UsageError(
            f"--x: expected {spec.layer_sizes[0]} numbers (the net's inputs), got {len(x)}"
        )
    trace = explaining.explain(model, x, y, FLAGS.loss, FLAGS.l2, FLAGS.errata)
    return trace, f"{spec.initializer} weights, seed {spec.seed}"


def check_output() -> None:
    """UsageError unless --output may be written: not a folder, and new unless --overwrite."""
    refusal = None if FLAGS.output is None else files.output_refusal(FLAGS.output, FLAGS.overwrite)
    if refusal == files.FOLDER:
        raise common.UsageError(f"--output: {FLAGS.output} is a folder; give the path of the file to write")
    if refusal == files.EXISTS:
        raise common.UsageError(f"--output: {FLAGS.output} already exists; pass --overwrite to replace it")


def render_as(kind: str, trace: explaining.Trace, title: str) -> str:
    """The trace in one of FORMATS."""
    from tf_backprop.explaining import render, svg  # here: as in _explain_run

    renderers = {"text": render.to_text, "md": render.to_markdown, "json": render.to_json, "svg": svg.render}
    return renderers[kind](trace, title)


def main(argv) -> int:
    del argv
    if not FLAGS["verbosity"].present:  # stdout is the explanation; the data's loading lines are noise
        logging.set_verbosity(logging.WARNING)
    trace, title = explain_from_flags()
    output = render_as(FLAGS.format, trace, title)
    if FLAGS.output is None:
        print(output, end="")
    else:
        try:
            # Without --overwrite, a file that appeared since check_output is not replaced either.
            with files.atomic_text(FLAGS.output, overwrite=FLAGS.overwrite) as handle:
                handle.write(output)
        except OSError as error:
            files.unless_out_of_room(error, FLAGS.output)
            raise common.UsageError(f"--output: cannot write {FLAGS.output} ({error.strerror})") from None
    return 0 if trace.agreed else common.EXIT_FAILURE


def run():
    """Console-script entry point."""
    common.run(
        main,
        failures=(OSError,),  # out of room (files.unless_out_of_room)
        flag_names={"layer_sizes": "--layers", "kernel_initializer": "--initializer"},
        check_first=check_flags,
    )


if __name__ == "__main__":
    run()
