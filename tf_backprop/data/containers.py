"""Containers: a whole source before splitting, the splits after, and the preprocessing between.

Targets by task:

* `RawSource.y`: regression [m, k] float64 in original units; classification [m] int64 class ids;
* `Split.y`: regression [m, k] float64 standardized; binary [m, 1] float64 in {0, 1} (the id of
  `class_names[1]` is 1); multiclass [m] int32 class ids, indices into `class_names`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_backprop.data.tasks import TASKS


@dataclasses.dataclass
class RawSource:
    """A whole source before splitting: raw features and targets encoded for the task."""

    x: np.ndarray  # [m, n] float64, original units
    y: np.ndarray  # regression [m, k] float64; classification [m] int64 class ids
    task: str
    feature_names: list[str]
    target_name: str
    class_names: list[str] | None
    fingerprint: dict | None = None  # data.fingerprint: what identifies these rows


@dataclasses.dataclass
class Preprocessing:
    """Everything export and predict need; statistics come from the train split only."""

    task: str  # regression | binary | multiclass
    feature_names: list[str]  # CSV header names, or x1..xn for synthetic data
    feature_mean: list[float]  # [n]; zeros when not standardized
    feature_std: list[float]  # [n]; ones when not standardized (a zero std is replaced by 1)
    target_name: str
    target_mean: list[float] | None = None  # regression only: [k]
    target_std: list[float] | None = None  # regression only: [k]
    class_names: list[str] | None = None  # classification: label names in class-id order
    # What the statistics were computed from (data.fingerprint), so a resumed run can tell
    # that its data changed; None in data.json files written before fingerprints existed.
    fingerprint: dict | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: unknown name {self.task!r}; expected one of {', '.join(TASKS)}")
        n = len(self.feature_names)
        if len(self.feature_mean) != n or len(self.feature_std) != n:
            raise ValueError(f"feature_mean and feature_std: expected {n} values (one per feature)")
        # Plain floats and strs, so to_dict() is JSON-serializable whatever the caller passed.
        self.feature_names = [str(name) for name in self.feature_names]
        self.feature_mean = [float(v) for v in self.feature_mean]
        self.feature_std = [float(v) for v in self.feature_std]
        self.target_mean = None if self.target_mean is None else [float(v) for v in self.target_mean]
        self.target_std = None if self.target_std is None else [float(v) for v in self.target_std]
        self.class_names = None if self.class_names is None else [str(c) for c in self.class_names]

    @property
    def n_outputs(self) -> int:
        """Output units the model needs: k for regression, 1 for binary, the class count for multiclass."""
        if self.task == "regression":
            return len(self.target_mean)
        if self.task == "binary":
            return 1
        return len(self.class_names)

    def to_dict(self) -> dict:
        """A JSON-serializable dict; `from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        """Rebuilds a Preprocessing from `to_dict()` output; ValueError on missing or unknown keys."""
        names = {field.name for field in dataclasses.fields(cls)}
        required = {field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING}
        if not required <= set(d) <= names:
            raise ValueError(
                f"preprocessing: expected keys {sorted(names)}, got {sorted(d)} "
                f"(missing {sorted(required - set(d))}, unknown {sorted(set(d) - names)})"
            )
        return cls(**d)

    def transform_features(self, x: np.ndarray) -> np.ndarray:
        """Raw features [m, n] -> standardized float64 [m, n]."""
        x = np.asarray(x, dtype=np.float64)
        n = len(self.feature_names)
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(
                f"x: expected shape [batch, {n}] ({', '.join(self.feature_names)}), got {list(x.shape)}"
            )
        return (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)

    def transform_targets(self, y: np.ndarray) -> np.ndarray:
        """Regression targets [m, k] in original units -> standardized; identity otherwise."""
        if self.task != "regression":
            return np.asarray(y)
        return (np.asarray(y, dtype=np.float64) - np.asarray(self.target_mean)) / np.asarray(self.target_std)

    def inverse_transform_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardized regression targets or predictions [m, k] -> original units; identity otherwise."""
        if self.task != "regression":
            return np.asarray(y)
        return np.asarray(y, dtype=np.float64) * np.asarray(self.target_std) + np.asarray(self.target_mean)


@dataclasses.dataclass
class Split:
    """One split: standardized features and targets in the task's layout (module docstring)."""

    x: np.ndarray  # [m, n] float64, standardized
    y: np.ndarray  # regression [m, k] float64 standardized; binary [m, 1] float64; multiclass [m] int32

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclasses.dataclass
class StreamedSplit:
    """A split left on disk by the streaming statistics pass (`data.scan`), read by `data.pipeline`.

    One cache file per shard, in shard order: TFRecord records of raw float64 rows [features...,
    target value, target code], the code indexing the shard's distinct target cells.
    """

    name: str  # train | validation | test
    files: list[str]  # per shard
    shard_rows: list[int]  # per shard
    n_features: int
    class_ids: list[list[int]] | None  # classification: per shard, the class id of each code

    def __len__(self) -> int:
        return sum(self.shard_rows)


@dataclasses.dataclass
class Datasets:
    """The three splits of one source and the preprocessing that produced them.

    A streamed source's training and test splits stay on disk (`StreamedSplit`); its validation
    split is read into memory, as it is evaluated after every epoch.
    """

    train: Split | StreamedSplit
    validation: Split | None  # None when val_split == 0
    test: Split | StreamedSplit | None  # None when test_split == 0
    preprocessing: Preprocessing
    source: str  # e.g. "regression" or "csv:/abs/path.csv"
    feature_abs_max: np.ndarray | None = None  # [n] max |x| of every split's rows as read (None: unknown)

    @property
    def task(self) -> str:
        return self.preprocessing.task

    @property
    def n_features(self) -> int:
        return len(self.preprocessing.feature_names)

    @property
    def n_outputs(self) -> int:
        return self.preprocessing.n_outputs
