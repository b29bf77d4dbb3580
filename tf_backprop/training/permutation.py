"""The training rows' order in an epoch: a keyed pseudorandom permutation, computed in the graph.

`permutation(n, seed, epoch)` is a pure function of (n, seed, epoch), identical under XLA, in a
plain graph and eagerly, on every device: a 4-round Feistel network over the indices' bits
(round keys from `tf.random.stateless_uniform` keyed by (seed, epoch)), with cycle walking to
stay inside [0, n) — index by index in small domains, by pointer doubling in larger ones
(`walk_each`, `walk_by_doubling`: the same result).  It costs O(n) elementwise integer
operations and gathers, and no sort, so a compiled call can start epochs without Python (XLA's
sort of n random keys costs ~20 ms for 100,000 rows; this ~2.5 ms under XLA on the 2-core CI
machine, ~0.25 ms for 10,240 rows: benchmarks/permutation_bench.py); TensorFlow's own index
shuffles have no XLA kernel.

It runs as a `tf.function` traced once per (n, seed): the engine's call uses it twice (its step
loop and, with monitoring, the measured step's rows), and tracing its ~50 operations took
0.05–0.1 s of the default run's start-up each time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

ROUNDS = 4
_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # a multiplier with good avalanche for 32-bit integer hashing


def _mix(x: tf.Tensor) -> tf.Tensor:
    """A 32-bit integer hash of int64 values below 2^32 (products stay below 2^63)."""
    shift, xor, mask = tf.bitwise.right_shift, tf.bitwise.bitwise_xor, tf.bitwise.bitwise_and
    x = xor(x, shift(x, 16))
    x = mask(x * _MIX, _MASK32)
    x = xor(x, shift(x, 16))
    x = mask(x * _MIX, _MASK32)
    return xor(x, shift(x, 16))


def permutation(n: int, seed: int, epoch) -> tf.Tensor:
    """A permutation of range(n), [n] int32, keyed by (seed, epoch) (epoch: an int64 tensor)."""
    return _traced(n, seed)(tf.cast(epoch, tf.int64))


@functools.lru_cache(maxsize=64)
def _traced(n: int, seed: int):
    """`_permutation` of (n, seed) as a function of the epoch, traced once (one `tf.function`
    each: a shared one retraced per (n, seed) would warn of retracing in a process that runs
    several plans)."""
    return tf.function(functools.partial(_permutation, n, seed), autograph=False)


def _permutation(n: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    encrypt, size = feistel(n, seed, epoch)
    return walk_for(size)(encrypt, n, size)


def feistel(n: int, seed: int, epoch: tf.Tensor) -> tuple[Callable[[tf.Tensor], tf.Tensor], int]:
    """(E, size): the Feistel network of (seed, epoch), a bijection of [0, size) on int64
    indices, and the size of that domain — the smallest even power of two holding [0, n)."""
    half = max(1, -(-max(1, (n - 1).bit_length()) // 2))  # bits per Feistel half
    mask = (1 << half) - 1
    key = tf.stack([tf.constant(seed, tf.int64), epoch])
    round_keys = tf.random.stateless_uniform([ROUNDS], key, minval=0, maxval=2**31 - 1, dtype=tf.int64)

    def encrypt(index):
        left, right = tf.bitwise.right_shift(index, half), tf.bitwise.bitwise_and(index, mask)
        for r in range(ROUNDS):
            mixed = tf.bitwise.bitwise_and(_mix(right + round_keys[r]), mask)
            left, right = right, tf.bitwise.bitwise_xor(left, mixed)
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

    return encrypt, 1 << (2 * half)


# Cycle walking: an index whose image leaves [0, n) is encrypted again until it is back inside;
# the result is a bijection of [0, n).  Two ways to the same result, by the domain's size:
DOUBLING_MIN_DOMAIN = 4096  # below it walk_each ran faster (benchmarks/permutation_bench.py)
# Above this one, walk_each's leaner memory: doubling's tables take ~12 bytes per domain index
# (~1.6 GB here) and the domain can be ~4n, where walk_each holds ~17 bytes per row.
DOUBLING_MAX_DOMAIN = 2**27


def walk_for(size: int) -> Callable:
    """The cycle walk used in a domain of `size` indices: `walk_each` or `walk_by_doubling`."""
    return walk_by_doubling if DOUBLING_MIN_DOMAIN <= size <= DOUBLING_MAX_DOMAIN else walk_each


def walk_each(encrypt, n: int, size: int) -> tf.Tensor:
    """The walk index by index: all n indices encrypted again while any is outside [0, n) —
    as many times as the longest walk (~5 for 800 rows in 1,024; ~10 for 10,240 in 16,384;
    ~40 where the domain is ~4n)."""

    def step(index, pending):
        index = tf.where(pending, encrypt(index), index)
        return index, index >= n

    start = tf.range(n, dtype=tf.int64), tf.ones([n], tf.bool)
    # No walk is longer than the domain: the bound only keeps a fault from looping forever.
    index, _ = tf.while_loop(lambda _, pending: tf.reduce_any(pending), step, start, maximum_iterations=size)
    return tf.cast(index, tf.int32)


def walk_by_doubling(encrypt, n: int, size: int) -> tf.Tensor:
    """The walk by pointer doubling: the domain encrypted once, then a jump table — y inside
    [0, n) stays, y outside goes to E(y) — squared (jump[jump]: twice as far each time) until
    every E(k) has landed, ~log2 of the longest walk gathers."""
    # The tables in int32 (size ≤ DOUBLING_MAX_DOMAIN): ~12 bytes per domain index in all.
    domain = tf.range(size, dtype=tf.int64)
    image = tf.cast(encrypt(domain), tf.int32)  # E over the domain
    jump = tf.where(domain < n, tf.cast(domain, tf.int32), image)
    first = image[:n]  # E(k) of the indices to permute

    def unfinished(jump):
        return tf.reduce_any(tf.gather(jump, first) >= n)

    # A walk is at most `size` long, so log2(size) squarings always finish it: the bound only
    # keeps a fault from looping forever.
    doublings = size.bit_length()
    jump = tf.while_loop(
        unfinished, lambda jump: [tf.gather(jump, jump)], [jump], maximum_iterations=doublings
    )[0]
    return tf.cast(tf.gather(jump, first), tf.int32)
