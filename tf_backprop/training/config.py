"""Training configuration: one validated dataclass whose fields are also the CLI's flags.

Every field carries its help text (and, for a closed set of names, its choices) as metadata;
`fields()` describes them for the CLI, which generates one flag per field, and for the docs.
A new option is one edit here: its default, help, validation and whether a resumed run may
change it.  `TrainConfig.validate()` runs once, at construction; every error is a
`ConfigError` naming the field (= the flag) and what was expected.

Importing this module imports no TensorFlow, and neither does building a config: a command
defines its flags from the fields and checks their values before TensorFlow loads.  The names
come from `tf_backprop.names`, the layer-size and data-argument checks from
`tf_backprop.arguments`; only `model_spec` imports the model module, when it runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import typing
from typing import TYPE_CHECKING, Any

from tf_backprop import arguments, names
from tf_backprop.training.errors import ConfigError

if TYPE_CHECKING:
    from tf_backprop import model

DEVICES = ("auto", "cpu", "gpu")
STRATEGIES = ("none", "mirrored", "multi_worker")
TASKS = ("auto", *names.TASKS)
GRAD_SOURCES = names.GRAD_SOURCES
DEFAULT_HIDDEN = (3, 3)  # the article's two hidden layers of 3
DEFAULT_EPOCHS = 60


# The article's TF1 loop, faithfully: ReLU on every layer including the output, N(0, 1)
# kernels, zero biases, Adam with Keras defaults, 1000 steps of 10 fresh uniform samples
# with random labels, no standardization, no held-out data.  It cannot learn (docs/article.md).
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "article": {
        "layers": (2, 3, 3, 1),
        "activation": "relu",
        "output_activation": "relu",
        "initializer": "random_normal",
        "loss": "half_mse",
        "data": "random",
        "n_samples": 10_000,
        "standardize": False,
        "val_split": 0.0,
        "test_split": 0.0,
        "shuffle": False,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 10,
        "steps": 1000,
    },
}
PRESETS = tuple(PRESET_VALUES)


def _field(default: Any, help: str, *, choices: tuple[str, ...] | None = None, resumable: bool = False):
    """A config field: its default, its flag's help, its choices (an enum flag) and whether a
    resumed run may change it (it changes neither the model nor the data)."""
    metadata = {"help": help, "choices": choices, "resumable": resumable}
    return dataclasses.field(default=default, metadata=metadata)


def _names(names) -> str:
    return " | ".join(names)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.  Defaults train the article's 2-3-3-1 net."""

    # --- model ---
    layers: tuple[int, ...] | None = _field(
        None, "All widths, e.g. 2,3,3,1 (the article's). Default: from the data and --hidden."
    )
    hidden: tuple[int, ...] | None = _field(
        None, "Hidden widths, e.g. 64,64; input and output widths come from the data. Default 3,3."
    )
    activation: str = _field("relu", f"Hidden activation: {_names(names.HIDDEN_ACTIVATIONS)}.")
    output_activation: str = _field(
        "linear",
        f"Output activation: {_names(names.OUTPUT_ACTIVATIONS)} "
        "(linear for regression and the cross-entropies, which take logits).",
    )
    initializer: str = _field(
        "glorot_uniform",
        f"Kernel initializer: {_names(names.INITIALIZERS)} (random_normal = the article's N(0,1)); "
        "biases start at zero.",
    )
    dtype: str = _field("float32", "Model dtype.", choices=names.DTYPES)
    # --- loss and data ---
    loss: str | None = _field(None, f"{_names(names.LOSS_NAMES)}. Default: by task.")
    task: str = _field("auto", "Task type; auto infers it from the target and the loss.", choices=TASKS)
    l2: float = _field(0.0, "L2 penalty λ of λ/2 Σ‖W‖² on the kernels.")
    data: str = _field(
        "regression",
        "regression | xor | spirals[:K] | random | csv:PATH (PATH: a file, .gz too, or a glob of shards).",
    )
    target: str | None = _field(None, "Target column of a CSV (required with --data=csv:PATH).")
    n_samples: int = _field(1000, "Rows of a synthetic data set (ignored for CSV).")
    noise: float = _field(0.05, "Noise std of a synthetic data set (ignored for CSV).")
    standardize: bool = _field(
        True, "Standardize features (and regression targets) with the training split's statistics."
    )
    val_split: float = _field(0.1, "Validation fraction, in [0, 1).")
    test_split: float = _field(0.1, "Test fraction, in [0, 1).")
    shuffle: bool = _field(True, "Reshuffle the training split every epoch (by seed and epoch).")
    stream: bool | None = _field(
        None,
        "Stream a CSV source with tf.data (one statistics pass, rows cached as binary in <workdir>/stream) "
        "instead of loading it into memory; default: when its files exceed "
        f"{names.STREAM_ABOVE_BYTES >> 20} MiB (docs/training.md, Large data).",
    )
    # --- optimization ---
    optimizer: str = _field("adam", "Keras optimizer.", choices=names.OPTIMIZERS)
    learning_rate: float = _field(0.01, "Initial learning rate (> 0).", resumable=True)
    lr_schedule: str = _field("constant", "Learning-rate schedule.", choices=names.LR_SCHEDULES)
    lr_decay_steps: int = _field(
        1000,
        "exponential/step: steps per decay; cosine: decay length (0 = whole run; a shorter one holds "
        "the final rate from then on, with a warning).",
    )
    lr_decay_rate: float = _field(0.5, "exponential/step: factor per lr_decay_steps.")
    lr_alpha: float = _field(0.0, "cosine: final learning rate as a fraction of the initial one.")
    momentum: float = _field(0.9, "momentum/nesterov momentum; rmsprop's rho.")
    weight_decay: float | None = _field(
        None, "Decoupled weight decay (default: Keras's, 0.004 for adamw, none otherwise)."
    )
    clip_norm: float | None = _field(None, "Clip each gradient tensor to this norm.", resumable=True)
    clip_global_norm: float | None = _field(None, "Clip all gradients to this global norm.", resumable=True)
    clip_value: float | None = _field(None, "Clip each gradient element to ±this value.", resumable=True)
    batch_size: int = _field(
        10,
        "Rows per (micro-)batch: the global batch, split evenly among the replicas under a strategy "
        "(docs/distributed.md).",
    )
    grad_accum_steps: int = _field(1, "Micro-batches accumulated per update.")
    epochs: int | None = _field(
        None, f"Passes over the training split (default {DEFAULT_EPOCHS}).", resumable=True
    )
    steps: int | None = _field(
        None, "Total updates, instead of --epochs (the last epoch may be partial).", resumable=True
    )
    patience: int = _field(
        0,
        "Early stopping after this many epochs without a better validation loss (0: off).",
        resumable=True,
    )
    restore_best: bool = _field(
        True, "With early stopping, end on the weights of the best validation loss.", resumable=True
    )
    # --- gradient source and verification ---
    grad_source: str = _field(
        "tape", "Gradients from tf.GradientTape or the hand-written chain rule.", choices=GRAD_SOURCES
    )
    verify_every: int = _field(
        0,
        "Compare tape and manual gradients every N steps; stop if they disagree (0: off).",
        resumable=True,
    )
    verify_tolerance: float | None = _field(
        None,
        "Max relative disagreement for --verify_every (default 1e-9 float64, 1e-4 float32).",
        resumable=True,
    )
    # --- run ---
    seed: int = _field(0, "Seed for weights, data and shuffling.")
    device: str = _field("auto", "auto uses a GPU when TensorFlow sees one.", choices=DEVICES, resumable=True)
    strategy: str = _field(
        "none",
        "none: one device; mirrored: the local GPUs (or --cpu_replicas logical CPUs); multi_worker: "
        "MultiWorkerMirroredStrategy from TF_CONFIG. --batch_size is the global batch, split among the replicas.",
        choices=STRATEGIES,
    )
    cpu_replicas: int = _field(0, "--strategy=mirrored on N logical CPU devices (0: the local GPUs).")
    worker_timeout: float = _field(
        300.0,
        "multi_worker: seconds a wait on another worker may last (start-up, every collective) "
        "before the run exits 1 naming the workers that did not answer.",
        resumable=True,
    )
    steps_per_call: int = _field(
        0,
        "Updates per compiled call (0: auto, about 1e11 FLOPs, or for a large net in memory at "
        "least 65536 rows up to 1e12 FLOPs; 20 to 100000 steps, at most 1000 epochs).",
        resumable=True,
    )
    workdir: str | None = _field(
        None,
        "Run folder (default: a new one under ./runs/); an existing run there resumes.",
        resumable=True,
    )
    checkpoint_every: int = _field(
        0, "Checkpoint every N steps (0: every --checkpoint_seconds of training).", resumable=True
    )
    checkpoint_seconds: float = _field(
        60.0,
        "With --checkpoint_every=0: checkpoint when this many seconds of training have passed "
        "since the last one (and always at the end and on SIGINT/SIGTERM).",
        resumable=True,
    )
    keep_checkpoints: int = _field(3, "Recent checkpoints to keep.", resumable=True)
    export: bool = _field(
        True, "Write a SavedModel to <workdir>/export at the end (--noexport: skip).", resumable=True
    )
    # --- monitoring (TensorBoard under <workdir>/tb, gradient health) ---
    monitor: bool = _field(
        True,
        "TensorBoard under <workdir>/tb (per-epoch metrics, per-layer gradient statistics) and "
        "health warnings; --nomonitor writes none of it.",
        resumable=True,
    )
    # Off by default, as in Keras's TensorBoard callback: each costs ~4 ms of TF ops for the
    # article's net, 10% of a 10,000-step call.
    histogram_every: int = _field(
        0, "Histograms of weights, gradients, activations every N steps (0: off).", resumable=True
    )
    vanishing_ratio: float = _field(
        1e-3, "Vanishing: a hidden layer's ‖∂L/∂W‖ below this × the output layer's.", resumable=True
    )
    vanishing_floor: float = _field(1e-10, "Vanishing: or below this absolute norm.", resumable=True)
    exploding_threshold: float = _field(
        1e3, "Exploding: a layer's ‖∂L/∂W‖ above this (or not finite).", resumable=True
    )
    health_patience: int = _field(3, "Consecutive measurements before a vanishing warning.", resumable=True)
    preset: str = _field(
        "default", "default: learnable task; article: the article's TF1 loop.", choices=PRESETS
    )

    def __post_init__(self):
        for name in ("layers", "hidden"):
            value = getattr(self, name)
            if isinstance(value, str):  # tuple("64,64") would be its characters
                like = "[64, 64]" if name == "hidden" else "[2, 64, 64, 1]"
                raise ConfigError(f"{name}: expected a list of positive integers like {like}, got {value!r}")
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.workdir, os.PathLike):  # a pathlib.Path: saved in config.json as text
            object.__setattr__(self, "workdir", os.fspath(self.workdir))
        for info in _field_infos():  # NumPy's integers as Python's (json writes only the latter)
            value = getattr(self, info.name)
            if info.kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, int):
                object.__setattr__(self, info.name, int(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raises ConfigError naming the first bad field."""
        self._validate_kinds()
        self._validate_model()
        self._validate_data()
        self._validate_optimization()
        self._validate_run()

    def _validate_kinds(self) -> None:
        """Integer fields hold integers and switches booleans: epochs=2.5 would train a partial
        epoch, and export="false" (a true string) would export."""
        for info in _field_infos():
            value = getattr(self, info.name)
            if value is None and info.optional:
                continue
            if info.kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{info.name}: expected an integer, got {value!r}")
            if info.kind == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{info.name}: expected True or False, got {value!r}")

    def _validate_model(self) -> None:
        if self.layers is not None:
            _wrap(arguments.validate_layer_sizes, self.layers, "layers")
        hidden = self.hidden or ()
        if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden):
            raise ConfigError(f"hidden: expected positive integers, got {list(hidden)}")
        if self.layers is not None and self.hidden is not None and self.hidden != self.layers[1:-1]:
            raise ConfigError(
                f"hidden: {list(self.hidden)} contradicts layers {list(self.layers)} "
                f"(whose hidden widths are {list(self.layers[1:-1])}); give one of them"
            )
        _choice("activation", self.activation, names.HIDDEN_ACTIVATIONS)
        _choice("output_activation", self.output_activation, names.OUTPUT_ACTIVATIONS)
        _choice("initializer", self.initializer, names.INITIALIZERS)
        _choice("dtype", self.dtype, names.DTYPES)

    def _validate_data(self) -> None:
        if self.loss is not None:
            _choice("loss", self.loss, names.LOSS_NAMES)
        _choice("task", self.task, TASKS)
        _at_least("l2", self.l2, 0.0)
        try:  # the fields data.load takes, checked by data itself
            arguments.check_data_arguments(
                val_split=self.val_split,
                test_split=self.test_split,
                seed=self.seed,
                n_samples=self.n_samples,
                noise=self.noise,
            )
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if arguments.csv_path(self.data) is not None and not self.target:
            raise ConfigError("target: required with --data=csv:PATH (the column to predict)")
        if self.stream and arguments.csv_path(self.data) is None:
            raise ConfigError(f"stream: only CSV sources stream, got --data={self.data}")

    def _validate_optimization(self) -> None:
        _choice("optimizer", self.optimizer, names.OPTIMIZERS)
        _positive("learning_rate", self.learning_rate)
        _choice("lr_schedule", self.lr_schedule, names.LR_SCHEDULES)
        _at_least("lr_decay_steps", self.lr_decay_steps, 0)
        if self.lr_schedule in ("exponential", "step") and self.lr_decay_steps < 1:
            raise ConfigError(
                f"lr_decay_steps: expected ≥ 1 for {self.lr_schedule}, got {self.lr_decay_steps}"
            )
        _positive("lr_decay_rate", self.lr_decay_rate)
        if not 0.0 <= self.lr_alpha <= 1.0:
            raise ConfigError(f"lr_alpha: expected a fraction in [0, 1], got {self.lr_alpha}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum: expected a value in [0, 1), got {self.momentum}")
        if self.weight_decay is not None:
            _at_least("weight_decay", self.weight_decay, 0.0)
        clips = [n for n in ("clip_norm", "clip_global_norm", "clip_value") if getattr(self, n) is not None]
        for name in clips:
            _positive(name, getattr(self, name))
        if len(clips) > 1:
            raise ConfigError(f"{' and '.join(clips)}: set at most one clipping mode")
        _positive("batch_size", self.batch_size)
        _positive("grad_accum_steps", self.grad_accum_steps)
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("epochs and steps: give one of them, not both")
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        _at_least("patience", self.patience, 0)
        if self.patience and self.val_split == 0:
            raise ConfigError(
                "patience: early stopping watches the validation loss, and val_split is 0 (no "
                "validation split); give val_split > 0, or patience 0"
            )

    def _validate_run(self) -> None:
        if self.workdir == "":  # os.path.abspath("") is the current folder: not what it means
            raise ConfigError(
                "workdir: expected a folder path, got an empty value (None: a new folder under runs/)"
            )
        _choice("grad_source", self.grad_source, GRAD_SOURCES)
        _at_least("verify_every", self.verify_every, 0)
        if self.verify_tolerance is not None:
            _positive("verify_tolerance", self.verify_tolerance)
        _choice("device", self.device, DEVICES)
        self._validate_strategy()
        _positive("worker_timeout", self.worker_timeout)
        _at_least("steps_per_call", self.steps_per_call, 0)
        _at_least("checkpoint_every", self.checkpoint_every, 0)
        _at_least("checkpoint_seconds", self.checkpoint_seconds, 0.0)
        _positive("keep_checkpoints", self.keep_checkpoints)
        _at_least("histogram_every", self.histogram_every, 0)
        _positive("vanishing_ratio", self.vanishing_ratio)
        _at_least("vanishing_floor", self.vanishing_floor, 0.0)
        _positive("exploding_threshold", self.exploding_threshold)
        _positive("health_patience", self.health_patience)
        _choice("preset", self.preset, PRESETS)

    def _validate_strategy(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        if self.cpu_replicas < 0:  # an integer: _validate_kinds
            raise ConfigError(f"cpu_replicas: expected an integer ≥ 0, got {self.cpu_replicas!r}")
        if self.cpu_replicas and self.strategy != "mirrored":
            raise ConfigError(f"cpu_replicas: only with --strategy=mirrored, got strategy {self.strategy!r}")
        if self.strategy == "mirrored" and self.cpu_replicas and self.device == "gpu":
            raise ConfigError("device: 'gpu' contradicts cpu_replicas (replicas on logical CPU devices)")
        if self.strategy == "mirrored" and not self.cpu_replicas and self.device == "cpu":
            raise ConfigError(
                "device: 'cpu' with --strategy=mirrored needs --cpu_replicas=N (N logical CPUs)"
            )
        if self.strategy == "multi_worker" and self.workdir is None:
            raise ConfigError(
                "workdir: required with --strategy=multi_worker (the same path on every worker)"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def tolerance(self) -> float:
        """The tape↔manual tolerance used by verify_every."""
        if self.verify_tolerance is not None:
            return self.verify_tolerance
        return 1e-9 if self.dtype == "float64" else 1e-4

    def split_options(self) -> dict:
        """What data.load and data.load_streamed take from this config besides the source:
        target, task, loss, the held-out fractions and standardization."""
        return {
            "target": self.target,
            "task": self.task,
            "loss": self.loss,
            "val_split": self.val_split,
            "test_split": self.test_split,
            "standardize": self.standardize,
        }

    def model_spec(self, n_features: int, n_outputs: int) -> model.MLPSpec:
        """The MLP for data with n_features inputs and n_outputs outputs; ConfigError if
        `layers` does not fit them."""
        if self.layers is None:
            hidden = self.hidden if self.hidden is not None else DEFAULT_HIDDEN
            sizes = (n_features, *hidden, n_outputs)
        elif self.layers[0] != n_features or self.layers[-1] != n_outputs:
            raise ConfigError(
                f"layers: {list(self.layers)} does not fit the data, which has {n_features} "
                f"feature(s) and {n_outputs} output(s); expected [{n_features}, ..., {n_outputs}]"
            )
        else:
            sizes = self.layers
        from tf_backprop import model  # here: the config is built before TensorFlow loads

        return model.MLPSpec(
            sizes, self.activation, self.output_activation, self.initializer, self.dtype, self.seed
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are a ConfigError."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"config: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One config field as the CLI and the docs see it.

    kind: "bool", "int", "float", "str" or "int_list" (tuple[int, ...]); optional: None is a
    valid value (and the default says "unset").
    """

    name: str
    kind: str
    optional: bool
    default: Any
    help: str
    choices: tuple[str, ...] | None
    resumable: bool


def fields() -> list[FieldInfo]:
    """Every TrainConfig field, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    return [_field_info(f, hints[f.name]) for f in dataclasses.fields(TrainConfig)]


@functools.cache
def _field_infos() -> tuple[FieldInfo, ...]:
    return tuple(fields())


def _field_info(field: dataclasses.Field, hint) -> FieldInfo:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    kind = "int_list" if typing.get_origin(base) is tuple else base.__name__
    meta = field.metadata
    return FieldInfo(
        field.name, kind, optional, field.default, meta["help"], meta["choices"], meta["resumable"]
    )


# What an unset (None) field means, for messages that show a saved or given value.
_UNSET_MEANS = {
    "layers": "the default (from the data and --hidden)",
    "hidden": f"the default {list(DEFAULT_HIDDEN)}",
    "loss": "the default (by task)",
    "epochs": f"unset ({DEFAULT_EPOCHS} unless --steps)",
    "steps": "unset (--epochs decides)",
    "weight_decay": "Keras's default",
    "verify_tolerance": "the default (1e-9 float64, 1e-4 float32)",
    "workdir": "the default (a new folder under runs/)",
}


def describe(name: str, value: Any) -> str:
    """A field's value as a message shows it: `[8]`, `'half_mse'`, or what None means for it
    (`the default [3, 3]`)."""
    if value is None:
        return _UNSET_MEANS.get(name, "unset")
    return repr(list(value) if isinstance(value, tuple) else value)


# Fields a resumed run may change: they change neither the model nor the data.
RESUMABLE_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"])


def from_preset(preset: str = "default", **overrides: Any) -> TrainConfig:
    """A config with the preset's values, then `overrides` (e.g. the flags given explicitly)."""
    _choice("preset", preset, PRESETS)
    values = dict(PRESET_VALUES[preset])
    # The run length is one choice: an explicit epochs replaces a preset's steps and vice versa.
    if "epochs" in overrides:
        values.pop("steps", None)
    if "steps" in overrides:
        values.pop("epochs", None)
    # So is the net's shape: an explicit hidden replaces a preset's layers and vice versa.
    if "hidden" in overrides:
        values.pop("layers", None)
    if "layers" in overrides:
        values.pop("hidden", None)
    return TrainConfig(**{**values, **overrides, "preset": preset})


def _wrap(check, *args) -> None:
    try:
        check(*args)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    _wrap(arguments.check_name, name, value, valid)


def _positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}: expected {_a_number(value)} > 0, got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < low
    ):
        raise ConfigError(f"{name}: expected {_a_number(value)} ≥ {low:g}, got {value!r}")


def _a_number(value) -> str:
    """ "a finite number" for inf and nan (inf is ≥ 0, and refused for not being finite), else
    "a number"."""
    finite = not isinstance(value, (int, float)) or isinstance(value, bool) or math.isfinite(value)
    return "a number" if finite else "a finite number"
