"""Thin absl entry points: flags -> config -> library call (installed as tf_backprop.cli).

TensorFlow is already imported, its start-up chatter held back, by the package's own
`tf_backprop/__init__.py` (TF_BACKPROP_VERBOSE_TF=1 shows it).
"""
