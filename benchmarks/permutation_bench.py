"""The epoch order's cost: the engine's permutation against the walk it replaced, under XLA.

`permutation.permutation` walks the cycles of its Feistel network by pointer doubling over the
whole domain; before, every index was re-encrypted once per step of the longest walk.  Both
give the same order (checked here); for row counts of the benchmarks' shapes and a worst case
(a domain of ~4n), each is timed as a compiled call, best of 5 windows of 20 calls taking
turns, with an empty compiled call's time for the launch overhead.

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


def walked_index_by_index(n: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The previous cycle walk: all n indices re-encrypted until each is inside [0, n)."""
    half = max(1, -(-max(1, (n - 1).bit_length()) // 2))
    mask = (1 << half) - 1
    key = tf.stack([tf.constant(seed, tf.int64), epoch])
    keys = tf.random.stateless_uniform([permutation.ROUNDS], key, minval=0, maxval=2**31 - 1, dtype=tf.int64)

    def encrypt(index):
        left, right = tf.bitwise.right_shift(index, half), tf.bitwise.bitwise_and(index, mask)
        for r in range(permutation.ROUNDS):
            mixed = tf.bitwise.bitwise_and(permutation._mix(right + keys[r]), mask)
            left, right = right, tf.bitwise.bitwise_xor(left, mixed)
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

    def walk(index, pending):
        index = tf.where(pending, encrypt(index), index)
        return index, index >= n

    start = tf.range(n, dtype=tf.int64), tf.ones([n], tf.bool)
    return tf.cast(tf.while_loop(lambda _, p: tf.reduce_any(p), walk, start)[0], tf.int32)


def _ms_per_call(fn, epoch_count: int = CALLS) -> float:
    start = time.perf_counter()
    for epoch in range(epoch_count):
        fn(tf.constant(epoch, tf.int64)).numpy()
    return (time.perf_counter() - start) / epoch_count * 1e3


def main() -> None:
    launch = tf.function(lambda e: e + 1, jit_compile=True)
    print("| rows | domain | walked index by index (ms) | pointer doubling (ms) | ratio |")
    print("|---|---|---|---|---|")
    for name, n in ROWS.items():
        forms = {
            "before": tf.function(lambda e, n=n: walked_index_by_index(n, 0, e), jit_compile=True),
            "now": tf.function(lambda e, n=n: permutation.permutation(n, 0, e), jit_compile=True),
        }
        epoch = tf.constant(3, tf.int64)
        tf.debugging.assert_equal(forms["before"](epoch), forms["now"](epoch))  # and compiles both
        launch(epoch)
        best = dict.fromkeys([*forms, "launch"], float("inf"))
        for _ in range(WINDOWS):
            for key, fn in [*forms.items(), ("launch", launch)]:
                best[key] = min(best[key], _ms_per_call(fn))
        before, now = (best[k] - best["launch"] for k in forms)
        half = max(1, -(-max(1, (n - 1).bit_length()) // 2))
        print(f"| {name}: {n:,} | {1 << 2 * half:,} | {before:.3f} | {now:.3f} | {before / now:.1f}× |")
    print(f"(an empty compiled call: {best['launch']:.3f} ms, taken off both)")


if __name__ == "__main__":
    main()
