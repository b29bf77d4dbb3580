"""Distributed training throughput: one device against MirroredStrategy, side by side in one run.

For each model (its own subprocess, with 2 logical CPU devices configured at start) and each
gradient source it measures samples/s of the training loop (`Loop.run` one epoch at a time,
monitoring off, steps_per_call 1000) for

  * none        the single-device engine (everything in one XLA while_loop), batch b;
  * none 2b     the same with batch 2b: the arithmetic of two replicas of b;
  * mirrored 1  the engine on MirroredStrategy(["/cpu:0"]), batch b;
  * mirrored 2  the engine on the 2 logical CPUs, --batch_size=2b (b per replica);
  * mirrored 2, jit   the same with each replica's forward + gradient XLA-compiled (the
                      default on GPU replicas; on CPU replicas it was no faster).

The optimizer cannot run under XLA on a CPU strategy, so a distributed step is a plain
tf.function: one strategy.run (gradient, optimizer.apply) and one all-reduce of the step's
statistics; CPU replicas reduce with ReductionToOneDevice.  Compilation is excluded (one warm-up
epoch); the setups take turns, epoch by epoch, and each keeps its best of ROUNDS epochs.
The 2 logical CPUs share the machine's cores, so they show the strategy's overhead rather than a
speed-up; on GPUs or several machines each replica has its own hardware.

    python benchmarks/distribute_bench.py             # both models (~3 minutes on 2 cores)
    python benchmarks/distribute_bench.py --models=0  # just the article's net
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import per_model  # noqa: E402  (sibling module; benchmarks/ is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = [
    # (name, layer sizes, batch b of one replica, rows per epoch)
    ("article 2-3-3-1, batch 10", [2, 3, 3, 1], 10, 20_000),
    ("64-256-256-1, batch 256", [64, 256, 256, 1], 256, 256 * 2 * 40),
]
ROUNDS = int(os.environ.get("ROUNDS", 5))  # timed epochs per setup, interleaved; the best one counts
SETUPS = ["none", "none 2b", "mirrored 1", "mirrored 2", "mirrored 2, jit"]


def _strategy(setup: str):
    from tf_backprop.training import distributed

    if setup.startswith("none"):
        return None
    return distributed.mirrored_on_cpus(["/cpu:0"] if setup == "mirrored 1" else distributed.cpu_devices(2))


class _Setup:
    """One engine on one setup, compiled (warm-up epoch); time_epoch() gives samples/s."""

    def __init__(self, layers, batch, datasets, grad_source, setup):
        from tf_backprop import training

        self._folder = tempfile.TemporaryDirectory(prefix="distribute_bench-")  # goes with self
        batch = 2 * batch if setup == "none 2b" or setup.startswith("mirrored 2") else batch  # global
        cfg = training.TrainConfig(
            layers=tuple(layers),
            loss="mse",
            batch_size=batch,
            learning_rate=1e-3,
            grad_source=grad_source,
            monitor=False,
            steps_per_call=1000,
            workdir=self._folder.name,
            val_split=0.0,
            test_split=0.0,
        )
        strategy = _strategy(setup)
        jit = setup.endswith(", jit") if strategy is not None else None  # on CPU replicas: no XLA
        trainer = training.build(cfg, datasets, strategy=strategy, jit_gradients=jit)
        self.per_epoch, self.global_batch = trainer.plan.steps_per_epoch, trainer.plan.global_batch
        self.run = trainer.loop()
        self.state = self.run.state
        self.epoch = 0
        self.run.run(total_steps=self.per_epoch)  # warm-up: compile

    def time_epoch(self) -> float:
        """Samples/s of one epoch of the loop (chunks, checks; no validation, no monitoring)."""
        start = time.perf_counter()
        self.epoch += 1
        self.run.run(total_steps=(self.epoch + 1) * self.per_epoch)
        return self.per_epoch * self.global_batch / (time.perf_counter() - start)


def child(index: int) -> dict:
    """Measures one model under every setup and gradient source; returns its figures.

    Every setup is built first; then ROUNDS rounds time one epoch of each in turn, and each
    setup keeps its best epoch, so load from other processes disturbs all setups alike.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    name, layers, batch, rows = MODELS[index]
    datasets = per_model.random_datasets(layers, "mse", rows)
    setups = {
        f"{source}|{setup}": _Setup(layers, batch, datasets, source, setup)
        for source in ("tape", "manual")
        for setup in SETUPS
    }
    best = dict.fromkeys(setups, 0.0)
    for _ in range(ROUNDS):
        for key, setup in setups.items():
            best[key] = max(best[key], setup.time_epoch())
    return {"model": name, **best}


def main(argv: list[str]) -> None:
    per_model.main(argv, __file__, len(MODELS), child, _print_table)


def _print_table(rows: list[dict]) -> None:
    print(
        "| model | source | "
        + " | ".join(SETUPS)
        + " | mirrored 2 ÷ none 2b | mirrored 2 ÷ mirrored 1 | jit ÷ no jit |"
    )
    print("|---|---|" + "---|" * (len(SETUPS) + 3))
    for r in rows:
        for source in ("tape", "manual"):
            f = {setup: r[f"{source}|{setup}"] for setup in SETUPS}
            print(
                f"| {r['model']} | {source} | "
                + " | ".join(f"{f[s]:,.0f}" for s in SETUPS)
                + f" | {f['mirrored 2'] / f['none 2b']:.3f} | {f['mirrored 2'] / f['mirrored 1']:.2f} | "
                f"{f['mirrored 2, jit'] / f['mirrored 2']:.2f} |"
            )
    print(
        "\n(samples/s, best of interleaved epochs; ratios measured side by side in one run; monitoring off)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
