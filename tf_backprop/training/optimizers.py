"""Keras optimizers and learning-rate schedules, built from a config by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from absl import logging

from tf_backprop import names

# Each optimizer name, and how to build it from (config, the shared keyword arguments).
_FACTORIES: dict[str, Callable[[Any, dict], keras.optimizers.Optimizer]] = {
    "sgd": lambda config, common: keras.optimizers.SGD(**common),
    "momentum": lambda config, common: keras.optimizers.SGD(momentum=config.momentum, **common),
    "nesterov": lambda config, common: keras.optimizers.SGD(
        momentum=config.momentum, nesterov=True, **common
    ),
    "adam": lambda config, common: keras.optimizers.Adam(**common),
    "adamw": lambda config, common: keras.optimizers.AdamW(**common),
    # rmsprop's rho is the config's momentum: the decay of its running mean of squares.
    "rmsprop": lambda config, common: keras.optimizers.RMSprop(momentum=0.0, rho=config.momentum, **common),
    "adagrad": lambda config, common: keras.optimizers.Adagrad(**common),
}
OPTIMIZERS = tuple(_FACTORIES)
LR_SCHEDULES = names.LR_SCHEDULES


def build_schedule(config, total_steps: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate: a float, or a Keras schedule over the run's `total_steps`."""
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        decay_steps = config.lr_decay_steps or total_steps
        if decay_steps < total_steps:
            logging.warning(
                "cosine: the learning rate reaches lr_alpha × %g at step %d of the run's %d and stays "
                "there (--lr_decay_steps=0: decay over the whole run)",
                lr, decay_steps, total_steps,
            )  # fmt: skip
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=config.lr_alpha)
    if config.lr_schedule in ("exponential", "step"):
        return keras.optimizers.schedules.ExponentialDecay(
            lr,
            config.lr_decay_steps,
            config.lr_decay_rate,
            staircase=config.lr_schedule == "step",
        )
    return lr


def build_optimizer(config, total_steps: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by config.optimizer, with schedule, weight decay and clipping.

    config: a TrainConfig (optimizer, learning_rate, lr_*, momentum, weight_decay, clip_*).
    """
    common = {
        "learning_rate": build_schedule(config, total_steps),
        "clipnorm": config.clip_norm,
        "global_clipnorm": config.clip_global_norm,
        "clipvalue": config.clip_value,
    }
    if config.weight_decay is not None:
        common["weight_decay"] = config.weight_decay
    return _FACTORIES[config.optimizer](config, common)
