"""Streamed CSV sources: whether to stream, the statistics pass over every shard, and its merge.

`wants_stream` decides: `--stream` given, or a CSV source larger than STREAM_ABOVE_BYTES (the
in-memory loader holds every cell as Python text while it parses, ~14 bytes of memory per byte
of CSV, so that budget is ~1 GB of memory).  `scan_shards` runs the statistics pass
(`data.scan`) over some or all shards into a cache folder; `load_streamed` merges every shard's
scan, in shard order, into what training needs — the `Preprocessing` (standardization from the
merged moments, the task from the merged target summary, the classes), the split sizes, and the
splits: training and test stay on disk (`StreamedSplit`), the validation split is read into
memory (at most MAX_VALIDATION_BYTES), since it is evaluated after every epoch.

Errors are those of the in-memory loader, in its format; a shard's own errors come from its
scan, in shard order, so a source with errors in several shards reports the first bad shard's.
"""

from __future__ import annotations

import os

import numpy as np

from tf_backprop import names, text
from tf_backprop.data import checks, csv_source, csv_table, fingerprint, pipeline, scan, shards, splits
from tf_backprop.data.containers import Datasets, Preprocessing, StreamedSplit
from tf_backprop.data.errors import DataError
from tf_backprop.data.moments import Moments
from tf_backprop.data.tasks import CLASSIFICATION, TargetSummary, infer_task

CSV_PREFIX = shards.CSV_PREFIX
STREAM_ABOVE_BYTES = names.STREAM_ABOVE_BYTES  # CSV bytes above which a source streams unless --nostream
MAX_VALIDATION_BYTES = 256 << 20  # a streamed validation split's rows in memory (float64)


def wants_stream(source: str, stream: bool | None) -> bool:
    """Whether `source` is streamed: `stream` if given, else whether it is a CSV source of more
    than STREAM_ABOVE_BYTES (uncompressed).  ValueError for stream=True with a synthetic source."""
    is_csv = source.startswith(CSV_PREFIX)
    if stream and not is_csv:
        raise ValueError(f"stream: only CSV sources stream, got data {source!r}")
    if stream is not None or not is_csv:
        return bool(stream)
    paths = shards.expand(source[len(CSV_PREFIX) :])
    return shards.total_data_size(paths) > STREAM_ABOVE_BYTES


def source_shards(source: str) -> list[str]:
    """The shard files of a csv: source, in order."""
    return shards.expand(source[len(CSV_PREFIX) :])


def check_source_files(source: str) -> list[str]:
    """The shard files of a csv: source, each checked to be a file that opens, with the
    in-memory loader's errors (a missing path, a pattern matching nothing, an empty path), so a
    streamed run can fail before it touches its folder."""
    path = source[len(CSV_PREFIX) :]
    if not path:
        raise ValueError(f"source: {source!r} needs a file path after 'csv:'")
    paths = shards.expand(path)
    for shard in paths:
        try:
            with open(os.path.expanduser(shard), "rb"):
                pass
        except OSError as error:
            raise csv_table.unreadable(shard, error) from None
    return paths


def scan_shards(
    source: str,
    *,
    target: str | None,
    val_split: float,
    test_split: float,
    seed: int,
    directory: str,
    indices: list[int] | None = None,
) -> int:
    """The statistics pass over shards `indices` (default: all) of a csv: source; the number of
    shards.  DataError for bad data, as the in-memory loader reports it."""
    paths = shards.expand(source[len(CSV_PREFIX) :])
    key = scan.ScanKey(seed, val_split, test_split, target or "")
    for index in range(len(paths)) if indices is None else indices:
        scan.scan_shard(paths[index], index, key, directory)
    return len(paths)


def load_streamed(
    source: str,
    *,
    target: str | None,
    task: str,
    loss: str | None,
    val_split: float,
    test_split: float,
    standardize: bool,
    directory: str,
) -> Datasets:
    """Every shard's scan (from `directory`) merged into Datasets; DataError as the loader's."""
    path = source[len(CSV_PREFIX) :]
    paths = shards.expand(path)
    scans = [scan.read_scan(directory, i) for i in range(len(paths))]
    missing = [p for p, s in zip(paths, scans) if s is None]
    if missing:
        raise DataError(f"{missing[0]}: the statistics pass has not scanned it (no {directory} entry)")
    first = scans[0]
    for other in scans[1:]:
        csv_table.check_same_header(first.path, first.header, other.path, other.header_line, other.header)
    j = first.header.index(target)
    summary = _target_summary(path, scans, j)
    _check_class_count(summary, task, loss)
    resolved = infer_task(task, loss, summary)
    counts = {name: sum(s.rows[name] for s in scans) for name in scan.SPLITS}
    _check_counts(path, counts, val_split, test_split)
    features = [name for c, name in enumerate(first.header) if c != j]
    moments_x, moments_y = _training_moments(scans, len(features))
    preprocessing = _preprocessing(
        path, moments_x, moments_y, resolved, summary, features, target, standardize
    )  # an overflow error comes before the warnings, as in memory
    class_ids = _class_ids(scans, summary) if resolved in CLASSIFICATION else None
    source_summary = _source_summary(
        scans, features, moments_x, moments_y, target, summary, class_ids, standardize
    )
    checks.warn_about_summary(source_summary, path)

    def split(name: str) -> StreamedSplit | None:
        if not counts[name]:
            return None
        files = [scan.cache_file(directory, name, i) for i in range(len(scans))]
        return StreamedSplit(name, files, [s.rows[name] for s in scans], len(features), class_ids)

    validation = split("validation")
    if validation is not None:
        size = len(validation) * (len(features) + 1) * 8
        if size > MAX_VALIDATION_BYTES:
            raise DataError(
                f"{path}: the validation split's {len(validation)} rows would take {size / 2**20:.0f} MB "
                f"in memory (streaming evaluates it in memory after every epoch; at most "
                f"{MAX_VALIDATION_BYTES >> 20} MB): lower --val_split"
            )
        validation = pipeline.read_split(validation, preprocessing)
    total = sum(counts.values())
    preprocessing.fingerprint = fingerprint.of_shards(
        [s.data_bytes for s in scans], [s.sha256 for s in scans], total
    )
    return Datasets(
        split("train"),
        validation,
        split("test"),
        preprocessing,
        CSV_PREFIX + os.path.abspath(path),
        feature_abs_max=source_summary.abs_max,
    )


def _target_summary(path: str, scans: list[scan.ShardScan], j: int) -> TargetSummary:
    """The target column's kind and classes over every shard, as csv_source summarizes it."""
    column = f"{path} (column {text.quote(scans[0].header[j])})"

    def first(name: str):
        found = next(((s, getattr(s, name)) for s in scans if getattr(s, name) is not None), None)
        return None if found is None else (found[0].where(found[1][0], j), text.quote(found[1][1]))

    labels = None if any(s.labels is None for s in scans) else {label for s in scans for label in s.labels}
    if (example := first("first_text")) is not None:
        names = None if labels is None else sorted(labels)
        return TargetSummary("labels", names, column, *example)
    if (bad := first("first_non_finite")) is not None:
        raise DataError(f"{bad[0]}: expected a finite number, got {bad[1]}")
    if (example := first("first_non_integer")) is not None:
        return TargetSummary("real", None, column, *example)
    names = None if labels is None else csv_source.integer_names(labels)
    return TargetSummary("integer", names, column)


def _check_class_count(summary: TargetSummary, task: str, loss: str | None) -> None:
    """DataError when the target may be classes but had more distinct cells than a scan keeps."""
    if summary.kind == "real" or summary.class_names is not None:
        return
    requested = infer_task(task, loss)
    if requested in CLASSIFICATION or (summary.kind == "labels" and requested == "auto"):
        raise DataError(
            f"{summary.where}: more than {scan.MAX_LABELS} distinct target values; a streamed "
            f"classifier takes at most {scan.MAX_LABELS} classes"
        )


def _check_counts(path: str, counts: dict[str, int], val_split: float, test_split: float) -> None:
    """DataError when a split that was asked for is empty (the hash gave it no row)."""
    total = sum(counts.values())
    for name, fraction, split in (("test_split", test_split, "test"), ("val_split", val_split, "validation")):
        if fraction > 0 and counts[split] == 0:
            raise DataError(
                f"{path}: the {split} split drew none of the {total} rows ({name}={fraction:g} is "
                f"each row's chance, by a hash of --seed, shard and line); raise --{name} or try "
                f"another --seed"
            )
    if counts["train"] == 0:
        raise DataError(f"{path}: too few rows ({total}) for a non-empty train split after val/test")


def _preprocessing(
    path: str,
    moments: Moments,
    target_moments: Moments,
    task: str,
    summary: TargetSummary,
    features,
    target: str,
    standardize: bool,
):
    """The standardization of the merged training moments, and the task's target fields."""
    n = len(features)
    mean, std = (
        (moments.mean, splits.scaling_std(moments.mean, moments.std, features, path))
        if standardize
        else (np.zeros(n), np.ones(n))
    )
    regression = task == "regression"
    target_mean = target_std = None
    if regression:
        target_mean, target_std = [0.0], [1.0]
        if standardize:
            target_mean = list(target_moments.mean)
            target_std = list(splits.scaling_std(target_moments.mean, target_moments.std, [target], path))
    return Preprocessing(
        task=task,
        feature_names=features,
        feature_mean=list(mean),
        feature_std=list(std),
        target_name=target,
        target_mean=target_mean,
        target_std=target_std,
        class_names=None if regression else summary.class_names,
    )


def _training_moments(scans, n_features: int) -> tuple[Moments, Moments]:
    """(features, target) moments of every shard's training rows, merged."""
    moments, target_moments = Moments.empty(n_features), Moments.empty(1)
    for s in scans:  # in shard order: the same bits whoever scanned which shard
        moments, target_moments = moments.merge(s.features), target_moments.merge(s.target)
    return moments, target_moments


def _source_summary(scans, features, moments_x, moments_y, target, summary, class_ids, standardized):
    """What the checks need of every shard's scan: merged moments, maxima and class counts."""
    result = checks.SourceSummary(
        feature_names=features,
        features=moments_x,
        abs_max=np.max([s.abs_max for s in scans], axis=0),
        rows=sum(sum(s.rows.values()) for s in scans),
        target_name=target,
        standardized=standardized,
    )
    if class_ids is None:
        result.target = moments_y
    else:
        result.class_names = summary.class_names
        result.class_counts = np.zeros(len(summary.class_names), np.int64)
        for s, ids in zip(scans, class_ids):  # a class may have several cells ("1", "1.0")
            np.add.at(result.class_counts, ids, s.label_counts)
    return result


def _class_ids(scans, summary: TargetSummary) -> list[list[int]]:
    """Per shard, the class id of each of its codes (its distinct target cells)."""
    index = {name: k for k, name in enumerate(summary.class_names)}
    if summary.kind == "labels":
        return [[index[label] for label in s.labels] for s in scans]
    return [[index[csv_source.integer_name(label)] for label in s.labels] for s in scans]
