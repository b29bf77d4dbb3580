"""Evaluation: a split's loss and metrics, summed in float64 batch by batch.

`Evaluator.split_totals` runs inside the engine's call (the validation split at each epoch's
end); `evaluate` (a split in memory) and `evaluate_batches` (a streamed split's batches) are the
Python entry points for the final metrics.  Totals are [mean loss, metric sums (3)]: the sums
are [Σ sq, Σ abs, count] for regression, [Σ correct, 0, count] for classification, turned into
named metrics by `metrics_from_sums`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from tf_backprop import backprop
from tf_backprop import data as data_lib
from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP

EVAL_BATCH = 8192  # rows per evaluation batch


class Evaluator:
    """Loss (with the L2 term, as trained) and metric sums of `model` on any rows.

    metric_sums: (output, y) -> [3] float64, the training step's own (`Step.metric_sums`).
    """

    def __init__(self, model: MLP, loss: losses_lib.Loss, l2: float, metric_sums: Callable):
        self.model, self.loss, self.l2, self.metric_sums = model, loss, l2, metric_sums
        self._compiled = tf.function(self.split_totals, autograph=False)

    def split_totals(self, x, y) -> tf.Tensor:
        """[mean loss, metric sums (3)] of a whole split, float64, in batches of EVAL_BATCH rows."""
        rows = int(x.shape[0])
        full, rest = divmod(rows, EVAL_BATCH)
        totals = tf.zeros([4], tf.float64)
        if full:
            totals = tf.while_loop(
                lambda i, t: i < full,
                lambda i, t: (i + 1, t + self._batch_totals(x, y, i * EVAL_BATCH, EVAL_BATCH)),
                (tf.constant(0), totals),
            )[1]
        if rest:
            totals += self._batch_totals(x, y, full * EVAL_BATCH, rest)
        return tf.concat([[totals[0] / rows], totals[1:]], axis=0)

    def _batch_totals(self, x, y, start, size: int):
        """[Σ loss × rows, metric sums...] of rows start .. start + size, float64."""
        x, y = x[start : start + size], y[start : start + size]
        forward = self.model.forward(x, keep_intermediates=True)
        value = backprop.total_loss(self.model, forward, y, self.loss, self.l2)
        head = tf.cast(value, tf.float64) * size
        return tf.concat([[head], self.metric_sums(forward.output, y)], axis=0)

    def evaluate(self, split: data_lib.Split) -> dict[str, float]:
        """Loss and metrics over a whole split (loss averaged per row)."""
        dtype = self.model.compute_dtype
        totals = self._compiled(tf.constant(split.x, dtype), targets_tensor(split.y, dtype)).numpy()
        return metrics_from_sums(totals[0], totals[1:], self.loss)

    def evaluate_batches(self, batches: Iterable) -> dict[str, float]:
        """Loss and metrics over (x, y) batches of a streamed split, summed in float64."""
        loss, sums, rows = 0.0, np.zeros(3), 0
        for x, y in batches:
            totals = self._compiled(x, y).numpy()  # [mean loss, metric sums]
            count = int(x.shape[0])
            loss, sums, rows = loss + totals[0] * count, sums + totals[1:], rows + count
        return metrics_from_sums(loss / max(rows, 1), sums, self.loss)


def targets_tensor(y: np.ndarray, dtype) -> tf.Tensor:
    """Class ids stay int32; regression and binary targets take the model's dtype."""
    return tf.constant(y, tf.int32 if np.issubdtype(y.dtype, np.integer) else dtype)


def metrics_from_sums(loss: float, sums: np.ndarray, loss_fn: losses_lib.Loss) -> dict[str, float]:
    """Turns [Σ sq, Σ abs, count] or [Σ correct, 0, count] into named metrics."""
    count = max(float(sums[2]), 1.0)
    if loss_fn.on_logits:
        return {"loss": float(loss), "accuracy": float(sums[0]) / count}
    return {"loss": float(loss), "rmse": math.sqrt(float(sums[0]) / count), "mae": float(sums[1]) / count}
