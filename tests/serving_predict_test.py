"""Tests for tf_backprop.serving.predict.predict_csv: reading its CSV through data.csv_table."""

import gzip
import io
import os
import re
import shutil
import sys
import tempfile
import types
from unittest import mock

import numpy as np
import tensorflow as tf
from csv_files import CountingReader
from predict_exports import make_export

from tf_backprop import data
from tf_backprop.serving import predict
from tf_backprop.serving import served as served_lib

# 70 good rows after the header, then a Latin-1 "é" on line 72, well past the first batch.
_GOOD_LINES = b"x1,x2,x3\n" + b"".join(b"%d,%d,%d\n" % (i, i, i) for i in range(70))
_LATE_BAD_BYTE = _GOOD_LINES + b"1,2,\xe93\n" + b"1,2,3\n" * 5
_BAD_OFFSET = len(_GOOD_LINES) + len(b"1,2,")


class _FirstBatch(Exception):
    """Raised from the model's predict to stop predict_csv after its first batch."""


class PredictCsvReaderTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = tempfile.mkdtemp(prefix="serving_predict_test-")
        cls.served = served_lib.load_export(make_export(cls.folder, "regression"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)
        super().tearDownClass()

    def test_not_utf8_on_a_later_line_names_that_line(self):
        folder = self.create_tempdir().full_path
        source, output = os.path.join(folder, "in.csv"), os.path.join(folder, "out.csv")
        with open(source, "wb") as handle:
            handle.write(_LATE_BAD_BYTE)
        with self.assertRaises(data.DataError) as caught:
            predict.predict_csv(self.served, source, output, batch_size=8)
        self.assertEqual(
            str(caught.exception),
            f"{source}:72: not UTF-8 text (invalid continuation byte at byte {_BAD_OFFSET} of the file)",
        )
        self.assertEqual(os.listdir(folder), ["in.csv"])  # no output, no temporary

    def test_reads_the_input_only_as_batches_are_predicted(self):
        content = b"x1,x2,x3\n" + b"1.5,2.5,3.5\n" * 200_000  # 2.4 MB
        counter = CountingReader(content)
        read_at_first_batch = []

        def first_batch(x):
            read_at_first_batch.append(counter.bytes_read)
            raise _FirstBatch

        stdin = types.SimpleNamespace(buffer=io.BufferedReader(counter))
        output = os.path.join(self.create_tempdir().full_path, "out.csv")
        with mock.patch.object(sys, "stdin", stdin), mock.patch.object(self.served, "predict", first_batch):
            with self.assertRaises(_FirstBatch):
                predict.predict_csv(self.served, "-", output, batch_size=4)
        self.assertLen(read_at_first_batch, 1)
        self.assertLess(read_at_first_batch[0], 64 * 1024)

    def _predicted_rows(self, content: str, count: int) -> list[list[str]]:
        """The output CSV's rows (header first) for an input of `content` with `count` rows."""
        folder = self.create_tempdir().full_path
        source, output = os.path.join(folder, "in.csv"), os.path.join(folder, "out.csv")
        with open(source, "w") as handle:
            handle.write(content)
        self.assertEqual(predict.predict_csv(self.served, source, output, warn=lambda message: None), count)
        with open(output) as handle:
            return [line.split(",") for line in handle.read().splitlines()]

    def test_an_unnamed_column_is_copied_through(self):
        # pandas' to_csv writes its index as a first column with an empty header name.
        rows = self._predicted_rows(",x1,x2,x3\n0,1,2,3\n1,4,5,6\n", 2)
        self.assertEqual(rows[0][:4], ["", "x1", "x2", "x3"])
        self.assertEqual([row[0] for row in rows[1:]], ["0", "1"])

    def test_header_names_are_copied_as_written(self):
        # Matched without their spaces, but copied as the file has them (they were stripped).
        header, row = self._predicted_rows(" id ,x1, x2,x3 \n7,1,2,3\n", 1)
        self.assertEqual(header[:4], [" id ", "x1", " x2", "x3 "])
        self.assertEqual(row[:4], ["7", "1", "2", "3"])

    def test_the_input_file_is_never_the_output_even_with_overwrite(self):
        folder = self.create_tempdir().full_path
        source, link = os.path.join(folder, "in.csv"), os.path.join(folder, "link.csv")
        with open(source, "w") as handle:
            handle.write("x1,x2,x3\n1,2,3\n")
        os.symlink("in.csv", link)
        for output in (source, link):  # by its own name, and through a link to it
            with self.subTest(output=output):
                with self.assertRaisesRegex(predict.OutputError, rf"^{re.escape(output)}: is the input file"):
                    predict.predict_csv(self.served, source, output, overwrite=True)
                with open(source) as handle:
                    self.assertEqual(handle.read(), "x1,x2,x3\n1,2,3\n")

    def test_a_glob_of_shards_gives_one_header_and_the_rows_in_sorted_shard_order(self):
        folder = self.create_tempdir().full_path
        shards = {
            "p2.csv": "x1,x2,x3\n7,8,9\n",
            "p1.csv.gz": "x1,x2,x3\n1,2,3\n\n4,5,6\n",
            "p10.csv": "x1,x2,x3\n0,0,1\n",
        }
        for name, text in shards.items():
            with (gzip.open if name.endswith(".gz") else open)(os.path.join(folder, name), "wt") as handle:
                handle.write(text)
        output = os.path.join(folder, "out.csv")
        self.assertEqual(predict.predict_csv(self.served, os.path.join(folder, "p*.csv*"), output), 4)
        with open(output) as handle:
            rows = [line.split(",") for line in handle.read().splitlines()]
        self.assertEqual(rows[0], ["x1", "x2", "x3", "predicted_y"])
        # Sorted by path: p1.csv.gz, p10.csv, p2.csv.
        self.assertEqual(
            [row[:3] for row in rows[1:]],
            [["1", "2", "3"], ["4", "5", "6"], ["0", "0", "1"], ["7", "8", "9"]],
        )
        expected = self.served.predict(np.array([[1, 2, 3], [4, 5, 6], [0, 0, 1], [7, 8, 9]], np.float32))
        np.testing.assert_allclose(
            [float(row[3]) for row in rows[1:]], expected["predictions"][:, 0], rtol=1e-6
        )

    def test_a_semicolon_file_gets_the_separator_hint(self):
        folder = self.create_tempdir().full_path
        source = os.path.join(folder, "in.csv")
        with open(source, "w") as handle:
            handle.write("x1;x2;x3\n1;2;3\n")
        with self.assertRaisesRegex(
            data.DataError, r'missing column.*\(the file seems to separate fields by ";": only commas do\)$'
        ):
            predict.predict_csv(self.served, source, os.path.join(folder, "out.csv"))

    def test_a_prediction_that_overflows_is_an_error_naming_its_row(self):
        """3e38 in a feature is a float32 number; its prediction was written as inf, exit 0."""
        folder = self.create_tempdir().full_path
        source, output = os.path.join(folder, "in.csv"), os.path.join(folder, "out.csv")
        with open(source, "w") as handle:
            handle.write("x1,x2,x3\n1,2,3\n4,5,6\n7,8,9\n")
        predict_rows = self.served.predict

        def overflowing(x):  # the model's output for the row (4, 5, 6) overflows
            outputs = dict(predict_rows(x))
            outputs["predictions"] = np.where(x[:, :1] == 4, np.float32(np.inf), outputs["predictions"])
            return outputs

        with mock.patch.object(self.served, "predict", overflowing):
            with self.assertRaisesRegex(
                predict.PredictionError,
                rf"^{re.escape(source)}:3: the model's prediction is \[inf\], not finite",
            ):
                predict.predict_csv(self.served, source, output, batch_size=2)
        self.assertEqual(os.listdir(folder), ["in.csv"])  # nothing written, nothing hidden left

    def test_a_later_shard_with_another_header_or_a_bad_cell_is_named_and_nothing_is_written(self):
        folder = self.create_tempdir().full_path
        for name, text in (("a.csv", "x1,x2,x3\n1,2,3\n"), ("b.csv", "x1,x3,x2\n1,2,3\n")):
            with open(os.path.join(folder, name), "w") as handle:
                handle.write(text)
        output = os.path.join(folder, "out.csv")
        with self.assertRaises(data.DataError) as caught:
            predict.predict_csv(self.served, os.path.join(folder, "*.csv"), output)
        self.assertEqual(
            str(caught.exception),
            f'{os.path.join(folder, "b.csv")}:1: header "x1", "x3", "x2" differs from '
            f'{os.path.join(folder, "a.csv")}\'s ("x1", "x2", "x3"); every shard needs the same columns in the same order',
        )
        with open(os.path.join(folder, "b.csv"), "w") as handle:
            handle.write("x1,x2,x3\n1,2,3\n4,oops,6\n")
        with self.assertRaises(data.DataError) as caught:
            predict.predict_csv(self.served, os.path.join(folder, "*.csv"), output)
        self.assertEqual(
            str(caught.exception),
            f'{os.path.join(folder, "b.csv")}:3:2 (column "x2"): expected a number, got "oops"',
        )
        self.assertEqual(sorted(os.listdir(folder)), ["a.csv", "b.csv"])  # no output, no temporary


if __name__ == "__main__":
    tf.test.main()
