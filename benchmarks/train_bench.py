"""Training throughput: this engine against keras.Model.fit, side by side in one run.

For each model it measures samples/s of
  * Keras fit with defaults,
  * Keras fit with steps_per_execution = a whole epoch and jit_compile=True,
  * this engine (tf_backprop.training) with --grad_source=tape and =manual, monitoring on
    (default intervals) and, for tape, off,
on the same MLP class, data and Adam; plus, for the large model, the achieved FLOP/s against
tf.matmul of 2048×2048 float32 in the same process.  Each model runs in its own subprocess, so
its peak RSS is its own.  Compilation is excluded (one warm-up epoch per method).

    python benchmarks/train_bench.py            # all three models (~3 minutes on 2 cores)
    python benchmarks/train_bench.py --models=0  # just the article's net
"""

from __future__ import annotations

import os
import resource
import sys
import time

import per_model  # noqa: E402  (sibling module; benchmarks/ is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = [
    # (name, layer sizes, batch, loss, rows, timed epochs: keras default, keras jit, ours)
    ("article 2-3-3-1, batch 10", [2, 3, 3, 1], 10, "mse", 100_000, (1, 2, 20)),
    ("64-256-256-1, batch 256", [64, 256, 256, 1], 256, "mse", 256 * 100, (1, 2, 3)),
    (
        "1024-1024-1024-10, batch 512",
        [1024, 1024, 1024, 10],
        512,
        "categorical_crossentropy",
        512 * 30,
        (1, 1, 1),
    ),
]


def _keras_fit(layers, batch, loss, datasets, epochs, fast):
    import keras

    from tf_backprop import MLP

    model = MLP(layers, seed=0)
    keras_loss = "mse" if loss == "mse" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = len(datasets.train.x) // batch
    options = {"steps_per_execution": steps, "jit_compile": True} if fast else {}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras_loss, **options)
    x, y = datasets.train.x.astype("float32"), datasets.train.y
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)  # warm-up: compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
    return epochs * steps * batch / (time.perf_counter() - start)


def _ours(layers, batch, loss, datasets, epochs, grad_source, monitor, workdir):
    """Samples/s of the engine's epoch loop (chunks, checks, monitoring; no validation)."""
    from tf_backprop import training
    from tf_backprop.training import monitor as monitor_lib

    cfg = training.TrainConfig(
        layers=tuple(layers),
        loss=loss,
        batch_size=batch,
        learning_rate=1e-3,
        grad_source=grad_source,
        monitor=monitor,
        workdir=workdir,
        val_split=0.0,
        test_split=0.0,
    )
    trainer = training.build(cfg, datasets)
    per_epoch = trainer.plan.steps_per_epoch
    run = trainer.loop(monitor=monitor_lib.from_config(cfg, workdir, trainer.model))
    state = run.state
    run.train_epoch(0, epochs + 1, per_epoch)  # warm-up: compile
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        state.step_in_epoch.assign(0)
        run.train_epoch(epoch, epochs + 1, per_epoch)
    return epochs * per_epoch * batch / (time.perf_counter() - start)


def _matmul_flops():
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    matmul = tf.function(lambda a: tf.matmul(a, a), jit_compile=True)
    matmul(a).numpy()
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a)
    out.numpy()
    return repeats * 2 * 2048**3 / (time.perf_counter() - start)


def child(index: int) -> dict:
    """Measures one model; returns its figures."""
    import tempfile

    name, layers, batch, loss, rows, (e_fit, e_jit, e_ours) = MODELS[index]
    datasets = per_model.random_datasets(layers, loss, rows)
    workdir = tempfile.mkdtemp()
    result = {"model": name}
    result["keras_fit"] = _keras_fit(layers, batch, loss, datasets, e_fit, fast=False)
    result["keras_fit_jit"] = _keras_fit(layers, batch, loss, datasets, e_jit, fast=True)
    for source in ("tape", "manual"):
        result[f"ours_{source}"] = _ours(layers, batch, loss, datasets, e_ours, source, True, workdir)
    result["ours_tape_no_monitor"] = _ours(layers, batch, loss, datasets, e_ours, "tape", False, workdir)
    if index == 2:
        flops_per_sample = 6 * sum(a * b for a, b in zip(layers[:-1], layers[1:]))  # fwd 2, bwd 4
        result["ours_flops"] = result["ours_tape"] * flops_per_sample
        result["matmul_flops"] = _matmul_flops()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: list[str]) -> None:
    per_model.main(argv, __file__, len(MODELS), child, _print_table)


def _print_table(rows: list[dict]) -> None:
    print(
        "| model | Keras fit | fit spe+jit | ours tape | ours manual | tape ÷ best fit | manual ÷ tape | monitor on ÷ off | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        best_fit = max(r["keras_fit"], r["keras_fit_jit"])
        print(
            f"| {r['model']} | {r['keras_fit']:,.0f} | {r['keras_fit_jit']:,.0f} | {r['ours_tape']:,.0f} | "
            f"{r['ours_manual']:,.0f} | {r['ours_tape'] / best_fit:.2f}× | {r['ours_manual'] / r['ours_tape']:.2f} | "
            f"{r['ours_tape'] / r['ours_tape_no_monitor']:.2f} | {r['peak_rss_mb']:,.0f} MB |"
        )
    for r in rows:
        if "matmul_flops" in r:
            print(
                f"\n{r['model']}: {r['ours_flops'] / 1e9:.1f} GFLOP/s achieved vs tf.matmul 2048² "
                f"{r['matmul_flops'] / 1e9:.1f} GFLOP/s = {r['ours_flops'] / r['matmul_flops']:.2f}×"
            )
    print("\n(samples/s; ratios measured side by side in one run)")


if __name__ == "__main__":
    main(sys.argv[1:])
