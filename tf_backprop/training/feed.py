"""The streamed input: a block of steps' rows per engine call from a tf.data iterator, and its
position saved beside the run's checkpoints.

tf.data ops do not compile under XLA, so the rows reach the engine's compiled call from outside
it: before each call, `StreamFeed.block(n)` pulls the call's n steps from the iterator inside
one (non-XLA) tf.function — a graph loop of `get_next`, no Python per step — into a block of
the fixed shape [steps_per_call, accum, local_batch, ...] (zeros past n, never read), so the
call is traced once.  The iterator then stands exactly at the optimizer's step, which is what
`InputKeeper` saves with every checkpoint (`tf.train.Checkpoint` saves a tf.data iterator's
position and buffers): a resumed run reads the same rows as an uninterrupted one.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tf_backprop.training.errors import CheckpointError
from tf_backprop.training.plan import Plan

INPUT_DIR = "input-{}"  # in the run's ckpt/ folder, one per input pipeline (worker)


class StreamFeed:
    """Blocks of steps from `dataset` (elements: one step's (x [accum, batch, n], y))."""

    def __init__(self, dataset: tf.data.Dataset, plan: Plan):
        self.plan = plan
        with tf.device("/CPU:0"):
            self.iterator = iter(dataset)
        self.element_spec = dataset.element_spec
        signature = [tf.TensorSpec([], tf.int32)]
        self._fetch = tf.function(self._fetch_block, input_signature=signature, autograph=False)

    def block(self, steps: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The next `steps` steps' rows, in a block of steps_per_call steps."""
        if not 0 < steps <= self.plan.steps_per_call:
            raise ValueError(f"steps: expected 1 to {self.plan.steps_per_call}, got {steps}")
        return self._fetch(tf.constant(steps, tf.int32))

    def _fetch_block(self, count):
        size = self.plan.steps_per_call
        arrays = [
            tf.TensorArray(spec.dtype, size=size, element_shape=spec.shape) for spec in self.element_spec
        ]

        def pull(i, *arrays):
            step = self.iterator.get_next()
            return (i + 1, *[a.write(i, t) for a, t in zip(arrays, step)])

        def pad(i, *arrays):
            return (
                i + 1,
                *[a.write(i, tf.zeros(s.shape, s.dtype)) for a, s in zip(arrays, self.element_spec)],
            )

        i, *arrays = tf.while_loop(lambda i, *_: i < count, pull, (tf.constant(0), *arrays))
        _, *arrays = tf.while_loop(lambda i, *_: i < size, pad, (i, *arrays))
        return tuple(a.stack() for a in arrays)


class InputKeeper:
    """Saves and restores one input pipeline's position: <workdir>/ckpt/input-<worker>/ckpt-<step>.

    Each worker saves its own (they read different shards), before the run's checkpoint of the
    same step; one more than the run's checkpoints is kept, so a fallback to the previous
    checkpoint finds its position.
    """

    def __init__(self, workdir: str, worker: int, feed: StreamFeed, keep: int):
        self.directory = os.path.join(workdir, "ckpt", INPUT_DIR.format(worker))
        self.checkpoint = tf.train.Checkpoint(iterator=feed.iterator)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep + 1)

    def save(self, step: int) -> str:
        return self.manager.save(checkpoint_number=step)

    def restore(self, step: int) -> None:
        """Puts the iterator where it stood at `step`; CheckpointError when that was not saved."""
        path = os.path.join(self.directory, f"ckpt-{step}")
        if not tf.io.gfile.exists(path + ".index"):
            raise CheckpointError(
                f"{path}: the input position of the checkpoint at step {step} is missing (was the "
                f"run saved without --stream?); rerun with --restart to start over"
            )
        try:
            self.checkpoint.restore(path).assert_consumed()
        except (tf.errors.OpError, ValueError, AssertionError) as error:
            raise CheckpointError(f"{path}: unreadable input position ({error})") from None
