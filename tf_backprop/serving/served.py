"""Loading an export for serving: its metadata and a batch predict function.

Needs TensorFlow only, like any consumer of the export; `tf_backprop.serving.predict` runs it
over a CSV.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tf_backprop.serving.export import (
    EXPORT_DIR,
    INPUT_NAME,
    METADATA_SIGNATURE,
    SERVING_SIGNATURE,
    ExportError,
    is_saved_model,
)


def _run_hint(path: str) -> str:
    """'; a run folder? its export is <path>/export' when that is an export, else ''."""
    inside = os.path.join(path, EXPORT_DIR)
    return f"; a run folder? its export is {inside}" if is_saved_model(inside) else ""


class ServedModel:
    """An export loaded with tf.saved_model.load: its metadata and a batch predict function."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise ExportError(f"{path}: no such folder (give the export folder, e.g. <workdir>/export)")
        if not is_saved_model(path):
            raise ExportError(f"{path}: not a SavedModel folder (no saved_model.pb){_run_hint(path)}")
        self.path = path
        loaded = tf.saved_model.load(path)
        missing = {SERVING_SIGNATURE, METADATA_SIGNATURE} - set(loaded.signatures)
        if missing:
            raise ExportError(
                f"{path}: not a tf_backprop export (no {', '.join(sorted(missing))} signature; "
                f"it has {', '.join(sorted(loaded.signatures)) or 'none'})"
            )
        self._loaded = loaded  # keeps the signatures' variables alive
        self._serve = loaded.signatures[SERVING_SIGNATURE]
        text = loaded.signatures[METADATA_SIGNATURE]()["metadata_json"].numpy().decode("utf-8")
        self.metadata: dict = json.loads(text)

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def feature_names(self) -> list[str]:
        return self.metadata["feature_names"]

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata["class_names"]

    @property
    def target_name(self) -> str:
        return self.metadata["target_name"]

    def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Raw features [m, n] -> the serving signature's outputs as NumPy arrays."""
        outputs = self._serve(**{INPUT_NAME: tf.constant(features, tf.float32)})
        return {name: value.numpy() for name, value in outputs.items()}


def load_export(path: str) -> ServedModel:
    """Loads an export folder; ExportError if it is not one."""
    return ServedModel(os.path.abspath(os.path.expanduser(path)))
