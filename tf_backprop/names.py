"""The names (and the few defaults) the package's commands offer as flags, without TensorFlow.

The commands define their flags from these and parse them before TensorFlow is imported, so a
mistyped flag, a bad value or --help answers in a fraction of a second instead of after the
~4 s import.  Each module that implements a name keeps its own registry (losses.LOSSES,
model.INITIALIZERS, ...) and the plain lists here are what they offer; tests/names_test.py
checks that the two agree.  Nothing here may import TensorFlow, Keras or a module that does.
"""

from __future__ import annotations

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "linear")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid", "softmax", "relu")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "random_normal")
DTYPES = ("float32", "float64")
LOSS_NAMES = ("mse", "half_mse", "binary_crossentropy", "categorical_crossentropy")
GRAD_SOURCES = ("tape", "manual")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
LR_SCHEDULES = ("constant", "cosine", "exponential", "step")
TASKS = ("regression", "binary", "multiclass")
SPLIT_ORDER = ("test", "validation", "train")  # a run's splits, in the order a row is looked for
ERRATA_MODES = ("auto", "on", "off")  # explain's article errata: when they apply, always, never

STREAM_ABOVE_BYTES = 64 << 20  # CSV bytes above which a source streams unless --nostream
PREDICT_BATCH_SIZE = 4096  # CSV rows per call of the serving signature
