"""The run's numbers, derived once from the config, the data and the replica count.

Nothing else computes a batch size, a step count or a call length: the engine, the run loop
and the benchmarks all read them from the `Plan`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tf_backprop.training import permutation
from tf_backprop.training.config import DEFAULT_EPOCHS, TrainConfig
from tf_backprop.training.errors import ConfigError

MIN_AUTO_CHUNK, MAX_AUTO_CHUNK = 20, 100_000
AUTO_CHUNK_FLOPS = 1e11  # ≈ 0.25–1 s of a 2-core CPU per compiled call
# A large net's automatic call in memory also trains on at least MIN_CALL_ROWS rows, as far as
# MAX_AUTO_CALL_FLOPS allows (see auto_steps_per_call).
MIN_CALL_ROWS, MAX_AUTO_CALL_FLOPS = 1 << 16, 1e12
MAX_AUTO_EPOCHS = 1_000  # epochs one automatic call may complete (each ends in Python once)
MAX_BLOCK_ROWS = 1 << 18  # streamed rows one call takes (its block, ~20 MB of 20 float32 features)
# When an unmonitored whole-call run's last step runs after the loop (see Plan.peels_last_step):
# a tiny net's runs of PEEL_MIN_STEPS steps or more; a larger net's sooner, by 1 + weights / COND_WEIGHTS.
PEEL_MIN_STEPS = 400_000
COND_WEIGHTS = 1_250
GATHER_EACH_STEP_WEIGHTS = 100_000  # see Plan.gathers_each_step
ELEMENTAL_MAX_STEP_FLOPS = 100_000  # see Plan.prefers_elemental_emitters
MAX_PREFETCH_STEPS = 1_024  # see Plan.prefetch_steps
WHOLE_CALL_EPOCHS, WHOLE_CALL_FLOPS = 600, 1e11  # see Plan.compiles_whole_call
# Micro-batches of steps this size are computed as two halves of their rows (Plan.splits_batch):
# at least SPLIT_MIN_ROWS rows, SPLIT_MIN_MACS..SPLIT_MAX_MACS multiply-adds (rows × weights).
SPLIT_MIN_ROWS = 128
SPLIT_MIN_MACS, SPLIT_MAX_MACS = 1e6, 5e7


@dataclasses.dataclass(frozen=True)
class Plan:
    """Batching and run length of one run.

    A step consumes grad_accum_steps micro-batches of global_batch rows (--batch_size, as in
    Keras fit); replica r of `replicas` takes columns r·replica_batch .. (r+1)·replica_batch
    of each.
    """

    layer_sizes: tuple[int, ...]
    replicas: int
    global_batch: int  # rows per micro-batch, all replicas together (--batch_size)
    grad_accum_steps: int
    n_train: int  # rows of the training split
    steps_per_epoch: int  # full updates per epoch; the shuffled remainder is dropped
    total_steps: int
    steps_per_call: int  # updates per compiled call (at most)
    seed: int
    shuffle: bool
    streaming: bool = False  # the rows come from data.pipeline, a block of steps per call
    workers: int = 1  # input pipelines (streaming under multi_worker: one per worker)

    @property
    def local_batch(self) -> int:
        """Rows of one micro-batch that one input pipeline feeds."""
        return self.global_batch // self.workers

    @property
    def block_replicas(self) -> int:
        """Replicas whose columns one input pipeline's batch holds."""
        return self.replicas // self.workers

    @property
    def replica_batch(self) -> int:
        """Rows of one micro-batch on one replica."""
        return self.global_batch // self.replicas

    @property
    def rows_per_step(self) -> int:
        return self.global_batch * self.grad_accum_steps

    @property
    def epochs(self) -> int:
        """Epochs the run touches (the last one may be partial)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def weights(self) -> int:
        """Trainable numbers of the net (kernels and biases)."""
        return sum(a * b + b for a, b in zip(self.layer_sizes, self.layer_sizes[1:]))

    @property
    def peels_last_step(self) -> bool:
        """Whether a run that compiles its whole call (`compiles_whole_call`) without monitoring
        still runs each call's last step after the loop, as a step of its own — a monitored run
        always does, to measure it (`Engine.peels_last_step`).

        The second copy of the step costs compilation (~0.2 s on the article's net, ~0.35 s on
        64-256-256-1) and was measured to pay back, for a reason not pinned down: the peeled
        whole-call loop ran 64-256-256-1 faster (2,471–2,509 against 2,260–2,274 steps/s, in one
        process on the 2-core CI machine), while a loop stopped one step short with the last step
        in a second loop did not.  The threshold is the one that once chose between peeling and
        a cond at every step for monitoring (~0.5 µs a step, ~20% of the article's net's), kept
        for these runs: 2.1M weights peel from ~240 steps, the article's 25 from ~390,000.
        """
        return self.total_steps * (1 + self.weights / COND_WEIGHTS) >= PEEL_MIN_STEPS

    @property
    def gathers_each_step(self) -> bool:
        """Whether (on one device) each step gathers its own rows from the split inside the loop,
        rather than the loop taking the epoch's rows gathered before it: that gather writes a
        whole epoch's rows for the steps of one call (~4% of a 1024-1024-1024-10 net's time),
        while gathering inside the loop costs a tiny net's step more the larger the split."""
        return self.weights >= GATHER_EACH_STEP_WEIGHTS

    @property
    def step_flops(self) -> int:
        """Floating-point operations of one update's matmuls (`step_flops` of rows_per_step)."""
        return step_flops(self.rows_per_step, self.layer_sizes)

    @property
    def run_flops(self) -> int:
        """Floating-point operations of the whole run's matmuls (`step_flops` × total steps)."""
        return self.total_steps * self.step_flops

    @property
    def prefers_elemental_emitters(self) -> bool:
        """Whether the step is small enough to compile and run faster with XLA's elemental
        emitters than with its fusion emitters (measured in xla_flags: the article's net, 1,080
        FLOPs, ~10% faster and ~0.25 s less compilation; even at 0.25 MFLOP; slower from
        2.4 MFLOP up)."""
        return self.step_flops <= ELEMENTAL_MAX_STEP_FLOPS

    @property
    def compiles_whole_call(self) -> bool:
        """Whether (on one device) XLA compiles the whole call — its epochs' step loops and their
        ends (validation, record, early stopping) — rather than each epoch's step loop alone,
        launched once per epoch segment with the epoch ends in a plain graph between.

        Compiling the epoch end too costs the default run (60 epochs) ~0.1 s more compilation for
        ~0.01 s of training saved.  Each launch costs a tiny net ~0.17 ms (200-step epochs of the
        article's net: 417,000–428,000 steps/s launched per epoch, 645,000–650,000 in one
        launch), hence WHOLE_CALL_EPOCHS; and it slows a mid-size net's steps after it (a bare
        64-256-256-1 loop launched every 40 steps ran ~10% slower than in one launch), hence
        WHOLE_CALL_FLOPS, about one automatic call's work.  The training is the same bit for
        bit either way (tested).
        """
        return self.epochs >= WHOLE_CALL_EPOCHS or self.run_flops >= WHOLE_CALL_FLOPS

    @property
    def prefetch_steps(self) -> int:
        """Steps a streamed input pipeline prepares ahead, in the background: one call's (at most
        MAX_PREFETCH_STEPS, and never more than the run has), so that the next call's rows are
        read while the current call trains — with 2 steps ahead, reading and training took turns
        (20-64-64-1 at batch 256: 7,400 against 11,000 steps/s).  They also go into each input
        checkpoint, element by element, hence the bound: a tiny net's call of 26,000 steps ahead
        made a 200-row example's run 0.6 s slower and its input checkpoint 6 MB."""
        return max(2, min(self.steps_per_call, MAX_PREFETCH_STEPS, self.total_steps))

    @property
    def splits_batch(self) -> bool:
        """Whether (with XLA on a CPU) each micro-batch's loss and gradients are computed as two
        independent halves of its rows and averaged — the same mean gradient, summed in another
        order.  XLA's CPU runtime runs the two halves on two cores at once, where a mid-sized
        step's matmuls keep one core busy at a time: on the 2-core CI machine 64-256-256-1 at
        batch 256 ran +40%, 20-64-64-1 at 256 +68%; tiny steps lose to the extra ops (2-3-3-1
        at batch 10: −19%, 20-64-64-1 at 32: −18%) and large ones already fill both cores
        (1024-1024-1024-10 at 512: −3%, 256-512-512-10 at 256: −5%).  A streamed run gains too
        (its next block of rows is read in the background: 20-64-64-1 at 256, +20–25%)."""
        rows = self.replica_batch
        macs = rows * self.weights
        return rows >= SPLIT_MIN_ROWS and rows % 2 == 0 and SPLIT_MIN_MACS <= macs <= SPLIT_MAX_MACS

    def epoch_order(self, epoch) -> tf.Tensor:
        """Sample indices of one epoch, [steps, accum, global_batch]: a pure function of (seed,
        epoch), the same in the engine's graph, under XLA and eagerly."""
        order = tf.range(self.n_train)
        if self.shuffle:
            order = permutation.permutation(self.n_train, self.seed, epoch)
        used = order[: self.steps_per_epoch * self.rows_per_step]
        return tf.reshape(used, [self.steps_per_epoch, self.grad_accum_steps, self.global_batch])

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """`epoch_order` as NumPy int32."""
        return self.epoch_order(epoch).numpy().astype(np.int32)


def make_plan(
    config: TrainConfig, n_train: int, layer_sizes, replicas: int = 1, worker_rows: list[int] | None = None
) -> Plan:
    """The plan of `config` on a training split of n_train rows; ConfigError if the batch does not
    split evenly among the replicas or a step needs more rows than there are.

    worker_rows: for a streamed source, the training rows each input pipeline reads (one per
    worker); every pipeline feeds batch_size / workers rows of each micro-batch, and an epoch
    is as many steps as the smallest one fills (each drops the rest of its rows).
    """
    if config.batch_size % replicas:
        raise ConfigError(
            f"batch_size: the global batch of {config.batch_size} rows does not split evenly among "
            f"the {replicas} replicas; give a multiple of {replicas}"
        )
    per_step = config.batch_size * config.grad_accum_steps
    if n_train < per_step:
        raise ConfigError(
            f"batch_size: batch_size × grad_accum_steps = {per_step} exceeds the {n_train} training rows"
        )
    steps_per_epoch = n_train // per_step
    workers = 1 if worker_rows is None else len(worker_rows)
    if worker_rows is not None:
        steps_per_epoch = _streamed_steps_per_epoch(per_step // workers, worker_rows)
    # A streamed call holds its rows as a block (and the next one is read ahead): no rows floor.
    min_rows = 0 if worker_rows is not None else MIN_CALL_ROWS
    steps_per_call = config.steps_per_call or auto_steps_per_call(
        per_step, layer_sizes, steps_per_epoch, min_rows
    )
    if worker_rows is not None:  # a call's block of rows stays within MAX_BLOCK_ROWS
        steps_per_call = min(steps_per_call, max(1, MAX_BLOCK_ROWS // (per_step // workers)))
    return Plan(
        layer_sizes=tuple(layer_sizes),
        replicas=replicas,
        global_batch=config.batch_size,
        grad_accum_steps=config.grad_accum_steps,
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
        total_steps=config.steps or (config.epochs or DEFAULT_EPOCHS) * steps_per_epoch,
        steps_per_call=steps_per_call,
        seed=config.seed,
        shuffle=config.shuffle,
        streaming=worker_rows is not None,
        workers=workers,
    )


def _streamed_steps_per_epoch(local_rows_per_step: int, worker_rows: list[int]) -> int:
    """Steps every input pipeline can fill in an epoch; ConfigError when one cannot fill a step."""
    for worker, rows in enumerate(worker_rows):
        if rows == 0:  # more workers than shards (or shards without training rows)
            count = len(worker_rows)
            raise ConfigError(
                f"data: worker {worker}'s shards hold no training rows: each worker reads whole "
                f"shards, so {count} workers need at least {count} shards with training rows"
            )
        if rows < local_rows_per_step:
            raise ConfigError(
                f"batch_size: worker {worker}'s shards hold {rows} training rows, fewer than the "
                f"{local_rows_per_step} it feeds each step (batch_size × grad_accum_steps / "
                f"{len(worker_rows)} workers); use fewer workers or more, evener shards"
            )
    return min(rows // local_rows_per_step for rows in worker_rows)


def step_flops(rows_per_step: int, layer_sizes) -> int:
    """Floating-point operations of one update's matmuls (forward 2, backward 4 per weight)."""
    weights = sum(a * b for a, b in zip(layer_sizes, layer_sizes[1:]))
    return 6 * rows_per_step * weights


def auto_steps_per_call(
    rows_per_step: int, layer_sizes, steps_per_epoch: int, min_rows: int = MIN_CALL_ROWS
) -> int:
    """About AUTO_CHUNK_FLOPS per call, between MIN_AUTO_CHUNK and MAX_AUTO_CHUNK steps, and
    at most MAX_AUTO_EPOCHS epochs; for a large net, at least min_rows rows (up to
    MAX_AUTO_CALL_FLOPS).

    Small nets get long calls (per-call overhead amortized: at 10,000 steps, a tenth of the
    article's net's 200-step epochs went to it), large nets shorter ones (progress, signals and
    checkpoints stay responsive); MIN_AUTO_CHUNK because monitoring measures the last step of
    each call.  A call also copies and reads its whole state a few times (the replay snapshot,
    the finiteness check, the measured step): ~8 ns per weight on the 2-core CI machine, where
    a weight's compute over MIN_CALL_ROWS rows takes ~1 µs, so ~1% of the call.  In 20-step
    calls a 1024-1024-1024-10 net at batch 512 lost ~5% to it: 63.3 steps/s, against 65.3 in
    60-step calls and 66.4 in 180-step ones (in one process).  A streamed run passes min_rows
    0: its call's rows are a block in memory, [steps, accum, batch, features] (65,536 rows of
    1,024 features: 268 MB), and the next block is read ahead.  Tiny epochs cap the call at
    MAX_AUTO_EPOCHS epochs: each completed epoch is a record the call returns and Python logs.
    It depends on the config and data size only, so an interrupted and a resumed run cut their
    calls at the same steps.
    """
    flops = step_flops(rows_per_step, layer_sizes)
    by_rows = min(-(-min_rows // rows_per_step), MAX_AUTO_CALL_FLOPS // flops)
    steps = max(MIN_AUTO_CHUNK, AUTO_CHUNK_FLOPS // flops, by_rows)
    return int(min(MAX_AUTO_CHUNK, MAX_AUTO_EPOCHS * steps_per_epoch, steps))
