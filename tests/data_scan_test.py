"""Tests for the streaming statistics pass: data.moments, data.fastcsv, data.scan and data.streamed.

The pass must read a CSV exactly as the in-memory loader does — the same numbers, classes and
one-line errors — whether TensorFlow's fast parser or the exact Python reader reads a shard.
"""

import gzip
import itertools
import json
import os
import re
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from csv_files import CsvTestCase

from tf_backprop import data
from tf_backprop.data import csv_source, csv_table, fastcsv, pipeline, scan, streamed
from tf_backprop.data.moments import Moments

_HEADER = "x1,x2,y\n"
_ALL_TRAIN = {"val_split": 0.0, "test_split": 0.0}


class StreamTestCase(CsvTestCase):
    """Writes shards and runs the statistics pass and its merge on them."""

    def write_shards(self, texts: dict[str, str | bytes]) -> str:
        """Writes name -> content into a fresh folder (gzip for .gz names); the folder."""
        folder = self.create_tempdir().full_path
        for name, content in texts.items():
            raw = content.encode("utf-8") if isinstance(content, str) else content
            with (gzip.open if name.endswith(".gz") else open)(os.path.join(folder, name), "wb") as handle:
                handle.write(raw)
        return folder

    def streamed(self, path: str, directory: str | None = None, **kwargs) -> data.Datasets:
        """Scans every shard of csv:path, then merges: data.load's arguments."""
        directory = directory or self.create_tempdir().full_path
        args = {"target": "y", "task": "auto", "loss": None, "val_split": 0.1, "test_split": 0.1, **kwargs}
        standardize = args.pop("standardize", True)
        seed = args.pop("seed", 0)
        data.scan_shards(
            "csv:" + path,
            target=args["target"],
            val_split=args["val_split"],
            test_split=args["test_split"],
            seed=seed,
            directory=directory,
        )
        return data.load_streamed("csv:" + path, standardize=standardize, directory=directory, **args)

    def streamed_error(self, path: str, **kwargs) -> str:
        with self.assertRaises(data.DataError) as caught:
            self.streamed(path, **kwargs)
        return str(caught.exception)

    def loaded_error(self, path: str, **kwargs) -> str:
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, **{"target": "y", **kwargs})
        return str(caught.exception)


def _cached_rows(path: str, n: int) -> np.ndarray:
    """A cache file's rows as the statistics pass wrote them, [m, n + 2] float64."""
    records = [np.frombuffer(r.numpy(), np.float64) for r in tf.data.TFRecordDataset(path)]
    return np.concatenate(records).reshape(-1, n + 2)


class MomentsTest(tf.test.TestCase):
    def test_merged_batches_equal_the_moments_of_all_rows(self):
        values = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4))
        merged = Moments.empty(4)
        for start in range(0, 1000, 137):
            merged = merged.merge(Moments.of(values[start : start + 137]))
        self.assertEqual(merged.count, 1000)
        np.testing.assert_allclose(merged.mean, values.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(merged.std, values.std(axis=0), rtol=1e-12)
        again = Moments.from_dict(json.loads(json.dumps(merged.to_dict())))  # exact round trip
        self.assertEqual(again.count, merged.count)
        np.testing.assert_array_equal(again.mean, merged.mean)
        np.testing.assert_array_equal(again.m2, merged.m2)

    def test_stable_where_the_sum_of_squares_cancels(self):
        # 1e9 + N(0, 0.01): Σx²/n − mean² loses every digit of the variance in float64, and a
        # running mean stored near 1e9 (rounded to 1e-7) would cost ~1e-7 of it per merge.
        values = 1e9 + 0.01 * np.random.default_rng(1).standard_normal((10_000, 1))
        merged = Moments.empty(1)
        for batch in np.array_split(values, 1000):
            merged = merged.merge(Moments.of(batch))
        exact = np.sqrt(
            np.mean(np.square(values.astype(np.longdouble) - values.astype(np.longdouble).mean()))
        )
        np.testing.assert_allclose(merged.std, exact, rtol=1e-12)
        np.testing.assert_allclose(values.std(axis=0), exact, rtol=1e-10)  # NumPy's two passes
        naive = np.sqrt(np.maximum((values**2).mean(axis=0) - values.mean(axis=0) ** 2, 0))
        self.assertFalse(np.allclose(naive, exact, rtol=1e-3, atol=0))  # what the check catches
        unshifted = Moments(0, np.zeros(1), np.zeros(1), np.zeros(1))
        for batch in np.array_split(values, 1000):  # the merge without a shift: off by ~1e-7
            b = Moments.of(batch)
            b = Moments(b.count, np.zeros(1), b.mean, b.m2)
            unshifted = unshifted.merge(b)
        self.assertFalse(np.allclose(unshifted.std, exact, rtol=1e-9, atol=0))


class SplitIdsTest(tf.test.TestCase):
    def test_a_rows_split_depends_on_seed_shard_and_line_only(self):
        lines = np.arange(2, 100_002)
        ids = scan.split_ids(5, 3, lines, 0.1, 0.2)
        order = np.random.default_rng(0).permutation(len(lines))
        np.testing.assert_array_equal(scan.split_ids(5, 3, lines[order], 0.1, 0.2), ids[order])
        counts = np.bincount(ids, minlength=3) / len(lines)
        np.testing.assert_allclose(counts, [0.7, 0.1, 0.2], atol=0.005)
        for other in (scan.split_ids(6, 3, lines, 0.1, 0.2), scan.split_ids(5, 4, lines, 0.1, 0.2)):
            self.assertGreater(np.mean(other != ids), 0.3)

    def test_larger_fractions_only_move_rows_out_of_train(self):
        lines = np.arange(1, 10_001)
        small, large = scan.split_ids(0, 0, lines, 0.1, 0.1), scan.split_ids(0, 0, lines, 0.2, 0.1)
        np.testing.assert_array_equal(large[small == 2], 2)  # test rows stay test
        self.assertTrue(np.all(small[large == 0] == 0))


class ScanValuesTest(StreamTestCase, parameterized.TestCase):
    """The cached rows are the numbers Python's float() reads, bit for bit."""

    def assert_same_as_in_memory(self, text: str, expected_reader: str):
        folder = self.write_shards({"data.csv": text})
        path = os.path.join(folder, "data.csv")
        directory = self.create_tempdir().full_path
        got = self.streamed(path, directory, standardize=False, **_ALL_TRAIN)
        self.assertEqual(scan.read_scan(directory, 0).reader, expected_reader)
        table = csv_table.read_table(path)
        j = table.header.index("y")
        x = csv_source.parse_features(table, [c for c in range(len(table.header)) if c != j])
        y = np.array([float(row[j]) for row in table.rows])
        cached = _cached_rows(got.train.files[0], x.shape[1])  # [m, n + 2]: x, y, code
        np.testing.assert_array_equal(cached[:, :-2], x)
        np.testing.assert_array_equal(cached[:, -2], y)
        # TensorFlow's arithmetic flushes subnormal numbers to zero; the rest passes through.
        rows = pipeline.read_split(got.train, got.preprocessing)
        normal = np.abs(x) >= np.finfo(np.float64).tiny
        np.testing.assert_array_equal(rows.x[normal], x[normal])

    def test_number_formats_by_the_fast_reader(self):
        cells = ["1e-5", "-.5", "+3", "  7 ", '"2.5"', "1E+300", "4.9406564584124654e-324", "0.1"]
        cells += ["123456789.123456789", "-0", "5.", "0001.5"]
        rows = [f"{cell},{i * 0.1!r},{i}" for i, cell in enumerate(cells)]
        self.assert_same_as_in_memory(_HEADER + "\n".join(rows) + "\n\n  \n", "fast")

    def test_crlf_and_a_last_line_without_newline_by_the_fast_reader(self):
        self.assert_same_as_in_memory("x1,x2,y\r\n1,2,3\r\n4,5,6\r\n7,8,9", "fast")

    @parameterized.named_parameters(
        ("lone_carriage_return", "x1,x2,y\r1,2,3\r4,5,6\r"),
        ("digits_with_underscores", "x1,x2,y\n1_000,2,3\n4,5,6\n"),
        ("unicode_space_before_a_number", "x1,x2,y\n\u00a01.5,2,3\n4,5,6\n"),
    )
    def test_what_the_fast_reader_cannot_take_the_exact_reader_reads(self, text):
        self.assert_same_as_in_memory(text, "exact")

    def assert_same_as_in_memory_with_labels(self, text: str, expected_reader: str):
        folder = self.write_shards({"data.csv": text})
        path = os.path.join(folder, "data.csv")
        directory = self.create_tempdir().full_path
        got = self.streamed(path, directory, standardize=False, **_ALL_TRAIN)
        self.assertEqual(scan.read_scan(directory, 0).reader, expected_reader)
        loaded = data.load("csv:" + path, target="y", standardize=False, **_ALL_TRAIN)
        self.assertEqual(got.preprocessing.to_dict(), loaded.preprocessing.to_dict())

    def test_a_label_spanning_lines_is_read_by_the_exact_reader(self):
        self.assert_same_as_in_memory_with_labels('x,y\n1,"a\nb"\n2,c\n3,c\n', "exact")

    def test_a_hexadecimal_looking_label_is_read_by_the_exact_reader(self):
        self.assert_same_as_in_memory_with_labels("x,y\n1,0x1F\n2,b\n3,0x1F\n", "exact")

    def test_integer_labels_are_named_exactly_at_any_size(self):
        # float64 holds 12345678901234567890 and ...891 as one number: they stay two classes,
        # named as written; 1, 01, 1.0 and 1e0 are one class "1"; classes sort numerically.
        cells = ["12345678901234567890", "12345678901234567891", "3", "1", "01", "1.0", "1e0", "10"]
        text = "x,y\n" + "".join(f"{i},{cell}\n" for i, cell in enumerate(cells * 2))
        folder = self.write_shards({"data.csv": text})
        path = os.path.join(folder, "data.csv")
        names = ["1", "3", "10", "12345678901234567890", "12345678901234567891"]
        ids = [3, 4, 1, 0, 0, 0, 0, 2] * 2
        loaded = data.load("csv:" + path, target="y", task="multiclass", **_ALL_TRAIN)
        got = self.streamed(path, task="multiclass", **_ALL_TRAIN)
        for datasets in (loaded, got):
            self.assertEqual(datasets.preprocessing.class_names, names)
        order = np.argsort(loaded.train.x[:, 0], kind="stable")  # rows back in file order
        np.testing.assert_array_equal(loaded.train.y[order], ids)
        streamed_split = pipeline.read_split(got.train, got.preprocessing)
        order = np.argsort(streamed_split.x[:, 0], kind="stable")
        np.testing.assert_array_equal(streamed_split.y[order], ids)

    @parameterized.named_parameters(("fast", "b", "fast"), ("exact", '"a\nb"', "exact"))
    def test_label_counts_and_maxima_add_up_over_batches(self, odd_label: str, reader: str):
        # Many small batches (by either reader): the counts and maxima are the whole file's.
        labels = ["c", "d", odd_label, "c", "e"]
        rows = [(60 - i, (-1) ** i * 0.5 * i, labels[i % 5]) for i in range(60)]  # maxima: first, last
        folder = self.write_shards({"data.csv": _HEADER + "".join(f"{a},{b},{c}\n" for a, b, c in rows)})
        directory = self.create_tempdir().full_path
        with mock.patch.object(fastcsv, "CHUNK_BYTES", 40), mock.patch.object(scan, "EXACT_BATCH", 7):
            self.streamed(os.path.join(folder, "data.csv"), directory, seed=3)
        saved = scan.read_scan(directory, 0)
        self.assertEqual(saved.reader, reader)
        self.assertEqual(saved.abs_max, [60.0, 29.5])
        lines = 2 + np.cumsum([0] + [label.count("\n") + 1 for _, _, label in rows[:-1]])  # each row's first
        train = scan.split_ids(3, 0, lines, 0.1, 0.1) == 0
        by_label = {label: 0 for label in saved.labels}
        for (_, _, label), trains in zip(rows, train):
            by_label[label.strip('"')] += int(trains)
        self.assertEqual(dict(zip(saved.labels, saved.label_counts)), by_label)
        self.assertEqual(sum(saved.label_counts), saved.rows["train"])


class ScanErrorTest(StreamTestCase, parameterized.TestCase):
    """Bad data: the streamed pass raises the in-memory loader's message, word for word."""

    @parameterized.named_parameters(
        ("empty_file", "", {}),
        ("blank_lines_only", "\n\n  \n", {}),
        ("header_only", _HEADER, {}),
        ("non_numeric_feature", _HEADER + "1,2,3\n4,abc,6\n", {}),
        ("empty_feature_cell", _HEADER + "1,,3\n", {}),
        ("nan_feature", _HEADER + "1,2,3\nnan,2,3\n", {}),
        ("inf_feature", _HEADER + "1,-inf,3\n", {}),
        ("hex_feature", _HEADER + "1,0x10,3\n", {}),
        ("nan_target", _HEADER + "1,2,3\n1,2,NaN\n", {}),
        ("inf_target", _HEADER + "1,2,inf\n", {}),
        ("empty_target_cell", _HEADER + "1,2,3\n1,2,\n", {}),
        ("empty_target_before_a_bad_feature", _HEADER + "1,2,\n1,q,3\n", {}),
        ("ragged_short", _HEADER + "1,2,3\n4,5\n", {}),
        ("ragged_long", _HEADER + "1,2,3,4\n", {}),
        ("malformed_after_a_bad_cell", _HEADER + '1,x,3\n1,2,"3\n', {}),
        ("unknown_target", _HEADER + "1,2,3\n", {"target": "label"}),
        ("missing_target", _HEADER + "1,2,3\n", {"target": None}),
        ("duplicate_header", "x1,x1,y\n1,2,3\n", {}),
        ("empty_header_name", "x1,,y\n1,2,3\n", {}),
        ("target_only", "y\n1\n2\n", {}),
        ("single_class", "x1,y\n1,a\n2,a\n", {}),
        ("crlf_bad_cell", "x1,x2,y\r\n1,2,3\r\n4,q,6\r\n", {}),
        ("not_utf8", b"x1,y\n1,2\n1,caf\xe9\n", {}),
        ("line_after_multiline_field", _HEADER + '1,2,"a\nb"\n3,zz,c\n', {}),
        ("text_target_with_mse", "x1,y\n1,2\n2,cat\n", {"loss": "mse"}),
        ("real_target_with_bce", "x1,y\n1,0\n2,0.5\n", {"loss": "binary_crossentropy"}),
        ("binary_with_three_classes", "x1,y\n1,a\n2,b\n3,c\n", {"task": "binary"}),
        ("task_conflicts_with_loss", "x1,y\n1,2\n", {"task": "binary", "loss": "mse"}),
        ("feature_spread_overflows", _HEADER + "1,1e200,3\n4,-1e200,6\n", {}),
        ("target_spread_overflows", "x1,y\n1,1e200\n2,-1e200\n3,5\n", {}),
        ("spread_across_the_float_range", _HEADER + "1,1.7e308,3\n4,-1.7e308,6\n", {}),
    )
    def test_same_message_as_the_in_memory_loader(self, text, kwargs):
        folder = self.write_shards({"bad.csv": text})
        path = os.path.join(folder, "bad.csv")
        kwargs = {**_ALL_TRAIN, **kwargs}
        expected = self.loaded_error(path, **kwargs)
        self.assertEqual(self.streamed_error(path, **kwargs), expected)

    @parameterized.named_parameters(
        ("feature", _HEADER + "1,1e200,3\n4,-1e200,6\n", "x2"),
        ("target", "x1,y\n1,1e200\n2,-1e200\n3,5\n", "y"),
    )
    def test_a_spread_that_overflows_is_an_error_not_a_column_of_zeros(self, text, column):
        # Standardizing by an infinite std would make the column all zeros, silently.
        path = os.path.join(self.write_shards({"big.csv": text}), "big.csv")
        self.assertEqual(
            self.loaded_error(path, **_ALL_TRAIN),
            f'{path} (column "{column}"): its standard deviation overflows float64 (values too large to '
            "standardize); rescale the column, e.g. divide it by a power of ten",
        )
        loaded = data.load("csv:" + path, target="y", standardize=False, **_ALL_TRAIN)
        self.assertEqual(loaded.train.x.shape[0], len(text.splitlines()) - 1)  # without standardizing

    def test_values_near_the_float_limit_standardize_as_in_the_streamed_pass(self):
        # NumPy's mean of 1.5e308 twice overflows; relative to a row it is 1.5e308, spread 0.
        path = os.path.join(
            self.write_shards({"near.csv": _HEADER + "1.5e308,1,3\n1.5e308,2,4\n"}), "near.csv"
        )
        loaded = data.load("csv:" + path, target="y", **_ALL_TRAIN).preprocessing
        streamed = self.streamed(path, **_ALL_TRAIN).preprocessing
        self.assertEqual(loaded.feature_mean, [1.5e308, 1.5])
        self.assertEqual(loaded.feature_std[0], 1.0)  # a constant column
        self.assertEqual(streamed.to_dict(), loaded.to_dict())

    def test_a_later_shard_is_named_with_its_own_line_and_column(self):
        folder = self.write_shards({"a.csv": _HEADER + "1,2,3\n", "b.csv.gz": _HEADER + "1,2,3\n\n4,x,6\n"})
        pattern = os.path.join(folder, "*")
        message = self.streamed_error(pattern, **_ALL_TRAIN)
        self.assertEqual(message, self.loaded_error(pattern, **_ALL_TRAIN))
        self.assertStartsWith(message, f'{os.path.join(folder, "b.csv.gz")}:4:2 (column "x2")')

    def test_a_shard_with_another_header_is_named(self):
        folder = self.write_shards({"a.csv": _HEADER + "1,2,3\n", "b.csv": "x2,x1,y\n1,2,3\n"})
        pattern = os.path.join(folder, "*.csv")
        self.assertEqual(self.streamed_error(pattern, **_ALL_TRAIN), self.loaded_error(pattern, **_ALL_TRAIN))

    def test_a_split_the_hash_left_empty_is_named(self):
        folder = self.write_shards({"a.csv": _HEADER + "1,2,3\n4,5,6\n"})
        message = self.streamed_error(os.path.join(folder, "a.csv"), val_split=0.0, test_split=0.01)
        self.assertRegex(
            message,
            r"a\.csv: the test split drew none of the 2 rows \(test_split=0\.01 is each row's chance, "
            r"by a hash of --seed, shard and line\); raise --test_split or try another --seed$",
        )

    def test_a_validation_split_too_large_for_memory_is_refused(self):
        folder = self.write_shards({"a.csv": _HEADER + "".join(f"{i},{i},{i}\n" for i in range(200))})
        with mock.patch.object(streamed, "MAX_VALIDATION_BYTES", 64):
            message = self.streamed_error(os.path.join(folder, "a.csv"), val_split=0.5, test_split=0.0)
        self.assertRegex(message, r"the validation split's \d+ rows would take .* lower --val_split$")

    def test_more_distinct_labels_than_a_scan_keeps_cannot_be_classes(self):
        folder = self.write_shards({"a.csv": "x,y\n" + "".join(f"{i},c{i % 5}\n" for i in range(20))})
        with mock.patch.object(scan, "MAX_LABELS", 3):
            message = self.streamed_error(os.path.join(folder, "a.csv"), **_ALL_TRAIN)
        self.assertRegex(message, r'a\.csv \(column "y"\): more than 3 distinct target values')
        # A real-valued target needs no classes: regression is fine.
        folder = self.write_shards({"b.csv": "x,y\n" + "".join(f"{i},{i / 7}\n" for i in range(20))})
        with mock.patch.object(scan, "MAX_LABELS", 3):
            self.assertEqual(self.streamed(os.path.join(folder, "b.csv"), **_ALL_TRAIN).task, "regression")


class MergeTest(StreamTestCase):
    def test_statistics_are_those_of_the_training_rows_whoever_scanned_which_shard(self):
        rng = np.random.default_rng(0)
        texts = {}
        for s in range(3):
            x = 1e9 + rng.standard_normal((400, 2)) * [1.0, 1e-2]
            y = 5.0 + rng.standard_normal(400)
            texts[f"s{s}.csv"] = _HEADER + "".join(
                f"{a!r},{b!r},{c!r}\n" for (a, b), c in zip(x.tolist(), y.tolist())
            )
        folder = self.write_shards(texts)
        pattern = os.path.join(folder, "s*.csv")
        got = self.streamed(pattern, seed=3)
        raw = self.streamed(pattern, seed=3, standardize=False)
        train = pipeline.read_split(raw.train, raw.preprocessing)
        self.assertLen(train, len(got.train))
        prep = got.preprocessing
        for column, mean, std in (
            (train.x, prep.feature_mean, prep.feature_std),
            (train.y, prep.target_mean, prep.target_std),
        ):
            exact = column.astype(np.longdouble)  # (NumPy's float64 std along axis 0 is off by ~1e-8 here)
            np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-15)
            np.testing.assert_allclose(
                std, np.sqrt(np.square(exact - exact.mean(axis=0)).mean(axis=0)), rtol=1e-12
            )
        # Scanned shard by shard into another folder, in reverse order: the same bits.
        directory = self.create_tempdir().full_path
        for index in (2, 0, 1):
            data.scan_shards(
                "csv:" + pattern,
                target="y",
                val_split=0.1,
                test_split=0.1,
                seed=3,
                directory=directory,
                indices=[index],
            )
        again = data.load_streamed(
            "csv:" + pattern,
            target="y",
            task="auto",
            loss=None,
            val_split=0.1,
            test_split=0.1,
            standardize=True,
            directory=directory,
        )
        self.assertEqual(again.preprocessing.to_dict(), prep.to_dict())
        np.testing.assert_array_equal(again.validation.x, got.validation.x)

    def test_classes_over_shards_with_their_own_labels(self):
        labels = ["dog", "cat", "bird", "cat", "eel", "dog", "ant", "cat", "dog"]
        rows = [f"{i},{label}\n" for i, label in enumerate(labels)]
        folder = self.write_shards(
            {"a.csv": "idx,y\n" + "".join(rows[:4]), "b.csv": "idx,y\n" + "".join(rows[4:])}
        )
        got = self.streamed(os.path.join(folder, "*.csv"), standardize=False, **_ALL_TRAIN)
        self.assertEqual(got.preprocessing.class_names, ["ant", "bird", "cat", "dog", "eel"])
        split = pipeline.read_split(got.train, got.preprocessing)
        expected = [got.preprocessing.class_names.index(labels[int(i)]) for i in split.x[:, 0]]
        np.testing.assert_array_equal(split.y, expected)
        self.assertEqual(split.y.dtype, np.int32)

    def test_whole_number_classes_sort_numerically_and_binary_ids(self):
        folder = self.write_shards({"a.csv": "idx,y\n0,10\n1,2\n", "b.csv": "idx,y\n2,10.0\n3,2\n4,10\n"})
        got = self.streamed(
            os.path.join(folder, "*.csv"), loss="binary_crossentropy", standardize=False, **_ALL_TRAIN
        )
        self.assertEqual((got.task, got.preprocessing.class_names), ("binary", ["2", "10"]))
        split = pipeline.read_split(got.train, got.preprocessing)
        np.testing.assert_array_equal(split.y[:, 0], [1.0, 0.0, 1.0, 0.0, 1.0])

    def test_a_second_pass_reads_nothing_unless_the_file_changed(self):
        folder = self.write_shards({"a.csv": _HEADER + "".join(f"{i},{i},{i}\n" for i in range(100, 200))})
        path, directory = os.path.join(folder, "a.csv"), self.create_tempdir().full_path
        first = self.streamed(path, directory, **_ALL_TRAIN).preprocessing.to_dict()
        stat = os.stat(path)
        with open(path, "w") as handle:  # other numbers, same size and modification time
            handle.write(_HEADER + "".join(f"{i},{i},{i}\n" for i in range(300, 400)))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with self.assertLogs("absl", "INFO") as logs:
            self.assertEqual(self.streamed(path, directory, **_ALL_TRAIN).preprocessing.to_dict(), first)
        self.assertIn("scanned before (100 rows), not read again", "\n".join(logs.output))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
        self.assertNotEqual(self.streamed(path, directory, **_ALL_TRAIN).preprocessing.to_dict(), first)

    def test_a_scan_of_an_older_format_is_read_again(self):
        # A run folder from before format 3 (no label counts, no maxima): scanned again, once.
        folder = self.write_shards({"a.csv": _HEADER + "".join(f"{i},{-i},{i % 2}\n" for i in range(50))})
        path, directory = os.path.join(folder, "a.csv"), self.create_tempdir().full_path
        first = self.streamed(path, directory, **_ALL_TRAIN).preprocessing.to_dict()
        with open(scan.scan_file(directory, 0), encoding="utf-8") as handle:
            saved = json.load(handle)
        old = {k: v for k, v in saved.items() if k not in ("label_counts", "abs_max")}
        with open(scan.scan_file(directory, 0), "w", encoding="utf-8") as handle:
            json.dump({**old, "format": 2}, handle)
        with self.assertLogs("absl", "INFO") as logs:
            self.assertEqual(self.streamed(path, directory, **_ALL_TRAIN).preprocessing.to_dict(), first)
        self.assertNotIn("not read again", "\n".join(logs.output))
        self.assertEqual(scan.read_scan(directory, 0).abs_max, [49.0, 49.0])

    def test_a_long_scan_logs_its_progress(self):
        # A clock that advances 4 s at every reading: a progress line every third batch or so.
        ticks = itertools.count(0.0, 4.0)
        folder = self.write_shards({"data.csv": _HEADER + "".join(f"{i},{i},{i}\n" for i in range(300))})
        path = os.path.join(folder, "data.csv")
        with (
            mock.patch.object(scan, "_clock", lambda: next(ticks)),
            mock.patch.object(fastcsv, "CHUNK_BYTES", 200),
            self.assertLogs("absl", "INFO") as logs,
        ):
            self.streamed(path, **_ALL_TRAIN)
        found = re.findall(
            r"data\.csv: (\d+) rows scanned so far by the fast reader \((\d+) s\)", "\n".join(logs.output)
        )
        rows, seconds = [int(r) for r, _ in found], [int(t) for _, t in found]
        self.assertGreater(len(rows), 3)
        self.assertEqual(rows, sorted(set(rows)))  # growing
        self.assertLess(rows[-1], 300)
        self.assertTrue(
            all(later - earlier >= scan.PROGRESS_SECONDS for earlier, later in zip(seconds, seconds[1:]))
        )
        with self.assertLogs("absl", "INFO") as logs:  # a real, short scan: no progress lines
            self.streamed(path, **_ALL_TRAIN)
        self.assertNotIn("scanned so far", "\n".join(logs.output))


class WantsStreamTest(StreamTestCase):
    def test_the_flag_decides_else_the_size_of_the_files(self):
        folder = self.write_shards(
            {"a.csv": _HEADER + "1,2,3\n" * 100, "b.csv.gz": _HEADER + "1,2,3\n" * 100}
        )
        pattern = "csv:" + os.path.join(folder, "*")
        self.assertFalse(data.wants_stream(pattern, None))
        self.assertTrue(data.wants_stream(pattern, True))
        with mock.patch.object(streamed, "STREAM_ABOVE_BYTES", 2 * len(_HEADER) + 100 * 6 - 1):
            self.assertTrue(data.wants_stream(pattern, None))
            self.assertFalse(data.wants_stream(pattern, False))
        self.assertFalse(data.wants_stream("regression", None))
        with self.assertRaisesRegex(ValueError, r"^stream: only CSV sources stream"):
            data.wants_stream("xor", True)


if __name__ == "__main__":
    tf.test.main()
