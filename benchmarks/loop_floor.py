"""Where the larger nets' gap to JAX is: the engine's run, its step loop alone, a bare loop, JAX.

For the two larger shapes of train_bench (64-256-256-1 batch 256, 1024-1024-1024-10 batch 512),
in one process each, steps/s of
  run        training.train's loop as train_bench times it (monitoring on, its default calls);
  run_nomon  the same with --nomonitor;
  step_loop  the engine's compiled step loop alone, epoch after epoch (its in-graph epoch order
             and gather, the metric sums), without the call around it (replay snapshot,
             finiteness check, monitoring, epoch ends, Python);
  bare       the floor TensorFlow gives this step: a tf.while_loop under jit_compile of
             gather → forward → tape gradient → Keras Adam, nothing else — the batch in two
             halves when the engine splits it (Plan.splits_batch);
  bare_whole the bare loop with the batch whole (only where the engine splits it);
  jax        contenders.jax_steps_per_second (lax.scan under jit, as in train_bench).
Each is timed over the same steps, best of 3 windows, taking turns.

    python benchmarks/loop_floor.py               # both shapes (~3 minutes on 2 cores)
    python benchmarks/loop_floor.py --models=1    # the 1024 net
"""

from __future__ import annotations

import functools
import os
import sys
import time

import contenders
import per_model
import train_bench

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPES = [2, 3]  # train_bench's shape indices
WINDOWS = 3


def _bare_loop(model, optimizer, x, y, task, loss: str, halves: int = 1):
    """A jit-compiled while loop of `n` plain steps over a fixed order of the split's rows (each
    step's loss the mean of its `halves` parts' mean losses)."""
    import numpy as np
    import tensorflow as tf

    spe, batch = task.steps_per_epoch, task.batch
    order = np.random.default_rng(0).permutation(len(task.x))[: spe * batch].reshape(spe, batch)
    order = tf.constant(order.astype("int32"))
    variables = model.trainable_variables

    def loss_of(rows):
        return tf.add_n([part_loss(part) for part in tf.split(rows, halves)]) / halves

    def part_loss(rows):
        output = model.forward(tf.gather(x, rows))
        target = tf.gather(y, rows)
        if loss == "mse":
            return tf.reduce_mean(tf.square(output - target))
        labels = tf.argmax(target, axis=-1, output_type=tf.int32) if target.shape.rank == 2 else target
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, output))

    @tf.function(jit_compile=True, autograph=False)
    def run(n):
        def body(i):
            with tf.GradientTape() as tape:
                value = loss_of(order[i % spe])
            optimizer.apply(tape.gradient(value, variables), variables)
            return (i + 1,)

        return tf.while_loop(lambda i: i < n, body, (tf.constant(0),))

    return run


def child(index: int) -> dict:
    import tensorflow as tf

    from tf_backprop import training
    from tf_backprop.training import evaluation

    shape = SHAPES[index]
    overrides, datasets = train_bench.datasets_for(shape)
    task = train_bench.task_for(shape, datasets)
    steps = task.epochs * task.steps_per_epoch
    cfg = training.TrainConfig(**overrides, monitor=False, epochs=2)
    trainer = training.build(cfg, datasets)
    engine = trainer.engine
    x = tf.constant(datasets.train.x, trainer.model.compute_dtype)
    y = evaluation.targets_tensor(datasets.train.y, trainer.model.compute_dtype)
    # The engine's step loop of one epoch segment, compiled alone (as a run that does not
    # compile its whole call launches it).
    loop = tf.function(functools.partial(engine._steps, check=False), jit_compile=True, autograph=False)
    spe = trainer.plan.steps_per_epoch

    def step_loop():
        carry = engine._initial_carry()
        carry = (carry[1], carry[4], carry[2], carry[3], carry[5], carry[6])
        for epoch in range(task.epochs):
            epoch = tf.constant(epoch, tf.int64)
            out = loop(
                x,
                y,
                epoch,
                tf.constant(0, tf.int64),
                tf.constant(spe, tf.int64),
                carry,
            )
        out[2].numpy()

    halves = 2 if trainer.plan.splits_batch else 1
    bare = _bare_loop(trainer.model, trainer.optimizer, x, y, task, cfg.loss, halves)
    n = tf.constant(steps)
    timed = {"step_loop": step_loop, "bare": lambda: bare(n)[0].numpy()}
    if halves > 1:
        whole = _bare_loop(trainer.model, trainer.optimizer, x, y, task, cfg.loss)
        timed["bare_whole"] = lambda: whole(n)[0].numpy()
    for run in timed.values():
        run()  # compile
    best = dict.fromkeys(timed, 0.0)
    for _ in range(WINDOWS):
        for name, run in timed.items():
            start = time.perf_counter()
            run()
            best[name] = max(best[name], steps / (time.perf_counter() - start))
    train_bench.OURS_EPOCHS[shape] = task.epochs
    best["run"] = max(
        train_bench.ours_steps_per_second(shape, datasets, overrides, "tape", True) for _ in range(WINDOWS)
    )
    best["run_nomon"] = max(
        train_bench.ours_steps_per_second(shape, datasets, overrides, "tape", False) for _ in range(WINDOWS)
    )
    best["jax"] = max((contenders.jax_steps_per_second(task) or 0.0) for _ in range(WINDOWS)) or None
    return {"shape": task.name, **best}


def _print_table(rows: list[dict]) -> None:
    print(
        "| shape | run | run, no monitoring | step loop alone | bare TF loop | bare, batch whole | JAX scan "
        "| run ÷ bare | bare ÷ JAX |"
    )
    print("|---|" + "---|" * 8)
    for r in rows:
        jax = f"{r['bare'] / r['jax']:.2f}" if r["jax"] else "-"
        rates = [per_model.rate(r.get(k)) for k in ("run", "run_nomon", "step_loop", "bare", "bare_whole")]
        print(
            f"| {r['shape']} | {' | '.join(rates)} | {per_model.rate(r['jax'])} | {r['run'] / r['bare']:.2f} | {jax} |"
        )
    print("\n(steps/s, best of 3 windows each, one process per shape)")


if __name__ == "__main__":
    per_model.main(sys.argv[1:], __file__, len(SHAPES), child, _print_table)
