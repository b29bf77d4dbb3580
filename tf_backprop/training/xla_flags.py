"""XLA_FLAGS for the run's size: a small step compiles and runs faster with XLA's elemental emitters.

XLA's CPU compiler writes each fusion of elementwise work with one of two code emitters: the
fusion emitters (its default since TensorFlow 2.20) or the older elemental ones
(`--xla_cpu_use_fusion_emitters=false`).  On the 2-core CI machine the default run (the
article's net at batch 10, 1,080 FLOPs a step) compiled ~0.25 s faster with the elemental
emitters (its first call 0.52–0.56 s against 0.72–0.85 s) and trained ~10% more steps/s, bit
for bit the same.  At 0.25 MFLOP a step the two ran even (8-32-32-1 at batch 32), and from
2.4 MFLOP up the fusion emitters ran faster (steps/s without them: 32-64-64-1 at batch 64
0.66×, 16-128-128-1 at 64 0.78×, 64-256-256-1 at 256 0.88×, 1024-1024-1024-10 at 512 0.90×).
Hence `Plan.prefers_elemental_emitters` (up to 0.1 MFLOP) and `prefer_for`, which the command
calls before its first compilation (README, Benchmarks).

XLA reads XLA_FLAGS once per process, at its first compilation: set later, it changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

import tensorflow as tf
from absl import logging

FLAG = "xla_cpu_use_fusion_emitters"
# XLA ends the process on a flag it does not know; TensorFlow 2.19's XLA has no such flag.
FIRST_TENSORFLOW = (2, 20)


def prefer_for(
    plan,
    devices: Sequence[str],
    environ: MutableMapping[str, str] = os.environ,
    version: str = tf.__version__,
) -> bool:
    """Adds --xla_cpu_use_fusion_emitters=false to XLA_FLAGS when `plan` prefers the elemental
    emitters and the run's `devices` (e.g. ["/CPU:0"]) are CPUs; True when it did.

    XLA_FLAGS already naming the flag is the user's choice, left as it is; so is a TensorFlow
    older than 2.20.  Only a process that has not compiled with XLA yet takes it up.
    """
    on_cpus = not any("GPU" in device.upper() for device in devices)  # the flag is XLA:CPU's
    if not (plan.prefers_elemental_emitters and on_cpus) or FLAG in environ.get("XLA_FLAGS", ""):
        return False
    if _release(version) < FIRST_TENSORFLOW:
        return False
    environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} --{FLAG}=false".strip()
    logging.info("a small step (%d FLOPs): XLA's elemental emitters (--%s=false)", plan.step_flops, FLAG)
    return True


def _release(version: str) -> tuple[int, int]:
    """'2.21.0' -> (2, 21); '2.20.0-rc1' -> (2, 20)."""
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
