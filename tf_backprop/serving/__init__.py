"""Serving: a SavedModel that needs only TensorFlow, loading it, and scoring CSVs with it.

export (writing the SavedModel) → served (loading one) → predict (a CSV through it).
"""

from tf_backprop.serving.export import ExportError, export_run, export_saved_model
from tf_backprop.serving.predict import OutputError, predict_csv
from tf_backprop.serving.served import ServedModel, load_export

__all__ = [
    "ExportError",
    "OutputError",
    "ServedModel",
    "export_run",
    "export_saved_model",
    "load_export",
    "predict_csv",
]
