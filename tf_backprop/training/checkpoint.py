"""Checkpoints and resume: everything a run needs to continue bit-identically.

A checkpoint in ``<workdir>/ckpt`` (a `tf.train.CheckpointManager`) holds

* ``model`` and ``weights``: the weights (the first format held them only under ``weights``);
* ``optimizer``: its slots and iteration count (= the global step);
* ``state``: the `RunState` variables: epoch and step within it (the data order is a pure
  function of (seed, epoch), so that is the data-order state), the current epoch's running
  loss and metric sums, and the early-stopping state with its best weights (the first format
  also held the history, as one JSON string rewritten at every save);
* ``health``: the gradient-health detector's counters (absent from the first format).

Beside them, ``ckpt/history.jsonl`` holds the per-epoch records, appended before each save.

Gradient accumulation happens inside one update (engine), so no accumulation buffer is ever
half-filled at a checkpoint.  `tf.train.CheckpointManager` writes the data files first and the
``checkpoint`` index last, atomically, so a kill mid-save leaves the previous "latest" intact;
a truncated or corrupt latest checkpoint is skipped with a warning (`restore_latest`).  A kill
mid-save leaves temporaries (``ckpt-N_temp/``, ``*.tempstate*``, ``checkpoint.tmp*``), which
`remove_temporaries` deletes before a run starts.

The resume checks (same model and data, not trained past the run asked for): `resume`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop import files, text
from tf_backprop.model import MLP
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.errors import CheckpointError

CHECKPOINT_DIR = "ckpt"
HISTORY_FILE = "history.jsonl"  # in CHECKPOINT_DIR
CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
# config.json's "format": what marks a folder as a run folder of this package.
RUN_FORMAT = "tf_backprop.run"
RUN_FORMAT_VERSION = 2
# The format version from which --batch_size is the global batch under a strategy (before it, the
# per-replica batch; a run folder without a version predates the marker).
GLOBAL_BATCH_VERSION = 2
_FORMAT_KEYS = ("format", "format_version")
# What a kill in the middle of a save leaves in ckpt/: TF's sharded save writes
# ckpt-N_temp/part-*, then merges them into ckpt-N.index and .data-* (each first written as
# <name>.tempstate<random>); the `checkpoint` index is written to checkpoint.tmp<hex>, then renamed.
_TEMPORARY = re.compile(r"ckpt-\d+_temp|.+\.tempstate\d+|checkpoint\.tmp[0-9a-f]+")

# What reading a damaged checkpoint raises: tf.errors.OpError from the restore ops; from TF's
# pybind checkpoint reader (e.g. a truncated data file: "Read less bytes than requested"),
# IndexError or ValueError, which it does not translate into OpError; AssertionError or
# ValueError when the objects do not match.
_UNREADABLE = (tf.errors.OpError, ValueError, AssertionError, IndexError)


class RunState(tf.Module):
    """The run's progress as variables, so it is saved with the model and optimizer."""

    def __init__(self, model: MLP):
        super().__init__(name="run_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.epoch_metric_sums = tf.Variable(tf.zeros([3], tf.float64), trainable=False)
        self.best_val_loss = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
        self.waited = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.stopped = tf.Variable(False, trainable=False)  # early-stopped: nothing left to do
        self.best_weights = [tf.Variable(w, trainable=False) for w in model.weights]
        # The gradient-health detector's counters (JSON).  Saved beside the state, not in it:
        # checkpoints of the first format lack it, so Keeper restores it leniently.
        self.health_json = self._no_dependency(tf.Variable("{}", dtype=tf.string, trainable=False))
        self._records = self._no_dependency([])  # the history: one dict per completed epoch

    @property
    def variables_changed_by_training(self) -> list[tf.Variable]:
        """What a training call updates besides the weights and the optimizer (for a restore)."""
        counters = [self.epoch, self.step_in_epoch, self.epoch_loss_sum, self.epoch_metric_sums]
        return [*counters, self.best_val_loss, self.waited, self.stopped, *self.best_weights]

    # Methods, not a property setter: tf.Module would wrap an assigned list for tracking.
    def history(self) -> list[dict]:
        """The per-epoch records so far (kept in memory; Keeper writes them beside the
        checkpoints, appending only the new ones)."""
        return list(self._records)

    def append_history(self, record: dict) -> None:
        self._records.append(record)

    def set_history(self, records: list[dict]) -> None:
        del self._records[:]
        self._records.extend(records)


def _weights(model: MLP) -> tf.Module:
    """The model's variables, in order, as a checkpointable object.

    The first MLP hid its layers from tf.train.Checkpoint (Keras 3 does not track a Python list
    for it), so its runs' checkpoints hold the weights only under this holder; it stays so that
    load_model reads them.  Checkpoints now also hold them under `model`.
    """
    holder = tf.Module(name="weights")
    holder.values = list(model.weights)
    return holder


class Keeper:
    """Saves and restores checkpoints of one run, and the history beside them.

    The history goes to ``ckpt/history.jsonl``, one JSON line per epoch, appended before each
    checkpoint (so a save costs O(new records), not O(history)); a checkpoint at epoch k stands
    for the file's first k lines, and a resume drops any line after them.
    """

    def __init__(self, workdir: str, model: MLP, optimizer, state: RunState, keep: int = 3):
        self.directory = os.path.join(workdir, CHECKPOINT_DIR)
        required = {"model": model, "weights": _weights(model), "optimizer": optimizer, "state": state}
        self.checkpoint = tf.train.Checkpoint(**required, health=state.health_json)  # what is saved
        self._required = tf.train.Checkpoint(**required)
        self._optional = tf.train.Checkpoint(health=state.health_json)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)
        self.optimizer, self.state = optimizer, state
        self.history_path = os.path.join(self.directory, HISTORY_FILE)
        self.written = 0  # history records already in the file

    def save(self) -> str:
        """Appends the new history records, then writes a checkpoint numbered by the global step."""
        self._append_history()
        path = self.manager.save(checkpoint_number=int(self.optimizer.iterations.numpy()))
        logging.info("checkpoint %s", path)
        return path

    def _append_history(self) -> None:
        records = self.state.history()[self.written :]
        if not records:
            return
        os.makedirs(self.directory, exist_ok=True)
        with open(self.history_path, "a", encoding="utf-8") as handle:
            handle.writelines(files.dumps(r, sort_keys=True) + "\n" for r in records)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the checkpoint that counts them
        self.written += len(records)

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint and its history; None when there is none.

        A checkpoint that fails to read is skipped with a warning; if checkpoints exist but
        none can be read, CheckpointError.
        """
        candidates = list(reversed(self.manager.checkpoints))
        for path in candidates:
            try:
                # expect_partial: `health`, in the checkpoint but restored by _optional, is
                # otherwise reported as an unrestored value when the status is deleted.
                self._required.restore(path).expect_partial().assert_existing_objects_matched()
                self._optional.restore(path).expect_partial()
                self._restore_history(path)
            except _UNREADABLE as error:
                logging.warning(
                    "checkpoint %s is unreadable (%s); trying the previous one", path, text.first_line(error)
                )
                continue
            return path
        if candidates:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} (tried {len(candidates)}); "
                f"rerun with --restart to start over"
            )
        return None

    def _restore_history(self, path: str) -> None:
        """The checkpoint's epochs of history, from history.jsonl (or, for a checkpoint of the
        first format, from its own history_json); the file is cut back to them."""
        epochs = int(self.state.epoch.numpy())
        in_file, clean = _read_history(self.history_path)
        records = in_file[:epochs]
        if len(records) < epochs:
            records = max(records, _legacy_history(path)[:epochs], key=len)
        if len(records) < epochs:
            logging.warning(
                "%s holds %d of the checkpoint's %d epochs of history; metrics.json will lack the rest",
                self.history_path, len(records), epochs,
            )  # fmt: skip
        self.state.set_history(records)
        if len(in_file) != len(records) or not clean:  # lines from after the checkpoint go
            files.write_text(
                self.history_path, "".join(files.dumps(r, sort_keys=True) + "\n" for r in records)
            )
        self.written = len(records)


def _read_history(path: str) -> tuple[list[dict], bool]:
    """The complete JSON lines of a history file, and whether every line was complete (a line
    cut short by a kill, and anything after it, is dropped)."""
    if not os.path.exists(path):
        return [], True
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                return records, False
    return records, True


def _legacy_history(path: str) -> list[dict]:
    """The history a first-format checkpoint kept in its run state (a JSON string variable)."""
    reader = tf.train.load_checkpoint(path)
    key = "state/history_json/.ATTRIBUTES/VARIABLE_VALUE"
    if not reader.has_tensor(key):
        return []
    return json.loads(reader.get_tensor(key).decode())


def config_document(config: TrainConfig) -> dict:
    """config.json's content: the run-folder format marker, then every config field."""
    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, **config.to_dict()}


def is_config_document(document) -> bool:
    """Whether a parsed config.json was written by this package: it has the format marker, or
    (runs written before the marker) it holds TrainConfig fields only, data and seed among them."""
    if not isinstance(document, dict):
        return False
    if "format" in document:
        return document["format"] == RUN_FORMAT
    return {"data", "seed"} <= set(document) <= {f.name for f in dataclasses.fields(TrainConfig)}


def config_fields(document) -> dict:
    """The TrainConfig fields of a config.json document (the format marker dropped); ValueError
    if it is not a JSON object."""
    return {k: v for k, v in json_object(document).items() if k not in _FORMAT_KEYS}


def json_object(document) -> dict:
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {type(document).__name__}")
    return document


def remove_temporaries(workdir: str) -> list[str]:
    """Deletes what a kill during a checkpoint save left in <workdir>/ckpt; their names."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    names = sorted(name for name in os.listdir(directory) if _TEMPORARY.fullmatch(name))
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if names:
        logging.info(
            "removed what an interrupted checkpoint save left in %s: %s", directory, ", ".join(names)
        )
    return names


def load_model(
    workdir: str, checkpoint: str | None = None
) -> tuple[MLP, TrainConfig, data_lib.Preprocessing]:
    """The trained model of a run, with its config and data statistics.

    Args:
      workdir: a run folder (config.json, data.json, ckpt/).
      checkpoint: a checkpoint path or name inside ckpt/ (e.g. "ckpt-480"); None = latest.

    Raises CheckpointError when a file is missing or the checkpoint cannot be read.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise CheckpointError(f"{workdir}: is a file, not a run folder")
    config = read_run_json(workdir, CONFIG_FILE, lambda saved: TrainConfig.from_dict(config_fields(saved)))
    preprocessing = read_run_json(workdir, DATA_FILE, data_lib.Preprocessing.from_dict)
    model = config.model_spec(len(preprocessing.feature_names), preprocessing.n_outputs).build()
    path = _checkpoint_path(workdir, checkpoint)
    try:
        reader = tf.train.Checkpoint(model=model, weights=_weights(model))
        reader.restore(path).expect_partial().assert_existing_objects_matched()
    except _UNREADABLE as error:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({text.first_line(error)}){_others(workdir, path)}"
        ) from None
    return model, config, preprocessing


def _others(workdir: str, path: str) -> str:
    """'; the run's other checkpoints: ckpt-600, ckpt-400 (give one as --checkpoint)', or ''."""
    state = tf.train.get_checkpoint_state(os.path.join(workdir, CHECKPOINT_DIR))
    listed = [] if state is None else list(reversed(state.all_model_checkpoint_paths))
    names = [os.path.basename(p) for p in listed if os.path.basename(p) != os.path.basename(path)]
    if not names:
        return "; the run has no other checkpoint"
    return f"; the run's other checkpoints: {', '.join(names)} (give one as --checkpoint)"


def _checkpoint_path(workdir: str, checkpoint: str | None) -> str:
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if checkpoint is None:
        path = tf.train.latest_checkpoint(directory)
        if path is None:
            raise CheckpointError(f"{directory}: no checkpoint found (has the run saved one?)")
        return path
    path = checkpoint if os.path.dirname(checkpoint) else os.path.join(directory, checkpoint)
    if not tf.io.gfile.exists(path + ".index"):
        raise CheckpointError(
            f"checkpoint {checkpoint!r} not found (looked for {path}.index){_others(workdir, path)}"
        )
    return path


def read_run_json(workdir: str, name: str, parse):
    """parse(the JSON file `name` in workdir); CheckpointError naming the file when it is missing
    or unreadable."""
    path = os.path.join(workdir, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(json.load(handle))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; is {workdir} a tf_backprop run folder?") from None
    except (json.JSONDecodeError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None
