"""The training rows' order in an epoch: a keyed pseudorandom permutation, computed in the graph.

`permutation(n, seed, epoch)` is a pure function of (n, seed, epoch), identical under XLA, in a
plain graph and eagerly, on every device: a 4-round Feistel network over the indices' bits
(round keys from `tf.random.stateless_uniform` keyed by (seed, epoch)), with cycle walking to
stay inside [0, n).  It costs O(n) elementwise integer operations and no sort, so a compiled
call can start epochs without Python (XLA's sort of n random keys costs ~20 ms for 100,000
rows; this ~1 ms); TensorFlow's own index shuffles have no XLA kernel.
"""

from __future__ import annotations

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
    half = max(1, -(-max(1, (n - 1).bit_length()) // 2))  # bits per Feistel half
    mask = (1 << half) - 1
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    round_keys = tf.random.stateless_uniform([ROUNDS], key, minval=0, maxval=2**31 - 1, dtype=tf.int64)

    def encrypt(index):  # a bijection of [0, 2^(2·half)), which holds [0, n)
        left, right = tf.bitwise.right_shift(index, half), tf.bitwise.bitwise_and(index, mask)
        for r in range(ROUNDS):
            mixed = tf.bitwise.bitwise_and(_mix(right + round_keys[r]), mask)
            left, right = right, tf.bitwise.bitwise_xor(left, mixed)
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

    index = encrypt(tf.range(n, dtype=tf.int64))
    # Cycle walking: an index that leaves [0, n) is encrypted again until it is back inside;
    # the result is still a bijection of [0, n).
    index = tf.while_loop(
        lambda i: tf.reduce_any(i >= n), lambda i: [tf.where(i >= n, encrypt(i), i)], [index]
    )[0]
    return tf.cast(index, tf.int32)
