"""The epoch order's cost: the permutation's two cycle walks side by side, under XLA.

`permutation.permutation` walks its Feistel network's cycles index by index in small domains
and by pointer doubling in larger ones (`walk_for`); before, it always walked index
by index.  For the row counts of the benchmarks' shapes and a worst case (a domain of ~4n),
each walk is timed as a compiled call, best of 5 windows of 20 calls taking turns, less an
empty compiled call's time (the launch); both give the same order (checked here).

    python benchmarks/permutation_bench.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tf_backprop.training import permutation  # noqa: E402

ROWS = {
    "default job": 800,
    "200-step epochs": 2_000,
    "64-256-256-1": 10_240,
    "domain ~4n": 65_537,
    "100,000 rows": 100_000,
}
WINDOWS, CALLS = 5, 20


def _compiled(walk, n: int):
    def order(epoch):
        encrypt, size = permutation.feistel(n, 0, epoch)
        return walk(encrypt, n, size)

    return tf.function(order, jit_compile=True, autograph=False)


def _ms_per_call(fn) -> float:
    start = time.perf_counter()
    for epoch in range(CALLS):
        fn(tf.constant(epoch, tf.int64)).numpy()
    return (time.perf_counter() - start) / CALLS * 1e3


def main() -> None:
    launch = tf.function(lambda e: e + 1, jit_compile=True)
    print("| rows | domain | index by index (ms) | by doubling (ms) | index ÷ doubling | used |")
    print("|---|---|---|---|---|---|")
    for name, n in ROWS.items():
        forms = {
            "each": _compiled(permutation.walk_each, n),
            "doubling": _compiled(permutation.walk_by_doubling, n),
        }
        epoch = tf.constant(3, tf.int64)
        tf.debugging.assert_equal(forms["each"](epoch), forms["doubling"](epoch))  # and compiles both
        launch(epoch)
        best = dict.fromkeys([*forms, "launch"], float("inf"))
        for _ in range(WINDOWS):
            for key, fn in [*forms.items(), ("launch", launch)]:
                best[key] = min(best[key], _ms_per_call(fn))
        each, doubling = (best[k] - best["launch"] for k in forms)
        size = permutation.feistel(n, 0, epoch)[1]
        used = "doubling" if permutation.walk_for(size) is permutation.walk_by_doubling else "index by index"
        print(f"| {name}: {n:,} | {size:,} | {each:.3f} | {doubling:.3f} | {each / doubling:.2f} | {used} |")
    print(f"(an empty compiled call: {best['launch']:.3f} ms, taken off both)")


if __name__ == "__main__":
    main()
