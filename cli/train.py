"""tf-backprop-train: train an MLP from flags (defaults: the article's 2-3-3-1 net).

tf-backprop-train                       # the article's net on a learnable regression task
tf-backprop-train --preset=article      # the article's TF1 loop, faithfully (cannot learn)
tf-backprop-train --data=csv:houses.csv --target=price --hidden=64,64 --grad_source=manual
tf-backprop-train --strategy=mirrored --cpu_replicas=2   # two replicas, batch 10 each (docs/distributed.md)
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from tf_backprop import checkpoint, distribute, train
from tf_backprop import config as config_lib
from tf_backprop.cli import common

FLAGS = flags.FLAGS
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(config_lib.TrainConfig)}

flags.DEFINE_enum(
    "preset", "default", config_lib.PRESETS, "default: learnable task; article: the article's TF1 loop."
)
flags.DEFINE_string(
    "layers", None, "All widths, e.g. 2,3,3,1 (the article's). Default: from the data and --hidden."
)
flags.DEFINE_string(
    "hidden", None, "Hidden widths, e.g. 64,64; input and output widths come from the data. Default 3,3."
)
flags.DEFINE_string("activation", _DEFAULTS["activation"], "Hidden activation.")
flags.DEFINE_string("output_activation", _DEFAULTS["output_activation"], "Output activation.")
flags.DEFINE_string(
    "initializer", _DEFAULTS["initializer"], "Kernel initializer (random_normal = the article's N(0,1))."
)
flags.DEFINE_enum("dtype", _DEFAULTS["dtype"], ["float32", "float64"], "Model dtype.")
flags.DEFINE_string(
    "loss", None, "mse | half_mse | binary_crossentropy | categorical_crossentropy. Default: by task."
)
flags.DEFINE_enum("task", "auto", config_lib.TASKS, "Task type; auto infers it from the target and the loss.")
flags.DEFINE_float("l2", 0.0, "L2 penalty λ of λ/2 Σ‖W‖² on the kernels.")
flags.DEFINE_string("data", _DEFAULTS["data"], "regression | xor | spirals[:K] | random | csv:PATH")
flags.DEFINE_string("target", None, "Target column of a CSV (required with --data=csv:PATH).")
flags.DEFINE_integer("n_samples", _DEFAULTS["n_samples"], "Rows of a synthetic data set.")
flags.DEFINE_float("noise", _DEFAULTS["noise"], "Noise of a synthetic data set.")
flags.DEFINE_float("val_split", _DEFAULTS["val_split"], "Validation fraction, in [0, 1).")
flags.DEFINE_float("test_split", _DEFAULTS["test_split"], "Test fraction, in [0, 1).")
flags.DEFINE_enum("optimizer", _DEFAULTS["optimizer"], config_lib.OPTIMIZERS, "Keras optimizer.")
flags.DEFINE_float("learning_rate", _DEFAULTS["learning_rate"], "Initial learning rate (> 0).")
flags.DEFINE_enum("lr_schedule", _DEFAULTS["lr_schedule"], config_lib.LR_SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_integer(
    "lr_decay_steps",
    _DEFAULTS["lr_decay_steps"],
    "exponential/step: steps per decay; cosine: decay length (0 = whole run).",
)
flags.DEFINE_float(
    "lr_decay_rate", _DEFAULTS["lr_decay_rate"], "exponential/step: factor per lr_decay_steps."
)
flags.DEFINE_float(
    "lr_alpha", _DEFAULTS["lr_alpha"], "cosine: final learning rate as a fraction of the initial one."
)
flags.DEFINE_float("momentum", _DEFAULTS["momentum"], "momentum/nesterov momentum; rmsprop's rho.")
flags.DEFINE_float(
    "weight_decay", None, "Decoupled weight decay (default: Keras's, 0.004 for adamw, none otherwise)."
)
flags.DEFINE_float("clip_norm", None, "Clip each gradient tensor to this norm.")
flags.DEFINE_float("clip_global_norm", None, "Clip all gradients to this global norm.")
flags.DEFINE_float("clip_value", None, "Clip each gradient element to ±this value.")
flags.DEFINE_integer("batch_size", _DEFAULTS["batch_size"], "Rows per (micro-)batch.")
flags.DEFINE_integer(
    "grad_accum_steps", _DEFAULTS["grad_accum_steps"], "Micro-batches accumulated per update."
)
flags.DEFINE_integer("epochs", None, "Passes over the training split (default 60).")
flags.DEFINE_integer("steps", None, "Total updates, instead of --epochs.")
flags.DEFINE_integer(
    "patience", 0, "Early stopping after this many epochs without a better validation loss (0: off)."
)
flags.DEFINE_enum(
    "grad_source",
    _DEFAULTS["grad_source"],
    config_lib.GRAD_SOURCES,
    "Gradients from tf.GradientTape or the hand-written chain rule.",
)
flags.DEFINE_integer(
    "verify_every", 0, "Compare tape and manual gradients every N steps; stop if they disagree (0: off)."
)
flags.DEFINE_float(
    "verify_tolerance",
    None,
    "Max relative disagreement for --verify_every (default 1e-9 float64, 1e-4 float32).",
)
flags.DEFINE_integer("seed", 0, "Seed for weights, data and shuffling.")
flags.DEFINE_enum("device", "auto", config_lib.DEVICES, "auto uses a GPU when TensorFlow sees one.")
flags.DEFINE_enum(
    "strategy",
    _DEFAULTS["strategy"],
    config_lib.STRATEGIES,
    "none: one device; mirrored: the local GPUs (or --cpu_replicas logical CPUs); multi_worker: "
    "MultiWorkerMirroredStrategy from TF_CONFIG. Under a strategy --batch_size is per replica.",
)
flags.DEFINE_integer(
    "cpu_replicas",
    _DEFAULTS["cpu_replicas"],
    "--strategy=mirrored on N logical CPU devices (0: the local GPUs).",
)
flags.DEFINE_integer(
    "steps_per_call",
    _DEFAULTS["steps_per_call"],
    "Updates per compiled call (0: auto, about 1e10 FLOPs, 20 to 10000 steps).",
)
flags.DEFINE_string(
    "workdir", None, "Run folder (default: a new one under ./runs/); an existing run there resumes."
)
flags.DEFINE_integer("checkpoint_every", 0, "Checkpoint every N steps (0: at the end of every epoch).")
flags.DEFINE_integer("keep_checkpoints", _DEFAULTS["keep_checkpoints"], "Recent checkpoints to keep.")
flags.DEFINE_bool(
    "restart", False, "Move a previous run in --workdir aside (previous-<time>/) and start over."
)
flags.DEFINE_bool(
    "monitor", True, "Per-layer gradient statistics to <workdir>/tb (TensorBoard) and health warnings."
)
flags.DEFINE_integer(
    "histogram_every",
    _DEFAULTS["histogram_every"],
    "Histograms of weights, gradients, activations every N steps (0: off).",
)
flags.DEFINE_float(
    "vanishing_ratio",
    _DEFAULTS["vanishing_ratio"],
    "Vanishing: a hidden layer's ‖∂L/∂W‖ below this × the output layer's.",
)
flags.DEFINE_float("vanishing_floor", _DEFAULTS["vanishing_floor"], "Vanishing: or below this absolute norm.")
flags.DEFINE_float(
    "exploding_threshold",
    _DEFAULTS["exploding_threshold"],
    "Exploding: a layer's ‖∂L/∂W‖ above this (or not finite).",
)
flags.DEFINE_integer(
    "health_patience", _DEFAULTS["health_patience"], "Consecutive measurements before a vanishing warning."
)
flags.DEFINE_bool("export", True, "Write a SavedModel to <workdir>/export at the end (--noexport: skip).")
flags.DEFINE_bool("json", False, "Print the final metrics as JSON on stdout.")

_LIST_FLAGS = ("layers", "hidden")
_NOT_CONFIG = ("json", "restart")


def config_from_flags() -> config_lib.TrainConfig:
    """The flags given on the command line over the preset's values over the defaults."""
    given = {}
    for name in FLAGS:
        if name in _DEFAULTS and name not in _NOT_CONFIG and FLAGS[name].present:
            value = FLAGS[name].value
            given[name] = common.parse_int_list(name, value) if name in _LIST_FLAGS else value
    return config_lib.from_preset(FLAGS.preset, **{k: v for k, v in given.items() if k != "preset"})


def main(argv):
    del argv
    config = config_from_flags()
    try:
        result = train.train(config, restart=FLAGS.restart)
    except train.Interrupted as interrupted:
        common.fail(str(interrupted), interrupted.exit_code)
    if FLAGS.json:
        print(json.dumps({"workdir": result.workdir, "steps": result.steps, **result.final_metrics}))
    else:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if k != "split")
        print(f"trained {result.steps} steps; {result.final_metrics['split']} {metrics}")
        outputs = ["config.json", "data.json", "metrics.json", "ckpt/"]
        outputs += ["tb/"] if config.monitor else []
        outputs += ["export/ (SavedModel)"] if config.export else []
        if config.strategy == "multi_worker" and not distribute.is_chief_process():
            outputs = ["written by the chief worker"]
        print(f"outputs in {result.workdir}: {', '.join(outputs)}")


def run():
    """Console-script entry point."""
    common.run(main, failures=(train.TrainingError, checkpoint.CheckpointError))


if __name__ == "__main__":
    run()
