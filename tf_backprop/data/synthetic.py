"""Synthetic sources: regression, xor, spirals[:K] and random, generated from a seed.

Each has two features x1, x2; `generate` draws the rows and resolves the task.
"""

from __future__ import annotations

import numpy as np

from tf_backprop.data import fingerprint
from tf_backprop.data.containers import RawSource
from tf_backprop.data.tasks import TargetSummary, infer_task

SYNTHETIC = ("regression", "xor", "spirals", "random")

_SOURCES_HELP = "regression, xor, spirals, spirals:K, random, csv:PATH"
# Stream id mixed into the seed for synthetic generation, so that drawing the data and
# shuffling it (np.random.default_rng(seed)) do not consume the same random stream.
_GENERATION_STREAM = 1


def generate(source: str, task: str, loss: str | None, seed: int, n_samples: int, noise: float) -> RawSource:
    """Generates a synthetic source and resolves its task; ValueError for an unknown name."""
    name, arms = _parse_name(source)
    rng = np.random.default_rng([seed, _GENERATION_STREAM])
    if name == "spirals":
        x, y = _make_spirals(rng, n_samples, noise, arms)
    else:
        x, y = {"regression": _make_regression, "xor": _make_xor, "random": _make_random}[name](
            rng, n_samples, noise
        )
    classes = None if y.ndim == 2 else [str(c) for c in range(arms or 2)]
    summary = TargetSummary("real" if classes is None else "labels", classes, where=f"source {source!r}")
    resolved = infer_task(task, loss, summary)
    names = [f"x{j + 1}" for j in range(x.shape[1])]
    identity = fingerprint.of_synthetic(source, seed, n_samples, noise)
    return RawSource(x, y, resolved, names, "y", classes, identity)


def check_name(source: str) -> None:
    """ValueError unless source names a synthetic source."""
    _parse_name(source)


def _parse_name(source: str) -> tuple[str, int]:
    """'spirals:3' -> ('spirals', 3); other names have 0 arms.  ValueError for an unknown name."""
    name, _, arms = source.partition(":")
    if name not in SYNTHETIC or (arms and name != "spirals"):
        hint = f" (a CSV file? csv:{source})" if source.lower().endswith((".csv", ".gz")) else ""
        raise ValueError(f"source: unknown name {source!r}{hint}; expected one of {_SOURCES_HELP}")
    if name != "spirals":
        return name, 0
    if not arms:
        return name, 2
    if not arms.isdigit() or int(arms) < 2:
        raise ValueError(f"source: {source!r} needs an integer number of classes K ≥ 2 in spirals:K")
    return name, int(arms)


def _make_regression(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [-2, 2]^2; y = sin(x1)·cos(x2) + x1·x2/4 + noise, all O(1)."""
    x = rng.uniform(-2.0, 2.0, size=(m, 2))
    y = np.sin(x[:, 0]) * np.cos(x[:, 1]) + 0.25 * x[:, 0] * x[:, 1]
    return x, (y + noise * rng.standard_normal(m))[:, None]  # [m, 2], [m, 1]


def _make_xor(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [-1, 1]^2, label 1 where sign(x1)·sign(x2) > 0; noise jitters x after labelling."""
    x = rng.uniform(-1.0, 1.0, size=(m, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return x + noise * rng.standard_normal(x.shape), labels


def _make_spirals(rng: np.random.Generator, m: int, noise: float, arms: int) -> tuple[np.ndarray, np.ndarray]:
    """`arms` interleaved spirals of radius ≤ 1 (1.5 turns each), balanced; noise jitters x."""
    labels = np.arange(m) % arms  # balanced classes; the split shuffles them
    t = rng.uniform(0.0, 1.0, size=m)  # position along the arm: radius and turn
    theta = 2.0 * np.pi * labels / arms + 3.0 * np.pi * t
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    return x + noise * rng.standard_normal(x.shape), labels.astype(np.int64)


def _make_random(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The article's data: x and y uniform in [0, 1), unrelated, so nothing can be learned."""
    return rng.uniform(0.0, 1.0, size=(m, 2)), rng.uniform(0.0, 1.0, size=(m, 1))
