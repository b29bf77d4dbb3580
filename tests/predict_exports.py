"""Helpers shared by the prediction tests: a small export per task, with known statistics."""

import os

from tf_backprop import data
from tf_backprop.model import MLP
from tf_backprop.serving import export

FEATURES = ["x1", "x2", "x3"]
CLASS_NAMES = {"regression": None, "binary": ["no", "yes"], "multiclass": ["cat", "dog", "eel"]}
N_OUTPUTS = {"regression": 1, "binary": 1, "multiclass": 3}


def toy_preprocessing(task: str, target_mean: list[float], target_std: list[float]) -> data.Preprocessing:
    """Non-trivial statistics for FEATURES, so the in-graph scaling is exercised."""
    regression = task == "regression"
    return data.Preprocessing(
        task=task,
        feature_names=FEATURES,
        feature_mean=[1.0, -2.0, 0.5],
        feature_std=[2.0, 0.5, 3.0],
        target_name="y" if regression else "label",
        target_mean=target_mean if regression else None,
        target_std=target_std if regression else None,
        class_names=CLASS_NAMES[task],
    )


def make_export(folder: str, task: str) -> str:
    """Exports an untrained MLP with non-trivial statistics; returns the export's path."""
    model = MLP((3, 8, N_OUTPUTS[task]), activation="tanh", seed=3)
    preprocessing = toy_preprocessing(task, [10.0], [3.0])
    return export.export_saved_model(model, preprocessing, None, os.path.join(folder, task))
