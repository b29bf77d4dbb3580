"""Tests for tf_backprop.data.csv_table: the one CSV reader, shared by training and prediction."""

import hashlib
import io
import itertools
import os
import re
import sys
import types
from unittest import mock

import tensorflow as tf
from csv_files import CountingReader, CsvTestCase

from tf_backprop import data
from tf_backprop.data import csv_table

# 70 good rows after the header, then a Latin-1 "é" on line 72.
_GOOD_LINES = b"x1,x2,y\n" + b"".join(b"%d,%d,%d\n" % (i, i, i) for i in range(70))
_LATE_BAD_BYTE = _GOOD_LINES + b"1,2,caf\xe9\n" + b"1,2,3\n" * 5
_BAD_OFFSET = len(_GOOD_LINES) + len(b"1,2,caf")


def read_all(content: bytes, path: str = "data.csv") -> list[tuple[int, list[str]]]:
    return list(csv_table.records(path, io.BytesIO(content)))


class RecordsTest(CsvTestCase):
    def test_records_start_lines_skip_blank_lines_and_span_quoted_fields(self):
        records = read_all(b'a,b\n\n"x\ny",1\n  \nz,2\n')
        self.assertEqual(records, [(1, ["a", "b"]), (3, ["x\ny", "1"]), (6, ["z", "2"])])

    def test_lone_cr_and_crlf_end_lines_as_in_text_mode(self):
        records = read_all(b'a,b\r1,2\r\n3,"4\r5"\n6,7\r')
        self.assertEqual(records, [(1, ["a", "b"]), (2, ["1", "2"]), (3, ["3", "4\r5"]), (5, ["6", "7"])])

    def test_byte_order_mark_is_dropped(self):
        self.assertEqual(read_all(b"\xef\xbb\xbfa,b\n1,2\n")[0], (1, ["a", "b"]))

    def test_not_utf8_on_a_later_line_names_that_line_and_file_offset(self):
        with self.assertRaises(data.DataError) as caught:
            read_all(_LATE_BAD_BYTE)
        self.assertEqual(
            str(caught.exception),
            f"data.csv:72: not UTF-8 text (invalid continuation byte at byte {_BAD_OFFSET} of the file)",
        )

    def test_offset_after_a_byte_order_mark_counts_the_mark(self):
        with self.assertRaisesRegex(
            data.DataError, r"^data\.csv:2: not UTF-8 text \(invalid start byte at byte 9 of the file\)$"
        ):
            read_all(b"\xef\xbb\xbfa,b\n1,\xff\n")

    def test_malformed_csv_names_the_line(self):
        with self.assertRaisesRegex(data.DataError, r"^data\.csv:3: malformed CSV \("):
            read_all(b'a,b\n1,2\n3,"4\n')

    def test_load_names_the_line_of_a_late_non_utf8_byte(self):
        with open(path := os.path.join(self.create_tempdir().full_path, "late.csv"), "wb") as handle:
            handle.write(_LATE_BAD_BYTE)
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, target="y")
        self.assertEqual(
            str(caught.exception),
            f"{path}:72: not UTF-8 text (invalid continuation byte at byte {_BAD_OFFSET} of the file)",
        )

    def test_reads_only_as_records_are_pulled(self):
        content = b"x1,x2,y\n" + b"1.5,2.5,3.5\n" * 200_000  # 2.4 MB
        counter = CountingReader(content)
        first = list(itertools.islice(csv_table.records("big.csv", io.BufferedReader(counter)), 5))
        self.assertEqual(first[-1], (5, ["1.5", "2.5", "3.5"]))
        self.assertLess(counter.bytes_read, 64 * 1024)
        list(csv_table.records("big.csv", io.BufferedReader(counter := CountingReader(content))))
        self.assertEqual(counter.bytes_read, len(content))


class OpenInputTest(CsvTestCase):
    def test_dash_reads_standard_input(self):
        stdin = types.SimpleNamespace(buffer=io.BytesIO(b"a,b\n1,2\n"))
        with mock.patch.object(sys, "stdin", stdin), csv_table.open_input("-") as handle:
            self.assertEqual(list(csv_table.records("<stdin>", handle)), [(1, ["a", "b"]), (2, ["1", "2"])])

    def test_unreadable_file_is_one_line(self):
        folder = self.create_tempdir().full_path
        for path, reason in (
            (os.path.join(folder, "missing.csv"), "No such file"),
            (folder, "Is a directory"),
        ):
            with self.assertRaisesRegex(
                data.DataError, f"^{re.escape(path)}: cannot read the file \\({reason}"
            ):
                with csv_table.open_input(path) as handle:
                    list(csv_table.records(path, handle))

    def test_read_table_takes_dash_as_a_file_name(self):
        # Training reads csv:- from a file named "-", as it did before predict's reader was shared.
        folder, cwd = self.create_tempdir().full_path, os.getcwd()
        with open(os.path.join(folder, "-"), "w", encoding="utf-8") as handle:
            handle.write("a,b\n1,2\n")
        os.chdir(folder)
        try:
            table = csv_table.read_table("-")
        finally:
            os.chdir(cwd)
        self.assertEqual((table.header, table.rows, table.lines), (["a", "b"], [["1", "2"]], [2]))


class HeaderTest(CsvTestCase):
    def read_header(self, content: bytes) -> tuple[int, list[str]]:
        return csv_table.read_header("data.csv", csv_table.records("data.csv", io.BytesIO(content)))

    def test_header_is_the_first_record_stripped(self):
        self.assertEqual(self.read_header(b"\n a , b \n1,2\n"), (2, ["a", "b"]))

    def test_header_errors(self):
        for content, message in (
            (b"\n\n", "data.csv: empty file; expected a header row, then data rows"),
            (b"a,,b\n", "data.csv:1:2: empty column name in the header"),
            (b'a,b,"a "\n', 'data.csv:1:3 (column "a"): duplicate column name, also column 1'),
        ):
            with self.assertRaises(data.DataError) as caught:
                self.read_header(content)
            self.assertEqual(str(caught.exception), message)

    def test_check_widths_names_the_first_ragged_row(self):
        csv_table.check_widths("data.csv", 2, [2, 3], [["1", "2"], ["3", "4"]])
        with self.assertRaisesRegex(
            data.DataError, r"^data\.csv:5: expected 2 fields as in the header, got 3$"
        ):
            csv_table.check_widths("data.csv", 2, [2, 5, 6], [["1", "2"], ["3", "4", "5"], ["6"]])


if __name__ == "__main__":
    tf.test.main()


class FingerprintTest(CsvTestCase):
    """read_table's size and SHA-256 are those of the file's bytes, BOM and blank lines included."""

    def test_size_and_digest_of_the_bytes(self):
        content = "\ufeffx1,y\r\n1,2\n\n3,4\n"
        path = self.write_csv(content)
        table = csv_table.read_table(path)
        raw = content.encode("utf-8")
        self.assertEqual((table.size, table.sha256), (len(raw), hashlib.sha256(raw).hexdigest()))

    def test_one_changed_byte_changes_the_fingerprint(self):
        def fingerprint(text: str) -> dict:
            path = self.write_csv(text)
            return data.load(f"csv:{path}", target="y", val_split=0, test_split=0).preprocessing.fingerprint

        first, second = fingerprint("x1,y\n1,2\n3,4\n5,6\n"), fingerprint("x1,y\n1,2\n3,4\n5,7\n")
        self.assertEqual((first["kind"], first["rows"]), ("csv", 3))
        self.assertEqual(first["bytes"], second["bytes"])
        self.assertNotEqual(first["sha256"], second["sha256"])
