"""The three matmul forms of a training step, at the 1024-1024-1024-10 net's sizes, in TensorFlow's
XLA and in JAX: what bounds that net's step for any framework on this machine.

Per layer a step multiplies (batch 512, 1024 → 1024):
  forward          x · W    [512,1024] · [1024,1024]      "NN"
  input gradient   dz · Wᵀ  [512,1024] · [1024,1024]ᵀ     "NT"
  weight gradient  xᵀ · dz  [512,1024]ᵀ · [512,1024]      "TN" (contracts over the batch)
Each form is timed as a compiled loop of 30 chained products (each scaled, so the values stay
finite; the scale is one elementwise pass, the same in every form and framework), best of 3
windows, two rounds taking turns. From the rates it prints the ceiling the net's step mix
(its two hidden layers: 2 NN, 2 TN, 1 NT; the 1,024 → 10 layer is ~1% of the FLOPs and left out)
allows, as a fraction of the NN rate, if everything besides these matmuls took no time.

    python benchmarks/matmul_forms.py    # ~1 minute on 2 cores; JAX if installed
"""

from __future__ import annotations

import os
import time

import contenders

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH, WIDTH, CHAIN, WINDOWS, ROUNDS = 512, 1024, 30, 3, 2
FLOPS = 2 * BATCH * WIDTH * WIDTH  # one product, every form
STEP_MIX = {"NN": 2, "TN": 2, "NT": 1}  # the hidden layers' products in one step


def _operands():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, WIDTH)).astype("float32")
    w = (rng.standard_normal((WIDTH, WIDTH)) * 0.03).astype("float32")
    dz = (rng.standard_normal((BATCH, WIDTH)) * 0.03).astype("float32")
    return x, w, dz


def _tensorflow_loops() -> dict:
    import tensorflow as tf

    x, w, dz = (tf.constant(a) for a in _operands())
    forms = {
        "NN": lambda c: tf.matmul(c, w) * 0.03,
        "NT": lambda c: tf.matmul(c, w, transpose_b=True) * 0.03,
        "TN": lambda c: tf.matmul(c, dz, transpose_a=True)[:BATCH] * 0.03,
    }

    def chained(product):
        @tf.function(jit_compile=True, autograph=False)
        def run(c):
            return tf.while_loop(lambda i, c: i < CHAIN, lambda i, c: (i + 1, product(c)), (0, c))[1]

        return lambda: run(x).numpy()

    return {form: chained(product) for form, product in forms.items()}


def _jax_loops() -> dict:
    import jax

    x, w, dz = (jax.numpy.asarray(a) for a in _operands())
    forms = {
        "NN": lambda c: (c @ w) * 0.03,
        "NT": lambda c: (c @ w.T) * 0.03,
        "TN": lambda c: (c.T @ dz)[:BATCH] * 0.03,
    }

    def chained(product):
        run = jax.jit(lambda c: jax.lax.fori_loop(0, CHAIN, lambda i, c: product(c), c))
        return lambda: run(x).block_until_ready()

    return {form: chained(product) for form, product in forms.items()}


def measure() -> dict[str, dict[str, float]]:
    """{framework: {form: FLOP/s}}, best of every window and round."""
    loops = {"TensorFlow XLA": _tensorflow_loops()}
    if contenders.available("jax"):
        loops["JAX"] = _jax_loops()
    for forms in loops.values():
        for run in forms.values():
            run()  # compile
    best = {name: dict.fromkeys(forms, 0.0) for name, forms in loops.items()}
    for _ in range(ROUNDS):
        for name, forms in loops.items():
            for form, run in forms.items():
                for _ in range(WINDOWS):
                    start = time.perf_counter()
                    run()
                    rate = CHAIN * FLOPS / (time.perf_counter() - start)
                    best[name][form] = max(best[name][form], rate)
    return best


def mix_ceiling(rates: dict[str, float]) -> float:
    """The step mix's FLOP/s at these rates, as a fraction of the NN rate."""
    seconds = sum(count * FLOPS / rates[form] for form, count in STEP_MIX.items())
    return sum(STEP_MIX.values()) * FLOPS / seconds / rates["NN"]


def main() -> None:
    best = measure()
    print(
        "| framework | NN (forward) | NT (input gradient) | TN (weight gradient) | TN ÷ NN | step mix ÷ NN |"
    )
    print("|---|---|---|---|---|---|")
    for name, rates in best.items():
        print(
            f"| {name} | {rates['NN'] / 1e9:.0f} | {rates['NT'] / 1e9:.0f} | {rates['TN'] / 1e9:.0f} "
            f"| {rates['TN'] / rates['NN']:.2f} | {mix_ceiling(rates):.2f} |"
        )
    print("\n(GFLOP/s of [512,1024] × [1024,1024] products in each form; best of 3 windows × 2 rounds)")


if __name__ == "__main__":
    main()
