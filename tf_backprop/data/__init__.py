"""Data: synthetic tasks, CSV loading, task inference, splits and standardization.

`load(source, ...)` returns a `Datasets`: train / validation / test `Split`s of standardized
features x [m, n] and targets y, plus the `Preprocessing` (statistics of the train split only)
that export and predict need to treat new raw inputs the same way.

Targets by task:

* regression: y [m, k] float64, standardized with the train split's mean and std;
* binary:     y [m, 1] float64 in {0, 1} (the id of `class_names[1]` is 1);
* multiclass: y [m] int32 class ids, indices into `class_names`.

Bad input raises `DataError`, whose message is one line naming the file, and the line and
column where they are known.  The package imports TensorFlow (through `losses`, which names
the task each loss takes).

Loading logs one warning line per finding about data that trains but probably not as meant
(`checks`), and records the data's fingerprint in `Preprocessing.fingerprint` (`fingerprint`).

Modules, each importing only those before it: errors → shards → tasks → containers →
fingerprint, checks → moments → synthetic, csv_table → csv_source → fastcsv → scan → splits →
pipeline → streamed → loading.

A CSV source too large for memory streams (`streamed`): one statistics pass (`scan`, parsing
with `fastcsv`) validates every row, splits it by (seed, shard, line), merges the moments and
caches the rows as binary; `pipeline` reads the caches with tf.data.
"""

from tf_backprop.arguments import CSV_PREFIX, csv_path
from tf_backprop.arguments import check_data_arguments as check_arguments
from tf_backprop.data.containers import Datasets, Preprocessing, RawSource, Split, StreamedSplit
from tf_backprop.data.errors import DataError
from tf_backprop.data.loading import load
from tf_backprop.data.streamed import (
    MAX_VALIDATION_BYTES,
    STREAM_ABOVE_BYTES,
    check_source_files,
    load_streamed,
    scan_shards,
    source_shards,
    wants_stream,
)
from tf_backprop.data.synthetic import SYNTHETIC
from tf_backprop.data.tasks import (
    CLASSIFICATION,
    DEFAULT_LOSSES,
    LOSS_TASKS,
    TARGET_KINDS,
    TASKS,
    TargetSummary,
    default_loss,
    infer_task,
)

__all__ = [
    "CLASSIFICATION",
    "CSV_PREFIX",
    "DEFAULT_LOSSES",
    "LOSS_TASKS",
    "SYNTHETIC",
    "TARGET_KINDS",
    "TASKS",
    "MAX_VALIDATION_BYTES",
    "STREAM_ABOVE_BYTES",
    "DataError",
    "Datasets",
    "Preprocessing",
    "RawSource",
    "Split",
    "StreamedSplit",
    "TargetSummary",
    "check_arguments",
    "csv_path",
    "default_loss",
    "infer_task",
    "load",
    "check_source_files",
    "load_streamed",
    "scan_shards",
    "source_shards",
    "wants_stream",
]
