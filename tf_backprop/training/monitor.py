"""Gradient health: TensorBoard events of a run and vanishing/exploding detection.

The engine measures, inside its compiled call, the last step of every call: each variable's
gradient norm, weight norm and update ratio ‖ΔW‖/‖W‖, plus that step's gradients and
activations.  `Monitor` writes them per call to ``<workdir>/tb/train`` (epoch metrics of the
validation split go to ``<workdir>/tb/validation``) and watches the kernel gradient norms:

* **vanishing**: a hidden layer's ‖∂L/∂W‖ stays below ``vanishing_ratio`` × the output layer's,
  or below ``vanishing_floor``, for ``health_patience`` consecutive measurements;
* **exploding**: a layer's ‖∂L/∂W‖ is above ``exploding_threshold`` or not finite.

Tags (TensorBoard):

====================================  ===========================================================
``loss``, ``rmse``/``mae``/``accuracy``  per epoch, in tb/train (running means) and tb/validation
``learning_rate``                     per engine call
``gradient_norm/<layer>/<kernel|bias>``  ‖∂L/∂θ‖ at the measured step
``weight_norm/<layer>/<kernel|bias>``    ‖θ‖ after that step's update
``update_ratio/<layer>/<kernel|bias>``   ‖Δθ‖/‖θ‖ of that update (healthy: roughly 1e-4..1e-2)
``verify/max_rel_error/<layer>/<var>``   tape↔manual disagreement at each call's last verified step
``weights/…``, ``gradients/…``, ``activations/<layer>``  histograms every histogram_every steps
====================================  ===========================================================

A resumed run continues its event files without repeating steps: before it writes, the events
of steps after the checkpoint it resumed from (written by the run that was killed after that
checkpoint) are deleted from the existing files (`drop_events_after`), so every reader —
TensorBoard, `tf.compat.v1.train.summary_iterator`, pandas — sees each step once.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2
from tensorflow.core.util import event_pb2

from tf_backprop import backprop, files
from tf_backprop.model import MLP, MLPSpec
from tf_backprop.training.errors import write_failure_reason

HISTOGRAM_BUCKETS = 30  # TensorBoard's default


# tf.summary.scalar/histogram live in the tensorboard package, an optional extra here; these
# write the same event records (TensorBoard's v2 formats) with TensorFlow alone.
def _metadata(plugin: str) -> bytes:
    plugin_data = summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    return summary_pb2.SummaryMetadata(plugin_data=plugin_data).SerializeToString()


_SCALAR_METADATA = _metadata("scalars")
_HISTOGRAM_METADATA = _metadata("histograms")


def _scalar(tag: str, value, step=None) -> None:
    """A scalar as TensorBoard's scalars plugin stores it (float32, rank 0)."""
    tf.summary.write(tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def _histogram(tag: str, values, step=None) -> None:
    """A histogram as TensorBoard's v2 histograms plugin stores it: [buckets, 3] of (left, right, count)."""
    tf.summary.write(tag, histogram_buckets(values), step=step, metadata=_HISTOGRAM_METADATA)


def histogram_buckets(values, buckets: int = HISTOGRAM_BUCKETS) -> tf.Tensor:
    """[buckets, 3] float64 rows (left edge, right edge, count) over the finite values, in TF ops."""
    flat = tf.reshape(tf.cast(values, tf.float64), [-1])
    flat = tf.boolean_mask(flat, tf.math.is_finite(flat))
    if flat.shape[0] == 0:
        return tf.zeros([0, 3], tf.float64)
    low, high = tf.reduce_min(flat), tf.reduce_max(flat)
    # A constant tensor gets one bucket around its value, wide enough to survive rounding
    # (±0.5 vanishes next to values above 2^53, e.g. the weights of a diverged run).
    same = tf.equal(low, high)
    half = tf.maximum(tf.abs(low) * 1e-3, tf.constant(0.5, tf.float64))
    low, high = tf.where(same, low - half, low), tf.where(same, high + half, high)
    counts = tf.cast(tf.histogram_fixed_width(flat, tf.stack([low, high]), nbins=buckets), tf.float64)
    edges = tf.linspace(low, high, buckets + 1)
    return tf.stack([edges[:-1], edges[1:], counts], axis=1)


@dataclasses.dataclass
class HealthThresholds:
    """When a layer's gradients count as vanishing or exploding (see module docstring)."""

    vanishing_ratio: float = 1e-3
    vanishing_floor: float = 1e-10
    exploding_threshold: float = 1e3
    patience: int = 3


_REPORTED_EVENTS = 50  # metrics.json lists the first this many warning events


STUCK_REASON = (
    "(every gradient is exactly 0: no weight moves; a ReLU output that is 0 on every row, as in "
    "the article's net, or a loss of exactly 0)"
)


class HealthDetector:
    """Counts vanishing/exploding kernel gradients over consecutive measurements."""

    def __init__(self, layer_names: list[str], thresholds: HealthThresholds):
        self.layer_names, self.thresholds = layer_names, thresholds
        self.streak = [0] * len(layer_names)
        self.warnings = {"vanishing": 0, "exploding": 0}
        self.events: list[dict] = []
        self.stuck_warned = False  # every gradient was exactly 0 once: said once a run

    def observe(self, step: int, kernel_grad_norms: np.ndarray) -> list[str]:
        """Checks one measurement ([n_layers], output layer last); returns the warnings raised."""
        t, messages = self.thresholds, []
        output_norm = kernel_grad_norms[-1]
        if not np.any(kernel_grad_norms):
            # Every gradient exactly 0: no weight moves, now or later.  Said at once (no
            # patience) and once a run, in place of a warning per layer.
            if self.stuck_warned:
                return []
            self.stuck_warned = True
            return [self._warn("vanishing", step, "every layer", 0.0, STUCK_REASON)]
        for index, (name, norm) in enumerate(zip(self.layer_names, kernel_grad_norms)):
            if not np.isfinite(norm) or norm > t.exploding_threshold:
                messages.append(self._warn("exploding", step, name, norm, f"> {t.exploding_threshold:g}"))
            is_hidden = index < len(self.layer_names) - 1
            small = norm < t.vanishing_floor or (is_hidden and norm < t.vanishing_ratio * output_norm)
            self.streak[index] = self.streak[index] + 1 if small else 0
            if self.streak[index] == t.patience:
                ratio = norm / output_norm if output_norm else float("nan")
                messages.append(
                    self._warn("vanishing", step, name, norm, f"= {ratio:.3g} × the output layer's")
                )
        return messages

    def _warn(self, kind: str, step: int, layer: str, norm: float, why: str) -> str:
        self.warnings[kind] += 1
        if len(self.events) < _REPORTED_EVENTS:
            self.events.append({"kind": kind, "step": step, "layer": layer, "gradient_norm": float(norm)})
        message = f"{kind} gradients in {layer} at step {step}: ‖∂L/∂W‖ = {norm:.3g} {why}"
        logging.warning(message)
        return message

    def summary(self) -> dict:
        """For metrics.json: warning counts and the first few events."""
        return {"warnings": dict(self.warnings), "events": list(self.events)}

    def state(self) -> dict:
        """Everything observe() accumulates (JSON-ready), for checkpoints."""
        return {"streak": list(self.streak), "stuck_warned": self.stuck_warned, **self.summary()}

    def load_state(self, state: dict) -> None:
        """Continues from a state() saved by the same run; {} (nothing saved) starts afresh."""
        if state:
            self.streak = list(state["streak"])
            self.warnings = dict(state["warnings"])
            self.events = list(state["events"])
            self.stuck_warned = bool(state.get("stuck_warned", False))  # absent in older checkpoints


_EVENT_FILES = "events.out.tfevents.*"


def drop_events_after(directory: str, step: int) -> int:
    """Deletes the events of steps after `step` from the event files in `directory`.

    For a run resuming at `step`: the run killed after that checkpoint wrote them, and the
    resumed run writes those steps again.  A file left with no event but its header is
    removed; a record cut short by a kill is dropped.  Each file is rewritten atomically.
    Returns the number of events dropped.
    """
    dropped = 0
    for stale in glob.glob(os.path.join(directory, ".events.tmp-*")):  # a rewrite killed midway
        os.remove(stale)
    for path in sorted(glob.glob(os.path.join(directory, _EVENT_FILES))):
        kept, count = _events_up_to(path, step)
        dropped += count
        if count and any(not event_pb2.Event.FromString(raw).HasField("file_version") for raw in kept):
            _write_records(path, kept)
        elif count:
            os.remove(path)
    if dropped:
        logging.info(
            "%s: dropped %d events of steps after %d (the resumed run writes them again)",
            directory,
            dropped,
            step,
        )
    return dropped


def _events_up_to(path: str, step: int) -> tuple[list[bytes], int]:
    """The serialized events of `path` at steps ≤ step, and how many others there were."""
    kept, dropped = [], 0
    try:
        for record in tf.data.TFRecordDataset(path):
            raw = record.numpy()
            if event_pb2.Event.FromString(raw).step <= step:
                kept.append(raw)
            else:
                dropped += 1
    except tf.errors.DataLossError:  # the last record was cut short by a kill
        dropped += 1
    return kept, dropped


def _write_records(path: str, records: list[bytes]) -> None:
    """Replaces the event file `path` by these records (a name without "tfevents" meanwhile,
    so that TensorBoard never reads the partial file)."""
    temporary = files.hidden_sibling(os.path.join(os.path.dirname(path), "events"), "tmp")
    with tf.io.TFRecordWriter(temporary) as writer:
        for raw in records:
            writer.write(raw)
    os.replace(temporary, path)


def _event_writer(directory: str):
    """A summary file writer into `directory`; OSError naming it when it cannot be made (a full
    disk: TensorFlow writes the file's first event at once)."""
    try:
        return tf.summary.create_file_writer(directory)
    except tf.errors.OpError as error:
        logging.debug("event writer not made", exc_info=True)
        raise OSError(
            f"{directory}: cannot write the TensorBoard events ({write_failure_reason(error)})"
        ) from None


class Monitor:
    """Writes a run's TensorBoard events and runs the health detector.

    start_step: the step the run starts or resumes at; events of later steps already in the
    workdir's event files are dropped first (`drop_events_after`).
    """

    def __init__(
        self,
        workdir: str,
        model: MLP,
        thresholds: HealthThresholds,
        histogram_every: int,
        start_step: int = 0,
    ):
        self.variable_names = model.variable_names
        self.layer_names = [layer.name for layer in model.dense_layers]
        self.detector = HealthDetector(self.layer_names, thresholds)
        self.histogram_every = histogram_every
        self.last_histogram = -1
        self._epoch_writers: dict = {}  # (training tags, validation tags) -> a compiled writer
        train, validation = (os.path.join(workdir, "tb", split) for split in ("train", "validation"))
        for directory in (train, validation):
            drop_events_after(directory, start_step)
        self.train_writer, self.validation_writer = (_event_writer(d) for d in (train, validation))

    def log_call(self, step: int, out: dict, learning_rate, verify_every: int, variables) -> None:
        """Scalars (and histograms when due) of the engine call that ended at `step`."""
        verified_step = step - step % verify_every if verify_every else -1
        self._write_scalars(
            tf.constant(step, tf.int64),
            out["health"],
            learning_rate,
            tf.constant(verified_step, tf.int64),
            out["verify_error"],
            verified=bool(verify_every),
        )
        if self.histogram_every and step // self.histogram_every > self.last_histogram:
            self.last_histogram = step // self.histogram_every
            self._write_histograms(
                tf.constant(step, tf.int64), out["gradients"], list(variables), out["activations"]
            )
        self.detector.observe(step, np.asarray(out["health"])[0, 0::2])  # kernels sit at even indices

    # Compiled (not XLA): one call writes every tag of an engine call; eager writes cost ~100 µs each.
    # Traced without autograph: its conversion of the summary code cost ~0.1 s of the default run.
    @functools.partial(tf.function, autograph=False)
    def _write_scalars(self, step, health, learning_rate, verified_step, verify_error, verified: bool):
        with self.train_writer.as_default(step=step):
            _scalar("learning_rate", learning_rate)
            for index, name in enumerate(self.variable_names):
                _scalar(f"gradient_norm/{name}", health[0, index])
                _scalar(f"weight_norm/{name}", health[1, index])
                _scalar(f"update_ratio/{name}", health[2, index])
            if verified:  # the run verifies (a Python bool: one trace per run)
                for index, name in enumerate(self.variable_names):
                    _scalar(f"verify/max_rel_error/{name}", verify_error[index], step=verified_step)

    @functools.partial(tf.function, autograph=False)
    def _write_histograms(self, step, gradients, variables, activations):
        with self.train_writer.as_default(step=step):
            for name, gradient, variable in zip(self.variable_names, gradients, variables):
                _histogram(f"gradients/{name}", gradient)
                _histogram(f"weights/{name}", variable)
            for name, activation in zip(self.layer_names, activations):
                _histogram(f"activations/{name}", activation)

    def log_epochs(self, steps: list[int], records: list[dict]) -> None:
        """Epoch metrics: training ones to tb/train, val_* to tb/validation (same tag names).

        One compiled call writes every record of an engine call (an eager write costs ~100 µs
        a tag, as much as thousands of the article net's steps).
        """
        if not records:
            return
        train = tuple(k for k in records[0] if k != "epoch" and not k.startswith("val_"))
        validation = tuple(k for k in records[0] if k.startswith("val_"))
        values = tf.constant([[r[k] for k in train + validation] for r in records], tf.float64)
        key = (train, validation)
        if key not in self._epoch_writers:  # traced once: any number of records
            signature = [
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None, len(train + validation)], tf.float64),
            ]
            write = functools.partial(self._write_epochs, train=train, validation=validation)
            self._epoch_writers[key] = tf.function(write, input_signature=signature, autograph=False)
        self._epoch_writers[key](tf.constant(steps, tf.int64), values)

    def _write_epochs(self, steps, values, train: tuple[str, ...], validation: tuple[str, ...]):
        def write(i):
            with self.train_writer.as_default(step=steps[i]):
                for j, key in enumerate(train):
                    _scalar(key, values[i, j])
            with self.validation_writer.as_default(step=steps[i]):
                for j, key in enumerate(validation):
                    _scalar(key[len("val_") :], values[i, len(train) + j])
            return i + 1

        tf.while_loop(lambda i: i < tf.shape(steps)[0], write, [tf.constant(0)])

    def close(self) -> None:
        self.train_writer.flush()
        self.validation_writer.flush()
        self.train_writer.close()
        self.validation_writer.close()


def gradient_norms_at_init(
    layer_sizes,
    activation: str,
    initializer: str,
    *,
    loss: str = "mse",
    batches: int = 4,
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Per-layer kernel gradient norms of a freshly initialized MLP on random data.

    Averages ‖∂L/∂W_l‖ over `batches` random batches (x ~ N(0, 1), targets suited to `loss`);
    returns {"layers": [...], "gradient_norm": [...], "ratio_to_output": [...]}.
    """
    model = MLPSpec(layer_sizes, activation, initializer=initializer, dtype="float64", seed=seed).build()
    rng = np.random.default_rng(seed)
    norms = np.zeros(len(model.dense_layers))
    for _ in range(batches):
        x = rng.standard_normal((batch_size, layer_sizes[0]))
        y = _random_targets(rng, loss, batch_size, layer_sizes[-1])
        _, grads = backprop.tape_gradients(model, x, y, loss)
        norms += np.array([float(tf.norm(g)) for g in grads[0::2]]) / batches
    return {
        "layers": [layer.name for layer in model.dense_layers],
        "gradient_norm": norms.tolist(),
        "ratio_to_output": _ratios(norms, norms[-1]).tolist(),
    }


def _random_targets(rng: np.random.Generator, loss: str, m: int, k: int) -> np.ndarray:
    if loss == "categorical_crossentropy":
        return rng.integers(0, k, size=m)
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, size=(m, k)).astype(np.float64)
    return rng.standard_normal((m, k))


def from_config(config, workdir: str, model: MLP, start_step: int = 0) -> Monitor | None:
    """The run's Monitor (config: a TrainConfig; start_step as for Monitor), or None with
    monitoring off."""
    if not config.monitor:
        return None
    thresholds = HealthThresholds(
        config.vanishing_ratio, config.vanishing_floor, config.exploding_threshold, config.health_patience
    )
    return Monitor(workdir, model, thresholds, config.histogram_every, start_step)


def _ratios(norms: np.ndarray, output: float) -> np.ndarray:
    """norms ÷ the output layer's; 0 ÷ 0 is NaN (no gradient at all), without NumPy's warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return norms / output


def health_verdicts(report: dict, vanishing_ratio: float, exploding_threshold: float) -> list[str]:
    """'ok', 'vanishing' or 'exploding' per layer of a `gradient_norms_at_init` report: exploding
    at or above the threshold (or not finite), vanishing below the ratio to the output layer's
    norm — or with no gradient at all (0 ÷ 0)."""
    out = []
    for norm, ratio in zip(report["gradient_norm"], report["ratio_to_output"]):
        if not norm < exploding_threshold:
            out.append("exploding")
        elif not ratio >= vanishing_ratio:  # NaN: 0 ÷ 0
            out.append("vanishing")
        else:
            out.append("ok")
    return out
