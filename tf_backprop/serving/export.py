"""SavedModel export that serves without this package.

`export_saved_model` writes a SavedModel that needs only TensorFlow to load and serve:

* signature ``serving_default``: input ``features``, float32 [None, n_features], *raw* feature
  values (standardization is inside the graph).  Outputs, all float32 except class_ids:

  - regression: ``predictions`` [None, k], in the target's original units;
  - binary:     ``probabilities`` [None, 1] = sigmoid(logit), P(class_names[1]);
                ``class_ids`` int64 [None] (1 where the logit is > 0);
  - multiclass: ``probabilities`` [None, k] = softmax(logits); ``class_ids`` int64 [None].

* signature ``metadata`` (no inputs): string tensors ``task``, ``feature_names`` [n],
  ``class_names`` [k] (empty for regression), ``target_name``, ``config_json``,
  ``package_version`` and ``metadata_json`` (everything below as one JSON document);
* asset ``assets/metadata.json``: the same JSON document, readable as a plain file.

The folder appears atomically: it is written to a hidden temporary sibling and renamed into
place; an existing export is replaced (with overwrite=True) only once the new one is complete.

`tf_backprop.serving.served.load_export` loads such an export for serving;
`tf_backprop.serving.predict` runs it over a CSV.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from tf_backprop import __version__, files
from tf_backprop import data as data_lib
from tf_backprop.model import MLP
from tf_backprop.training import checkpoint as checkpoint_lib
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.errors import write_failure_reason

EXPORT_DIR = "export"  # <workdir>/export: where a run's SavedModel goes by default
SERVING_SIGNATURE = "serving_default"
METADATA_SIGNATURE = "metadata"
INPUT_NAME = "features"
METADATA_FILE = "metadata.json"  # in the SavedModel's assets/ folder
FORMAT = "tf_backprop.saved_model"
FORMAT_VERSION = 1
SAVED_MODEL_FILE = "saved_model.pb"


class ExportError(ValueError):
    """An export target that must not be written, or a folder that is not a usable export."""


# --- what the export contains -------------------------------------------------------------------


def output_specs(preprocessing: data_lib.Preprocessing) -> dict[str, dict]:
    """The serving signature's outputs for the task: {name: {"dtype", "shape"}}."""
    k = preprocessing.n_outputs
    if preprocessing.task == "regression":
        return {"predictions": {"dtype": "float32", "shape": [None, k]}}
    return {
        "probabilities": {"dtype": "float32", "shape": [None, k]},
        "class_ids": {"dtype": "int64", "shape": [None]},
    }


def build_metadata(model: MLP, preprocessing: data_lib.Preprocessing, config: TrainConfig | None) -> dict:
    """The JSON document stored in the export (assets/metadata.json and the metadata signature)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "tensorflow_version": tf.__version__,
        "task": preprocessing.task,
        "feature_names": list(preprocessing.feature_names),
        "target_name": preprocessing.target_name,
        "class_names": preprocessing.class_names,
        "signatures": {
            SERVING_SIGNATURE: {
                "inputs": {
                    INPUT_NAME: {"dtype": "float32", "shape": [None, len(preprocessing.feature_names)]}
                },
                "outputs": output_specs(preprocessing),
            }
        },
        "model": model.get_config(),
        "preprocessing": preprocessing.to_dict(),
        "config": None if config is None else config.to_dict(),
    }


def _check_compatible(model: MLP, preprocessing: data_lib.Preprocessing) -> None:
    """ExportError unless the model's input and output widths fit the preprocessing."""
    n, k = len(preprocessing.feature_names), preprocessing.n_outputs
    if model.layer_sizes[0] != n or model.layer_sizes[-1] != k:
        raise ExportError(
            f"model layer_sizes {list(model.layer_sizes)} do not fit the data's {n} feature(s) and "
            f"{k} output(s) ({preprocessing.task}); expected [{n}, ..., {k}]"
        )


def _serving_function(
    model: MLP, preprocessing: data_lib.Preprocessing
) -> tf.types.experimental.GenericFunction:
    """tf.function from raw float32 features [m, n] to the task's outputs (module docstring)."""
    mean = tf.constant(preprocessing.feature_mean, tf.float64)  # [n]
    std = tf.constant(preprocessing.feature_std, tf.float64)  # [n]
    spec = tf.TensorSpec([None, len(preprocessing.feature_names)], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec], autograph=False)
    def serve(features):
        # Standardize in float64, as data.Preprocessing does, then run in the model's dtype.
        x = (tf.cast(features, tf.float64) - mean) / std  # [m, n]
        forward = model.forward(tf.cast(x, model.compute_dtype), keep_intermediates=True)
        return _task_outputs(preprocessing, forward.zs[-1], forward.output)

    return serve


def _task_outputs(preprocessing: data_lib.Preprocessing, logits: tf.Tensor, output: tf.Tensor) -> dict:
    """Signature outputs from the last layer's pre-activation z_L and activation h_L, each [m, k]."""
    if preprocessing.task == "regression":
        scale = tf.constant(preprocessing.target_std, tf.float64)  # [k]
        shift = tf.constant(preprocessing.target_mean, tf.float64)  # [k]
        return {"predictions": tf.cast(tf.cast(output, tf.float64) * scale + shift, tf.float32)}
    # The cross-entropy losses train z_L as logits (linear output activation).
    if preprocessing.task == "binary":
        probabilities = tf.sigmoid(logits)  # [m, 1]
        class_ids = tf.cast(logits[:, 0] > 0, tf.int64)  # [m]
    else:
        probabilities = tf.nn.softmax(logits, axis=-1)  # [m, k]
        class_ids = tf.argmax(logits, axis=-1, output_type=tf.int64)  # [m]
    return {"probabilities": tf.cast(probabilities, tf.float32), "class_ids": class_ids}


def _metadata_function(metadata: dict) -> tf.types.experimental.GenericFunction:
    """tf.function with no inputs returning the metadata as string tensors."""
    values = {
        "task": metadata["task"],
        "feature_names": metadata["feature_names"],
        "class_names": metadata["class_names"] or [],
        "target_name": metadata["target_name"],
        "config_json": files.dumps(metadata["config"], sort_keys=True),
        "package_version": metadata["package_version"],
        "metadata_json": files.dumps(metadata, sort_keys=True),
    }

    @tf.function(input_signature=[], autograph=False)
    def read_metadata():
        return {name: tf.constant(value, tf.string) for name, value in values.items()}

    return read_metadata


class _ServingModule(tf.Module):
    """The SavedModel's root object: the weights, the two functions and the metadata asset."""

    def __init__(self, model: MLP, preprocessing: data_lib.Preprocessing, metadata: dict, metadata_path: str):
        super().__init__(name="tf_backprop_export")
        self.serve = _serving_function(model, preprocessing)
        self.metadata = _metadata_function(metadata)
        self.metadata_file = tf.saved_model.Asset(metadata_path)
        # The tf.Variables the serving graph captures (not the Keras wrappers around them): the
        # TF1 loader that saved_model_cli and TF Serving use finds only these in the checkpoint.
        self.model_variables = list(self.serve.get_concrete_function().variables)


def _write_saved_model(
    model: MLP, preprocessing: data_lib.Preprocessing, config: TrainConfig | None, folder: str
) -> None:
    """Writes the complete SavedModel into `folder` (an empty directory)."""
    metadata = build_metadata(model, preprocessing, config)
    with tempfile.TemporaryDirectory(prefix="tf_backprop-metadata-") as scratch:
        # tf.saved_model.Asset copies this file into <folder>/assets/ under its base name.
        source = os.path.join(scratch, METADATA_FILE)
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(files.dumps(metadata, indent=2, sort_keys=True))
        root = _ServingModule(model, preprocessing, metadata, source)
        signatures = {SERVING_SIGNATURE: root.serve, METADATA_SIGNATURE: root.metadata}
        tf.saved_model.save(root, folder, signatures=signatures)


# --- atomic placement ---------------------------------------------------------------------------


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


# What tf.saved_model.save (and Keras before it) puts in a SavedModel folder: with --overwrite
# only a folder holding nothing else is replaced, so a file of the user's beside an export (say
# notes.txt, or a SavedModel saved into a folder of their own) is never thrown away with it.
SAVED_MODEL_ENTRIES = frozenset(
    {
        SAVED_MODEL_FILE,
        "saved_model.pbtxt",
        "variables",
        "assets",
        "assets.extra",
        "fingerprint.pb",
        "keras_metadata.pb",
    }
)


def replacement_refusal(path: str) -> str | None:
    """Why an export may not replace the existing `path` — "exists and is not a SavedModel
    folder", or "holds 'x', which is not part of a SavedModel" (the first such entry) — or None:
    an empty folder, or one holding only a SavedModel's entries."""
    entries = os.listdir(path) if os.path.isdir(path) else None
    if entries is None or (entries and not is_saved_model(path)):
        return "exists and is not a SavedModel folder"
    foreign = sorted(set(entries) - SAVED_MODEL_ENTRIES)
    return f"holds {foreign[0]!r}, which is not part of a SavedModel" if foreign else None


def _check_target(path: str, overwrite: bool) -> None:
    """ExportError if `path` exists and may not be replaced: a folder that is not an export is
    named as such first (suggesting --overwrite there would only lead to a second refusal)."""
    if not os.path.lexists(path):
        return
    refusal = replacement_refusal(path)
    if refusal:
        raise ExportError(
            f"{path} {refusal}; an export never replaces it, even with overwrite=True (--overwrite): "
            "give another output path"
        )
    if not overwrite:
        raise ExportError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


def export_saved_model(
    model: MLP,
    preprocessing: data_lib.Preprocessing,
    config: TrainConfig | None,
    path: str,
    *,
    overwrite: bool = False,
) -> str:
    """Exports `model` with its preprocessing as a self-contained SavedModel folder.

    Args:
      model: a trained MLP whose widths fit `preprocessing`.
      preprocessing: the run's data statistics, names and task.
      config: the run's TrainConfig (stored as JSON in the metadata), or None.
      path: the folder to create.
      overwrite: replace an existing export at `path` (only once the new one is complete).

    Returns:
      The absolute path of the export.

    Raises:
      ExportError: `path` exists and overwrite is False, `path` is not an export folder, or
        the model does not fit the preprocessing.  Nothing is written then.
      OSError: the SavedModel could not be written (a full disk); `path` is left as it was.
    """
    path = os.path.abspath(os.path.expanduser(path))
    _check_target(path, overwrite)
    _check_compatible(model, preprocessing)
    staging = _staging_folder(path)
    try:
        try:
            _write_saved_model(model, preprocessing, config, staging)
        except (OSError, tf.errors.OpError) as error:  # a full disk: our files or TensorFlow's SaveV2
            logging.debug("export not written", exc_info=True)
            reason = write_failure_reason(error)
            raise OSError(f"{path}: cannot write the export ({reason}); nothing was replaced") from None
        _check_target(path, overwrite)  # again: something may have appeared while we were writing
        files.replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed
    logging.info(
        "exported SavedModel (%s, %d features) to %s", preprocessing.task, model.layer_sizes[0], path
    )
    return path


def _staging_folder(path: str) -> str:
    """A new hidden folder beside `path` (its parents made); ExportError naming `path` and why
    when it cannot be made (a parent that is a file, no permission)."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = files.hidden_sibling(path, "tmp")
        os.mkdir(staging)
    except OSError as error:
        files.unless_out_of_room(error, path)
        blocking = next((p for p in _ancestors(parent) if os.path.lexists(p) and not os.path.isdir(p)), None)
        why = f"{blocking} is a file, not a folder" if blocking else (error.strerror or str(error))
        raise ExportError(f"{path}: cannot write the export there ({why})") from None
    return staging


def _ancestors(folder: str) -> list[str]:
    """folder and the folders above it, from the top down."""
    chain = [folder]
    while os.path.dirname(chain[-1]) != chain[-1]:
        chain.append(os.path.dirname(chain[-1]))
    return chain[::-1]


def export_run(
    workdir: str, output: str | None = None, checkpoint: str | None = None, overwrite: bool = False
) -> str:
    """Exports a run's checkpoint (default: the latest) to `output` (default <workdir>/export).

    Raises training.CheckpointError for a workdir without a usable checkpoint, and
    ExportError as `export_saved_model` does.
    """
    path = os.path.abspath(os.path.expanduser(output or os.path.join(workdir, EXPORT_DIR)))
    # The run and its checkpoint first: a wrong --checkpoint is named even where the output
    # exists, not only once --overwrite is given (export_saved_model checks the output).
    model, config, preprocessing = checkpoint_lib.load_model(workdir, checkpoint)
    return export_saved_model(model, preprocessing, config, path, overwrite=overwrite)
