"""Training configuration: one validated dataclass, filled by the CLI from flags.

`TrainConfig.validate()` runs once, at construction; every error is a `ConfigError` naming the
field (= the flag) and what was expected.  The config is written as JSON into the run's workdir.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from tf_backprop import activations, model

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
LR_SCHEDULES = ("constant", "cosine", "exponential", "step")
GRAD_SOURCES = ("tape", "manual")
DEVICES = ("auto", "cpu", "gpu")
STRATEGIES = ("none", "mirrored", "multi_worker")
TASKS = ("auto", "regression", "binary", "multiclass")
LOSS_NAMES = ("mse", "half_mse", "binary_crossentropy", "categorical_crossentropy")
PRESETS = ("default", "article")
DEFAULT_HIDDEN = (3, 3)  # the article's two hidden layers of 3
DEFAULT_EPOCHS = 60
MIN_AUTO_CHUNK, MAX_AUTO_CHUNK = 20, 10_000


class ConfigError(ValueError):
    """A config field is out of range or inconsistent; the message names the field."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.  Defaults train the article's 2-3-3-1 net."""

    # --- model ---
    layers: tuple[int, ...] | None = None  # full widths [n_0, ..., n_L]; None: from data + hidden
    hidden: tuple[int, ...] | None = None  # hidden widths; None: layers[1:-1], or (3, 3)
    activation: str = "relu"  # hidden activation
    output_activation: str = "linear"  # linear for regression and for the logit losses
    initializer: str = "glorot_uniform"  # kernel initializer; biases start at zero
    dtype: str = "float32"
    # --- loss and data ---
    loss: str | None = None  # None: mse / binary / categorical cross-entropy by task
    task: str = "auto"  # regression | binary | multiclass, or inferred from target and loss
    l2: float = 0.0  # λ of the λ/2 Σ‖W‖² penalty on kernels
    data: str = "regression"  # synthetic task name, or csv:PATH
    target: str | None = None  # target column of a CSV
    n_samples: int = 1000  # size of a synthetic data set
    noise: float = 0.05  # noise std of the synthetic tasks
    standardize: bool = True  # features (and regression targets) by train-split statistics
    val_split: float = 0.1
    test_split: float = 0.1
    shuffle: bool = True  # reshuffle the training split every epoch
    # --- optimization ---
    optimizer: str = "adam"
    learning_rate: float = 0.01
    lr_schedule: str = "constant"
    lr_decay_steps: int = 1000  # exponential / step: steps per decay; cosine: 0 = the whole run
    lr_decay_rate: float = 0.5  # exponential / step: factor per lr_decay_steps
    lr_alpha: float = 0.0  # cosine: final learning rate as a fraction of the initial one
    momentum: float = 0.9  # momentum / nesterov / rmsprop
    weight_decay: float | None = None  # decoupled weight decay (Keras optimizers' weight_decay)
    clip_norm: float | None = None  # clip each gradient's norm (Keras clipnorm)
    clip_global_norm: float | None = None  # clip the global norm (Keras global_clipnorm)
    clip_value: float | None = None  # clip each element (Keras clipvalue)
    batch_size: int = 10  # per update, per micro-batch when accumulating; per replica under a strategy
    grad_accum_steps: int = 1  # micro-batches summed into one update
    epochs: int | None = None  # passes over the training split; None: 60 unless steps is set
    steps: int | None = None  # total updates instead of epochs (the last epoch may be partial)
    patience: int = 0  # early stopping on validation loss; 0 = off
    restore_best: bool = True  # with early stopping, end on the best validation weights
    # --- gradient source and verification ---
    grad_source: str = "tape"
    verify_every: int = 0  # compare tape and manual every N steps; 0 = off
    verify_tolerance: float | None = None  # None: 1e-9 in float64, 1e-4 in float32
    # --- run ---
    seed: int = 0
    device: str = "auto"
    strategy: str = "none"  # none | mirrored (local GPUs or cpu_replicas CPUs) | multi_worker (TF_CONFIG)
    cpu_replicas: int = 0  # mirrored: replicas on this many logical CPU devices; 0 = the local GPUs
    steps_per_call: int = 0  # updates per compiled call; 0 = auto (~1e10 FLOPs, 20..10000 steps)
    workdir: str | None = None  # None: a new timestamped folder under ./runs/
    checkpoint_every: int = 0  # save every N steps; 0 = at the end of every epoch
    keep_checkpoints: int = 3  # how many recent checkpoints ckpt/ keeps
    export: bool = True  # write a SavedModel to <workdir>/export at the end
    # --- monitoring (TensorBoard under <workdir>/tb, gradient health) ---
    monitor: bool = True  # per-layer gradient statistics, measured at the last step of each chunk
    # Histograms of weights, gradients, activations every N steps; 0 = off (as in Keras's
    # TensorBoard callback: each costs ~4 ms of TF ops for the article's net, 10% of a chunk).
    histogram_every: int = 0
    vanishing_ratio: float = 1e-3  # a layer's ‖∂L/∂W‖ below this × the output layer's is "vanishing"
    vanishing_floor: float = 1e-10  # ... or below this absolute norm
    exploding_threshold: float = 1e3  # a layer's ‖∂L/∂W‖ above this is "exploding"
    health_patience: int = 3  # consecutive measurements before a vanishing warning
    preset: str = "default"

    def __post_init__(self):
        for name in ("layers", "hidden"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raises ConfigError naming the first bad field."""
        self._validate_model()
        self._validate_data()
        self._validate_optimization()
        self._validate_run()

    def _validate_model(self) -> None:
        if self.layers is not None:
            _wrap(model.validate_layer_sizes, self.layers, "layers")
        hidden = self.hidden or ()
        if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden):
            raise ConfigError(f"hidden: expected positive integers, got {list(hidden)}")
        if self.layers is not None and self.hidden is not None and self.hidden != self.layers[1:-1]:
            raise ConfigError(
                f"hidden: {list(self.hidden)} contradicts layers {list(self.layers)} "
                f"(whose hidden widths are {list(self.layers[1:-1])}); give one of them"
            )
        _wrap(activations.get, self.activation)
        _wrap(activations.get, self.output_activation, activations.OUTPUT_ACTIVATIONS, "output_activation")
        _choice("initializer", self.initializer, tuple(model.INITIALIZERS))
        _choice("dtype", self.dtype, model.DTYPES)

    def _validate_data(self) -> None:
        if self.loss is not None:
            _choice("loss", self.loss, LOSS_NAMES)
        _choice("task", self.task, TASKS)
        _at_least("l2", self.l2, 0.0)
        _at_least("n_samples", self.n_samples, 1)
        _at_least("noise", self.noise, 0.0)
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}: expected a fraction in [0, 1), got {value}")
        if self.val_split + self.test_split >= 1.0:
            raise ConfigError(
                f"val_split + test_split: expected a sum below 1 (something left to train on), "
                f"got {self.val_split} + {self.test_split}"
            )
        if self.data.startswith("csv:") and not self.target:
            raise ConfigError("target: required with --data=csv:PATH (the column to predict)")

    def _validate_optimization(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _positive("learning_rate", self.learning_rate)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
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

    def _validate_run(self) -> None:
        _choice("grad_source", self.grad_source, GRAD_SOURCES)
        _at_least("verify_every", self.verify_every, 0)
        if self.verify_tolerance is not None:
            _positive("verify_tolerance", self.verify_tolerance)
        _choice("device", self.device, DEVICES)
        self._validate_strategy()
        _at_least("steps_per_call", self.steps_per_call, 0)
        _at_least("checkpoint_every", self.checkpoint_every, 0)
        _positive("keep_checkpoints", self.keep_checkpoints)
        _at_least("histogram_every", self.histogram_every, 0)
        _positive("vanishing_ratio", self.vanishing_ratio)
        _at_least("vanishing_floor", self.vanishing_floor, 0.0)
        _positive("exploding_threshold", self.exploding_threshold)
        _positive("health_patience", self.health_patience)
        _choice("preset", self.preset, PRESETS)

    def _validate_strategy(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        if (
            isinstance(self.cpu_replicas, bool)
            or not isinstance(self.cpu_replicas, int)
            or self.cpu_replicas < 0
        ):
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

    def chunk_steps(self, layer_sizes) -> int:
        """Steps per compiled call: steps_per_call, or auto.

        Auto sizes a chunk to about 1e10 FLOPs (≈ 0.1–0.5 s on a CPU), between 20 and 10000
        steps (20: the measured step of monitoring costs an extra forward pass per chunk): small nets get long chunks (per-call overhead amortized), large nets short ones
        (progress, signals and checkpoints stay responsive).  It depends on the config only,
        so an interrupted and a resumed run cut their chunks at the same steps.
        """
        if self.steps_per_call:
            return self.steps_per_call
        return int(min(MAX_AUTO_CHUNK, max(MIN_AUTO_CHUNK, 1e10 // self.step_flops(layer_sizes))))

    def step_flops(self, layer_sizes) -> int:
        """Floating-point operations of one update's matmuls (forward 2, backward 4 per weight)."""
        weights = sum(a * b for a, b in zip(layer_sizes, layer_sizes[1:]))
        return 6 * self.batch_size * self.grad_accum_steps * weights

    def total_steps(self, steps_per_epoch: int) -> int:
        """Updates in the whole run: `steps`, or `epochs` (default 60) full epochs."""
        return self.steps or (self.epochs or DEFAULT_EPOCHS) * steps_per_epoch

    def layer_sizes(self, n_features: int, n_outputs: int) -> tuple[int, ...]:
        """The full widths for data with n_features inputs and n_outputs outputs."""
        if self.layers is None:
            return (n_features, *(self.hidden if self.hidden is not None else DEFAULT_HIDDEN), n_outputs)
        if self.layers[0] != n_features or self.layers[-1] != n_outputs:
            raise ConfigError(
                f"layers: {list(self.layers)} does not fit the data, which has {n_features} "
                f"feature(s) and {n_outputs} output(s); expected [{n_features}, ..., {n_outputs}]"
            )
        return self.layers

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


def from_preset(preset: str = "default", **overrides: Any) -> TrainConfig:
    """A config with the preset's values, then `overrides` (e.g. the flags given explicitly)."""
    _choice("preset", preset, PRESETS)
    values = dict(PRESET_VALUES[preset])
    # The run length is one choice: an explicit epochs replaces a preset's steps and vice versa.
    if "epochs" in overrides:
        values.pop("steps", None)
    if "steps" in overrides:
        values.pop("epochs", None)
    return TrainConfig(**{**values, **overrides, "preset": preset})


def _wrap(check, *args) -> None:
    try:
        check(*args)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}: unknown name {value!r}; expected one of {', '.join(valid)}")


def _positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}: expected a number > 0, got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < low
    ):
        raise ConfigError(f"{name}: expected a number ≥ {low:g}, got {value!r}")
