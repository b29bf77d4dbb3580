"""The statistics pass over one shard: every row validated, split, summed up and cached for training.

`scan_shard` reads a shard once — by `fastcsv` (TensorFlow's C++ decoder), or when that cannot
take it by the exact reader (`csv_table` and `csv_source`, whose errors it raises as the
in-memory loader does) — and for every row:

* validates it (the same one-line errors: file, line, column);
* assigns it to a split by a keyed hash of (seed, the shard's index in the sorted shard list,
  the row's line): the same whichever worker reads it, in whatever order (`split_ids`);
* merges the training rows' moments (features, and numeric targets) batch by batch
  (`moments.Moments`, float64, Chan's update), and every row's largest |feature| per column;
* notes what decides the target's task — its first text cell, first non-integer and first
  non-finite number — and its distinct cells (up to MAX_LABELS), the classes of a classifier,
  with the training rows of each (for the data checks);
* appends the row to its split's cache file, a TFRecord file of float64 rows
  [features..., target value, target code] (code: the cell's index in this shard's `labels`),
  so training reads binary rows instead of parsing text again.

The result (`ShardScan`) goes to ``shard-<index>.json`` beside the caches, written last (and
atomically): a shard whose JSON matches its file's size and modification time, and the run's
seed, fractions and target, is not read again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import files, text
from tf_backprop.data import csv_source, csv_table, fastcsv, shards, tasks
from tf_backprop.data.errors import DataError
from tf_backprop.data.moments import Moments

FORMAT = 3  # of the shard JSON and its caches (3: abs_max and label_counts)
SPLITS = ("train", "validation", "test")
MAX_LABELS = 10_000  # distinct target cells kept per shard: the classes a streamed classifier may have
EXACT_BATCH = 4096  # rows the exact reader parses at a time
PROGRESS_SECONDS = 10.0  # a long scan logs how far it is this often
_clock = time.monotonic
_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B


@dataclasses.dataclass(frozen=True)
class ScanKey:
    """What a shard's scan depends on besides its bytes."""

    seed: int
    val_split: float
    test_split: float
    target: str


@dataclasses.dataclass
class ShardScan:
    """What the statistics pass learned about one shard (see the module docstring).

    first_text / first_non_integer / first_non_finite: [line, cell] of the first target cell
    that is not a number, a number that is not whole, and a number that is not finite.
    """

    index: int
    path: str
    size: int
    mtime_ns: int
    key: dict
    header: list[str]
    header_line: int
    rows: dict[str, int]  # per split
    features: Moments  # of the training rows
    target: Moments  # of the training rows' finite numeric targets
    labels: list[str] | None  # distinct target cells in code order; None: more than MAX_LABELS
    label_counts: list[int] | None  # training rows of each of `labels`
    abs_max: list[float]  # per feature, max |x| over every split's rows (features are finite)
    first_text: list | None
    first_non_integer: list | None
    first_non_finite: list | None
    reader: str  # "fast" or "exact"
    data_bytes: int  # the shard's bytes as read (a .gz file's: uncompressed)
    sha256: str  # hex digest of those bytes, as the in-memory loader's fingerprint takes it

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(format=FORMAT, features=self.features.to_dict(), target=self.target.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ShardScan:
        d = {k: v for k, v in d.items() if k != "format"}
        d.update(features=Moments.from_dict(d["features"]), target=Moments.from_dict(d["target"]))
        return cls(**d)

    def where(self, line: int, column: int) -> str:
        """'file:line:col (column "name")' of a cell of this shard."""
        return f"{self.path}:{line}:{column + 1} (column {text.quote(self.header[column])})"


def cache_file(directory: str, split: str, index: int) -> str:
    """The cache of one split of shard `index`."""
    return os.path.join(directory, f"{split}-{index:05d}.tfrecord")


def scan_file(directory: str, index: int) -> str:
    return os.path.join(directory, f"shard-{index:05d}.json")


def split_ids(seed: int, shard: int, lines: np.ndarray, val_split: float, test_split: float) -> np.ndarray:
    """Each row's split (0 train, 1 validation, 2 test) from a hash of (seed, shard, line).

    u = hash / 2³² is uniform in [0, 1): test when u < test_split, validation when u <
    test_split + val_split, so each split holds its fraction of the rows in expectation.
    """
    h = _mix(np.full(len(lines), (seed & _MASK32) ^ 0x9E3779B9, np.int64))
    h = _mix(h ^ ((seed >> 32) & _MASK32) ^ (shard & _MASK32))
    h = _mix(h ^ (np.asarray(lines, np.int64) & _MASK32))
    u = h.astype(np.float64) / 2.0**32
    return np.where(u < test_split, 2, np.where(u < test_split + val_split, 1, 0)).astype(np.int8)


def _mix(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash of int64 values below 2³² (products stay below 2⁶³)."""
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    return x ^ (x >> 16)


def read_scan(directory: str, index: int) -> ShardScan | None:
    """The shard's saved scan, or None when there is none (or it is unreadable)."""
    path = scan_file(directory, index)
    try:
        with open(path, encoding="utf-8") as handle:
            d = json.load(handle)
        return ShardScan.from_dict(d) if d.get("format") == FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def scan_shard(path: str, index: int, key: ScanKey, directory: str) -> ShardScan:
    """Scans shard `index` (at `path`) into `directory`, or returns its saved scan when that
    still describes the file; DataError for bad data, as the in-memory loader reports it."""
    stat = os.stat(os.path.expanduser(path))
    saved = read_scan(directory, index)
    identity = (path, stat.st_size, stat.st_mtime_ns, dataclasses.asdict(key))
    if saved is not None and (saved.path, saved.size, saved.mtime_ns, saved.key) == identity:
        if all(os.path.exists(cache_file(directory, s, index)) for s in SPLITS):
            logging.info("%s: scanned before (%d rows), not read again", path, sum(saved.rows.values()))
            return saved
    started = time.perf_counter()
    digest = shards.Digest()  # of the bytes the fast reader reads, or read again for the exact one
    try:
        accumulator = _Accumulator(path, index, key, directory, "fast", *_read_header(path))
        with accumulator:
            for batch in fastcsv.batches(
                path, accumulator.header_line, len(accumulator.header), accumulator.target_column, digest
            ):
                accumulator.add(batch)
        reader = "fast"
    except (fastcsv.NeedsExactReader, _HeaderUnread) as reason:
        logging.info("%s: read by the exact reader (%s)", path, reason)
        accumulator = _Accumulator(path, index, key, directory, "exact", *_check_structure(path))
        with accumulator:
            for batch in _exact_batches(path, accumulator):
                accumulator.add(batch)
        reader, digest = "exact", shards.Digest.of_file(path)
    scan = accumulator.finish(stat, reader, digest)
    files.write_json(scan_file(directory, index), scan.to_dict())
    seconds = time.perf_counter() - started
    rate = f" ({stat.st_size / 1e6 / seconds:.0f} MB/s)" if seconds >= 1 else ""  # a rate of a long scan
    logging.info(
        "%s: scanned %d rows by the %s reader in %.1f s%s",
        path,
        sum(scan.rows.values()),
        reader,
        seconds,
        rate,
    )
    return scan


class _HeaderUnread(Exception):
    """The header's first record fails: the exact reader reports what the loader would first."""


def _read_header(path: str) -> tuple[int, list[str]]:
    """The header's line and names (a DataError here may be outranked by one further on, which
    the exact reader's first pass finds)."""
    try:
        with csv_table.open_file(path) as handle:
            return csv_table.read_header(path, csv_table.records(path, handle))
    except DataError as error:
        raise _HeaderUnread(str(error)) from None


def _check_structure(path: str) -> tuple[int, list[str]]:
    """The exact reader's first pass, in read_table's order: malformed or unreadable records
    anywhere, then the header, then no data rows, then the first ragged row."""
    with csv_table.open_file(path) as handle:
        records = csv_table.records(path, handle)
        first = next(records, None)
        count, ragged = 0, None
        for line, row in records:
            count += 1
            if ragged is None and first is not None and len(row) != len(first[1]):
                ragged = (line, row)
    header_line, header = csv_table.read_header(path, iter([first] if first else []))
    if not count:
        raise DataError(f"{path}:{header_line}: no data rows after the header")
    if ragged is not None:
        csv_table.check_widths(path, len(header), [ragged[0]], [ragged[1]])
    return header_line, header


def _exact_batches(path: str, accumulator: _Accumulator):
    """Batches parsed by csv_source's rules: DataError at the first bad feature cell of the file,
    else at its first empty target cell (the in-memory loader's order)."""
    j, header = accumulator.target_column, accumulator.header
    features = [c for c in range(len(header)) if c != j]
    empty = None
    with csv_table.open_file(path) as handle:
        records = csv_table.records(path, handle)
        header_line, _ = csv_table.read_header(path, records)
        chunk: list[tuple[int, list[str]]] = []
        for record in records:
            chunk.append(record)
            if len(chunk) == EXACT_BATCH:
                empty = empty or (yield from _exact_batch(path, header, header_line, chunk, j, features))
                chunk = []
        if chunk:
            empty = empty or (yield from _exact_batch(path, header, header_line, chunk, j, features))
    if empty:
        raise DataError(f"{empty}: expected a target value, got an empty cell")


def _exact_batch(path, header, header_line, chunk, j, features):
    """Yields the chunk's rows with a target as one Batch; returns where its first empty target is."""
    table = csv_table.Table(path, header, header_line, [r for _, r in chunk], [line for line, _ in chunk])
    x = csv_source.parse_features(table, features)
    cells = [row[j].strip() for row in table.rows]
    empty = next((table.cell(i, j) for i, cell in enumerate(cells) if not cell), None)
    keep = [i for i, cell in enumerate(cells) if cell]
    cells = [cells[i] for i in keep]
    numeric = np.array([tasks.is_number(cell) for cell in cells], bool)
    value = np.array([float(c) if n else np.nan for c, n in zip(cells, numeric)], np.float64)
    labels = list(dict.fromkeys(cells))
    position = {label: k for k, label in enumerate(labels)}
    index = np.array([position[cell] for cell in cells], np.int32)
    lines = np.array(table.lines, np.int64)[keep]
    yield fastcsv.Batch(
        lines, x[keep].reshape(len(keep), len(features)), cells, numeric, value, labels, index
    )
    return empty


class _Accumulator:
    """The running results of one shard's scan, and its cache writers (temporary names until
    `finish`; removed if the scan fails)."""

    def __init__(self, path, index, key: ScanKey, directory, reader: str, header_line, header):
        table = csv_table.Table(path, header, header_line, [], [])
        self.target_column = csv_source.target_column(table, key.target)
        self.path, self.index, self.key, self.directory = path, index, key, directory
        self.reader, self.started = reader, _clock()
        self.reported = self.started  # when progress was last logged
        self.header, self.header_line = header, header_line
        self.rows = [0, 0, 0]
        self.features, self.target = Moments.empty(len(header) - 1), Moments.empty(1)
        self.abs_max = np.zeros(len(header) - 1)
        self.codes: dict[str, int] | None = {}
        self.label_counts = np.zeros(0, np.int64)  # training rows per code
        self.first_text = self.first_non_integer = self.first_non_finite = None
        os.makedirs(directory, exist_ok=True)
        self.temporary = [files.hidden_sibling(cache_file(directory, s, index), "tmp") for s in SPLITS]
        self.writers = []

    def __enter__(self):
        self.writers = [tf.io.TFRecordWriter(t) for t in self.temporary]
        return self

    def __exit__(self, kind, error, traceback):
        for writer in self.writers:
            writer.close()
        if error is not None:
            for temporary in self.temporary:
                if os.path.exists(temporary):
                    os.remove(temporary)

    def add(self, batch: fastcsv.Batch) -> None:
        """One batch: its target notes, codes, training moments and cached rows."""
        if not len(batch.lines):
            return
        self._note_target(batch)
        code = self._codes(batch)
        split = split_ids(self.key.seed, self.index, batch.lines, self.key.val_split, self.key.test_split)
        train = split == 0
        self._count_labels(code[train])
        self.abs_max = np.maximum(self.abs_max, np.abs(batch.x).max(axis=0, initial=0.0))
        self.features = self.features.merge(Moments.of(batch.x[train]))
        finite = batch.numeric & np.isfinite(batch.value)
        self.target = self.target.merge(Moments.of(batch.value[train & finite][:, None]))
        rows = np.concatenate([batch.x, batch.value[:, None], code[:, None]], axis=1)  # [m, n + 2]
        for s, writer in enumerate(self.writers):
            chosen = rows[split == s]
            if len(chosen):
                writer.write(chosen.tobytes())
                self.rows[s] += len(chosen)
        self._log_progress()

    def _log_progress(self) -> None:
        """Every PROGRESS_SECONDS of a long scan, one line: the rows so far (the exact reader
        takes minutes for a large shard)."""
        now = _clock()
        if now - self.reported >= PROGRESS_SECONDS:
            self.reported = now
            logging.info(
                "%s: %d rows scanned so far by the %s reader (%.0f s)",
                self.path, sum(self.rows), self.reader, now - self.started,
            )  # fmt: skip

    def _note_target(self, batch: fastcsv.Batch) -> None:
        """The first text cell, non-integer and non-finite number (in file order)."""
        finite = np.isfinite(batch.value)
        for name, where in (
            ("first_text", ~batch.numeric),
            ("first_non_finite", batch.numeric & ~finite),
            ("first_non_integer", batch.numeric & finite & (batch.value != np.round(batch.value))),
        ):
            if getattr(self, name) is None and where.any():
                i = int(np.argmax(where))
                setattr(self, name, [int(batch.lines[i]), batch.cell(i)])

    def _codes(self, batch: fastcsv.Batch) -> np.ndarray:
        """Each row's code: its cell's index in the shard's labels (-1 past MAX_LABELS)."""
        if self.codes is None:
            return np.full(len(batch.lines), -1.0)
        local = np.array([self.codes.setdefault(label, len(self.codes)) for label in batch.labels])
        if len(self.codes) > MAX_LABELS:
            self.codes = None
            return np.full(len(batch.lines), -1.0)
        return local[batch.index].astype(np.float64)

    def _count_labels(self, train_codes: np.ndarray) -> None:
        """Adds the training rows' codes (float, -1 once past MAX_LABELS) to label_counts."""
        if self.codes is None:
            return
        counts = np.bincount(train_codes.astype(np.int64), minlength=len(self.codes))
        counts[: len(self.label_counts)] += self.label_counts
        self.label_counts = counts

    def finish(self, stat: os.stat_result, reader: str, digest: shards.Digest) -> ShardScan:
        """Renames the caches into place; the scan.  DataError for a shard without data rows."""
        if not sum(self.rows):
            for temporary in self.temporary:
                os.remove(temporary)
            raise DataError(f"{self.path}:{self.header_line}: no data rows after the header")
        for split, temporary in zip(SPLITS, self.temporary):
            os.replace(temporary, cache_file(self.directory, split, self.index))
        return ShardScan(
            index=self.index,
            path=self.path,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            key=dataclasses.asdict(self.key),
            header=self.header,
            header_line=self.header_line,
            rows=dict(zip(SPLITS, self.rows)),
            features=self.features,
            target=self.target,
            labels=None if self.codes is None else list(self.codes),
            label_counts=None if self.codes is None else [int(c) for c in self.label_counts],
            abs_max=[float(v) for v in self.abs_max],
            first_text=self.first_text,
            first_non_integer=self.first_non_integer,
            first_non_finite=self.first_non_finite,
            reader=reader,
            data_bytes=digest.size,
            sha256=digest.sha256.hexdigest(),
        )
