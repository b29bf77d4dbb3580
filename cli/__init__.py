"""Thin absl entry points: flags -> config -> library call (installed as tf_backprop.cli)."""

import os

# Quiet TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
