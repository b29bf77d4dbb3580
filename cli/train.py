"""tf-backprop-train: train an MLP from flags (defaults: the article's 2-3-3-1 net).

tf-backprop-train                       # the article's net on a learnable regression task
tf-backprop-train --preset=article      # the article's TF1 loop, faithfully (cannot learn)
tf-backprop-train --data=csv:houses.csv --target=price --hidden=64,64 --grad_source=manual
tf-backprop-train --strategy=mirrored --cpu_replicas=2 --batch_size=20   # two replicas, 10 rows each (docs/distributed.md)

Every TrainConfig field is a flag of the same name, generated from the field (type, default,
help); --restart and --json are the only flags of this command's own.
"""

from __future__ import annotations

import os

from absl import flags, logging

from tf_backprop import files, training
from tf_backprop.cli import common
from tf_backprop.training import config as config_lib
from tf_backprop.training import tf_config

FLAGS = flags.FLAGS


def _define(field: config_lib.FieldInfo) -> None:
    """One absl flag for one config field."""
    default = field.default
    if field.choices is not None:
        flags.DEFINE_enum(field.name, default, field.choices, field.help)
    elif field.kind == "bool":
        flags.DEFINE_bool(field.name, default, field.help)
    elif field.kind == "int":
        flags.DEFINE_integer(field.name, default, field.help)
    elif field.kind == "float":
        flags.DEFINE_float(field.name, default, field.help)
    elif field.kind == "int_list":
        default = None if default is None else ",".join(str(v) for v in default)
        flags.DEFINE_string(field.name, default, field.help)
    else:
        flags.DEFINE_string(field.name, default, field.help)


for _field in config_lib.fields():
    _define(_field)
flags.DEFINE_bool(
    "restart", False, "Move a previous run in --workdir aside (previous-<time>/) and start over."
)
flags.DEFINE_bool("json", False, "Print the final metrics as JSON on stdout.")
# An empty value (a shell variable unset) would be the current folder, trained into if empty.
flags.register_validator(
    "workdir",
    lambda value: value != "",
    "expected a folder path, got nothing (without it: a new one under runs/)",
)

_LIST_FIELDS = {f.name for f in config_lib.fields() if f.kind == "int_list"}
_LIST_EXAMPLES = {"hidden": ("64,64",)}  # the hidden widths only (--layers: parse_int_list's 2,3,3,1)


def config_from_flags() -> config_lib.TrainConfig:
    """The flags given on the command line over the preset's values over the defaults."""
    given = {}
    for field in config_lib.fields():
        if field.name != "preset" and FLAGS[field.name].present:
            value = FLAGS[field.name].value
            given[field.name] = (
                common.parse_int_list(field.name, value, *_LIST_EXAMPLES.get(field.name, ()))
                if field.name in _LIST_FIELDS
                else value
            )
    return config_lib.from_preset(FLAGS.preset, **given)


def check_flags() -> None:
    """The flags' values as a whole, checked before TensorFlow loads: TF_CONFIG's errors first
    (it configures everything else), then the config's."""
    if FLAGS.strategy == "multi_worker":
        tf_config.parse_tf_config(os.environ.get("TF_CONFIG"))
    config_from_flags()


def main(argv):
    del argv
    # here: the flags are parsed before TensorFlow loads
    from tf_backprop.training import unused as unused_lib

    config = config_from_flags()
    given = [field.name for field in config_lib.fields() if FLAGS[field.name].present]
    for name, reason in unused_lib.unused(config, given):
        logging.warning("flag --%s has no effect: %s", name, reason)
    try:
        result = training.train(config, restart=FLAGS.restart, tune_xla=True)
    except training.Interrupted as interrupted:
        common.fail(str(interrupted), interrupted.exit_code)
    if FLAGS.json:
        print(files.dumps({"workdir": result.workdir, "steps": result.steps, **result.final_metrics}))
    else:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if k != "split")
        print(f"trained {result.steps} steps; {result.final_metrics['split']} {metrics}")
        outputs = ["config.json", "data.json", "metrics.json", "ckpt/"]
        outputs += ["tb/"] if config.monitor else []
        outputs += ["export/ (SavedModel)"] if config.export else []
        if config.strategy == "multi_worker" and not tf_config.is_chief_process():
            outputs = ["written by the chief worker"]
        print(f"outputs in {result.workdir}: {', '.join(outputs)}")


def run():
    """Console-script entry point."""
    # A lost or silent worker leaves TensorFlow's coordination agent in an error state: its
    # shutdown would log after the error line (and may wait on the peers).
    common.run(
        main,
        failures=(training.TrainingError, training.CheckpointError, OSError),  # OSError: a full disk
        at_once=(training.WorkerLostError,),
        interrupted=INTERRUPTED,
        flag_names=FLAG_NAMES,
        check_first=check_flags,
    )


# The library names a config field ("epochs: ...") or the data loader's argument ("source:");
# the user gave a flag.
FLAG_NAMES = {field.name: f"--{field.name}" for field in config_lib.fields()} | {"source": "--data"}


# Ctrl-C outside the training loop (which checkpoints first, `training.Interrupted`): loading
# the data, building, or after the final checkpoint (TensorBoard, the export).
INTERRUPTED = (
    "SIGINT outside the training loop: every checkpoint written is kept, and no output is left "
    "half-written; rerun the same command to resume or finish the run"
)


if __name__ == "__main__":
    run()
