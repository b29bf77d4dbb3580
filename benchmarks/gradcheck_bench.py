"""How long gradient checks take, measured side by side in one run.

    .venv/bin/python benchmarks/gradcheck_bench.py

Cases:
* MLP check, mode="fast": [1024, 1024, 1024, 10], ReLU, categorical cross-entropy, batch 256;
  and the same at order=2 (Hessian-vector products: tape over tape, R-operator, differences of
  the hand-written gradient).
* MLP check, mode="full": the article's 2-3-3-1 net, half-MSE, batch 10; and at order=2 (its
  whole 25 × 25 Hessian).
* gradcheck, mode="fast": a log-sum-exp with a hand-written tf.custom_gradient, on a
  1000 × 1000 (1,000,000-element) input.
* gradcheck, mode="full", vs tf.test.compute_gradient: the same 100 × 100 Jacobian
  (tanh(x @ W), x of 100 elements), float64; and the same at 1000 × 1000.

* Hessian-vector products on a 64-256-256-1 net (ReLU, MSE, batch 256, float32): the
  hand-written R-operator (`backprop.manual_hvp`) vs tape over tape (`backprop.tape_hvp`), each
  compiled with tf.function; best of 5 timings of 50 calls.

Times are wall-clock seconds of one call after TensorFlow is imported and its runtime started
("first": includes tracing the compiled evaluations), then the best of two repeats.
"""

from __future__ import annotations

import datetime
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_backprop import backprop, gradcheck  # noqa: E402
from tf_backprop.model import MLP  # noqa: E402

REPEATS = 2


def timed(fn) -> tuple[float, float, object]:
    """(first call's seconds, best repeat's seconds, first call's result)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    repeats = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        repeats.append(time.perf_counter() - start)
    return first, min(repeats), result


@tf.custom_gradient
def stable_logsumexp(x):
    """log Σ exp(x) over the last axis; gradient softmax(x) ⊙ dy."""
    top = tf.reduce_max(x, axis=-1, keepdims=True)
    value = tf.squeeze(top, -1) + tf.math.log(tf.reduce_sum(tf.exp(x - top), axis=-1))

    def grad(dy):
        return dy[..., None] * tf.nn.softmax(x)

    return value, grad


def mlp_case(sizes, loss, batch, mode, order=1):
    model = MLP(sizes, activation="relu")
    x, y = gradcheck.random_batch(model, loss, batch, seed=0)
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return n, lambda: gradcheck.check(model, x, y, loss, mode=mode, order=order)


def jacobian_cases(n: int):
    """The same n × n Jacobian of tanh(x @ W) through gradcheck and tf.test.compute_gradient."""
    rng = np.random.default_rng(0)
    w = tf.constant(rng.standard_normal((n, n)) / np.sqrt(n))
    x = rng.standard_normal((1, n))

    def fn(x):
        return tf.tanh(x @ w)  # [1, n]

    def ours():
        return gradcheck.gradcheck(fn, x, mode="full")

    def theirs():
        return tf.test.compute_gradient(fn, [tf.constant(x)])

    return ours, theirs


def side_by_side(n: int) -> list[tuple]:
    """Rows comparing the two checkers on an n × n Jacobian."""
    ours, theirs = jacobian_cases(n)
    theirs_first, theirs_best, (theoretical, numerical) = timed(theirs)
    ours_first, ours_best, report = timed(ours)
    error = float(np.max(np.abs(theoretical[0] - numerical[0])))
    ratio = f"{theirs_first / ours_first:.1f}× / {theirs_best / ours_best:.1f}×"
    return [
        (
            f"{n} × {n}",
            "tf.test.compute_gradient",
            f"{theirs_first:.3f}",
            f"{theirs_best:.3f}",
            f"{error:.1e}",
            "",
        ),
        (
            "",
            "gradcheck(mode='full')",
            f"{ours_first:.3f}",
            f"{ours_best:.3f}",
            f"{report.entries[0].comparisons[0].max_abs:.1e}",
            ratio,
        ),
    ]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), TensorFlow {tf.__version__}"


def verdict(report) -> str:
    return f"{report.verdict} ({report.kinks} kinks)"


def cases() -> list[tuple]:
    """(name, mode, target seconds or None, parameters or inputs, check) per timed case."""
    big = np.random.default_rng(1).standard_normal((1000, 1000))
    jacobian, _ = jacobian_cases(100)
    wide = (1024, 1024, 1024, 10), "categorical_crossentropy", 256, "fast"
    article = (2, 3, 3, 1), "half_mse", 10, "full"
    return [
        ("MLP 1024-1024-1024-10, batch 256", "fast", 3.0, *mlp_case(*wide)),
        ("MLP 2-3-3-1 (article), batch 10", "full", 1.0, *mlp_case(*article)),
        ("MLP 1024-1024-1024-10, batch 256, order 2", "fast", 10.0, *mlp_case(*wide, order=2)),
        ("MLP 2-3-3-1 (article), batch 10, order 2", "full", 1.0, *mlp_case(*article, order=2)),
        (
            "log-sum-exp with custom gradient",
            "fast",
            None,
            big.size,
            lambda: gradcheck.gradcheck(stable_logsumexp, big, mode="fast"),
        ),
        ("tanh(x @ W), 100 × 100 Jacobian", "full", None, 100, jacobian),
    ]


def hvp_rows() -> list[tuple]:
    """manual_hvp vs tape_hvp on 64-256-256-1, batch 256, float32, each compiled."""
    model = MLP((64, 256, 256, 1), activation="relu", seed=0)
    x, y = gradcheck.random_batch(model, "mse", 256, seed=0)
    x, y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
    v = [tf.random.stateless_normal(w.shape, [0, i]) for i, w in enumerate(model.trainable_variables)]
    times = {}
    for name, fn in (("tape over tape", backprop.tape_hvp), ("R-operator (manual)", backprop.manual_hvp)):
        compiled = tf.function(lambda x, y, fn=fn: fn(model, x, y, "mse", v))
        compiled(x, y)  # trace
        times[name] = min(_loop_time(compiled, x, y) for _ in range(5)) / 50
    tape = times["tape over tape"]
    return [(name, f"{t * 1e3:.3f}", f"{t / tape:.2f}×") for name, t in times.items()]


def _loop_time(compiled, x, y) -> float:
    start = time.perf_counter()
    for _ in range(50):
        result = compiled(x, y)
    np.asarray(result[0])  # wait for the last call
    return time.perf_counter() - start


def case_row(name, mode, target, size, check) -> tuple:
    first, best, report = timed(check)
    target = f"≤ {target:g}" if target else "-"
    return (name, f"{size:,}", mode, f"{first:.2f}", f"{best:.2f}", target, verdict(report))


def main():
    print(f"gradcheck benchmark — {machine()}")
    tf.function(lambda: tf.constant(1.0) + 1.0)()  # start the runtime: timings are "after TF import"
    header = ["case", "parameters / inputs", "mode", "first (s)", "best of 2 (s)", "target (s)", "result"]
    print_table(header, [case_row(*case) for case in cases()])
    print()
    header = ["Jacobian", "checker", "first (s)", "best of 2 (s)", "max |analytic − numeric|", "speed-up"]
    print_table(header, side_by_side(100) + side_by_side(1000))
    print()
    print_table(["Hessian-vector product, 64-256-256-1, batch 256", "ms per call", "÷ tape"], hvp_rows())


def print_table(header, rows):
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    main()
