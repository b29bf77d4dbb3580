"""tf-backprop-inspect: per-layer gradient norms of a freshly initialized MLP.

    tf-backprop-inspect --layers=2,32,32,32,32,32,32,32,32,32,1 --activation=sigmoid
    tf-backprop-inspect --layers=2,32,32,32,32,32,32,32,32,32,1 --activation=relu --initializer=he_normal

Averages ‖∂L/∂W_l‖ over a few random batches and flags layers whose gradient is below
--vanishing_ratio × the output layer's (vanishing) or above --exploding_threshold (exploding).
Exit 0 when every layer is healthy, 1 when any is not, 2 on bad flags.
"""

from __future__ import annotations

from absl import flags

from tf_backprop import files, names
from tf_backprop.cli import common
from tf_backprop.training import config as config_lib

FLAGS = flags.FLAGS
_DEFAULTS = {field.name: field.default for field in config_lib.fields()}  # training's thresholds

flags.DEFINE_string("layers", "2,32,32,32,32,32,32,32,32,32,1", "All widths (default: 10 layers).")
flags.DEFINE_string("activation", "sigmoid", "Hidden activation.")
flags.DEFINE_string("initializer", "glorot_uniform", "Kernel initializer.")
flags.DEFINE_enum("loss", "mse", names.LOSS_NAMES, "Loss whose gradient is measured.")
flags.DEFINE_integer("batches", 4, "Random batches to average over.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Rows per batch.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed for weights and data.")
flags.DEFINE_float(
    "vanishing_ratio", _DEFAULTS["vanishing_ratio"], "Vanishing below this × the output layer's norm."
)
flags.DEFINE_float("exploding_threshold", _DEFAULTS["exploding_threshold"], "Exploding above this norm.")
flags.DEFINE_bool("json", False, "Print JSON instead of a table.")


def check_flags() -> tuple[int, ...]:
    """The layer sizes, once the flags are checked as training checks them (TrainConfig
    validates; no TensorFlow needed: the command runs this before it loads)."""
    layers = common.parse_int_list("layers", FLAGS.layers)
    config_lib.TrainConfig(
        layers=layers,
        activation=FLAGS.activation,
        initializer=FLAGS.initializer,
        vanishing_ratio=FLAGS.vanishing_ratio,
        exploding_threshold=FLAGS.exploding_threshold,
    )
    return layers


def main(argv):
    del argv
    from tf_backprop.training import monitor  # here: the flags are parsed before TensorFlow loads

    layers = check_flags()
    report = monitor.gradient_norms_at_init(
        layers,
        FLAGS.activation,
        FLAGS.initializer,
        loss=FLAGS.loss,
        batches=FLAGS.batches,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
    )
    report["verdict"] = monitor.health_verdicts(report, FLAGS.vanishing_ratio, FLAGS.exploding_threshold)
    if FLAGS.json:
        print(files.dumps(report))  # strict: a non-finite norm is null, named in "non_finite"
    else:
        print(f"{FLAGS.activation} / {FLAGS.initializer}, layers {list(layers)}")
        print(f"{'layer':<10} {'‖∂L/∂W‖':>12} {'÷ output':>12}  verdict")
        for row in zip(
            report["layers"], report["gradient_norm"], report["ratio_to_output"], report["verdict"]
        ):
            print(f"{row[0]:<10} {row[1]:>12.3e} {row[2]:>12.3e}  {row[3]}")
    return 0 if all(v == "ok" for v in report["verdict"]) else common.EXIT_FAILURE


def run():
    """Console-script entry point."""
    common.run(main, check_first=check_flags)


if __name__ == "__main__":
    run()
