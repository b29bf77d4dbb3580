"""tf-backprop-gradcheck: an MLP's gradients three ways, tape vs hand-written vs finite differences.

tf-backprop-gradcheck                                      # the article's 2-3-3-1 net
tf-backprop-gradcheck --layers=1024,1024,1024,10 --loss=categorical_crossentropy --mode=fast
tf-backprop-gradcheck --activation=tanh --l2=0.01 --json
tf-backprop-gradcheck --order=2                            # Hessian: tape over tape vs R-operator
tf-backprop-gradcheck --atol=1e-12                         # tiny gradients: see a smaller error

Exit codes: 0 PASS, 1 FAIL or INCONCLUSIVE, 2 bad flags or input (one line on stderr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import flags

from tf_backprop import names
from tf_backprop.cli import common

if TYPE_CHECKING:
    from tf_backprop import gradcheck

FLAGS = flags.FLAGS

flags.DEFINE_string("layers", "2,3,3,1", "All widths n_0,...,n_L (default: the article's net).")
flags.DEFINE_string("activation", "relu", "Hidden activation.")
flags.DEFINE_string("output_activation", "linear", "Output activation (linear for the cross-entropies).")
flags.DEFINE_enum("loss", "half_mse", names.LOSS_NAMES, "Loss (the article's: half_mse).")
flags.DEFINE_string(
    "initializer", "glorot_uniform", "Kernel initializer (random_normal: the article's N(0,1))."
)
flags.DEFINE_integer("batch_size", 10, "Rows of random data.")
flags.DEFINE_enum("dtype", "float32", names.DTYPES, "Model dtype; the check itself always runs in float64.")
flags.DEFINE_integer("seed", 0, "Seeds the weights, the data and the fast mode's directions.")
flags.DEFINE_enum(
    "mode", "full", ["full", "fast"], "full: every parameter; fast: random directions and sampled elements."
)
flags.DEFINE_float("l2", 0.0, "L2 penalty λ of λ/2 Σ‖W‖² on the kernels.")
flags.DEFINE_float(
    "eps", None, "Finite-difference step (default 1e-6; at most 1% of each variable's max(1, max |w|))."
)
flags.DEFINE_integer("directions", 4, "Fast mode: random directions per variable.")
flags.DEFINE_integer("samples", 4, "Fast mode: sampled elements per variable.")
flags.DEFINE_float("atol", None, "Absolute tolerance against the differences (default 1e-8).")
flags.DEFINE_float("rtol", None, "Relative tolerance against the differences (default 1e-5).")
flags.DEFINE_enum(
    "order",
    "1",
    ["1", "2"],
    "1: gradients (tape vs hand-written vs differences of the loss); 2: Hessian-vector products "
    "(tape over tape vs the hand-written R-operator vs differences of the hand-written gradient).",
)
flags.DEFINE_bool("json", False, "Print the report as JSON instead of tables.")


def check_from_flags() -> gradcheck.Report:
    """Builds the MLP and a random batch from the flags and checks them."""
    from tf_backprop import gradcheck  # here: the flags are parsed before TensorFlow loads
    from tf_backprop.model import MLPSpec

    model = MLPSpec(
        layer_sizes=common.parse_int_list("layers", FLAGS.layers),
        activation=FLAGS.activation,
        output_activation=FLAGS.output_activation,
        initializer=FLAGS.initializer,
        dtype=FLAGS.dtype,
        seed=FLAGS.seed,
    ).build()
    x, y = gradcheck.random_batch(model, FLAGS.loss, FLAGS.batch_size, FLAGS.seed)
    return gradcheck.check(
        model,
        x,
        y,
        FLAGS.loss,
        mode=FLAGS.mode,
        l2=FLAGS.l2,
        eps=FLAGS.eps,
        directions=FLAGS.directions,
        samples=FLAGS.samples,
        atol=FLAGS.atol,
        rtol=FLAGS.rtol,
        seed=FLAGS.seed,
        order=int(FLAGS.order),
    )


def main(argv) -> int:
    del argv
    report = check_from_flags()
    print(report.to_json() if FLAGS.json else report.to_text())
    return 0 if report.passed else common.EXIT_FAILURE


def run():
    """Console-script entry point."""
    common.run(
        main,
        flag_names={"layer_sizes": "--layers", "kernel_initializer": "--initializer"},
        check_first=common.check_net_flags,
    )


if __name__ == "__main__":
    run()
