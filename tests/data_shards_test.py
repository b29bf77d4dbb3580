"""Tests for tf_backprop.data.shards and sharded, gzip-compressed CSV sources read in memory."""

import gzip
import os
import random

import numpy as np
import tensorflow as tf
from csv_files import CsvTestCase

from tf_backprop import data
from tf_backprop.data import csv_table, shards


class ShardedCsvTestCase(CsvTestCase):
    def write_shards(self, texts: dict[str, str]) -> str:
        """Writes each name -> text into one fresh folder (gzip for .gz names); the folder."""
        folder = self.create_tempdir().full_path
        for name, text in texts.items():
            path = os.path.join(folder, name)
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "wt", encoding="utf-8", newline="") as handle:
                handle.write(text)
        return folder


class ExpandTest(ShardedCsvTestCase):
    def test_a_pattern_names_its_files_in_sorted_order(self):
        folder = self.write_shards({"b.csv": "x\n", "a.csv.gz": "x\n", "c.txt": "x\n", "a.csv": "x\n"})
        os.mkdir(os.path.join(folder, "d.csv"))  # a folder is not a shard
        pattern = os.path.join(folder, "*.csv*")
        self.assertEqual(
            shards.expand(pattern), [os.path.join(folder, n) for n in ("a.csv", "a.csv.gz", "b.csv")]
        )

    def test_a_plain_path_is_itself_even_when_missing_or_holding_glob_characters(self):
        self.assertEqual(shards.expand("missing.csv"), ["missing.csv"])
        folder = self.write_shards({"odd[1].csv": "x\n"})
        path = os.path.join(folder, "odd[1].csv")
        self.assertFalse(shards.is_pattern(path))
        self.assertEqual(shards.expand(path), [path])

    def test_a_pattern_matching_nothing_is_one_line(self):
        pattern = os.path.join(self.create_tempdir().full_path, "*.csv")
        with self.assertRaises(data.DataError) as caught:
            shards.expand(pattern)
        self.assertEqual(str(caught.exception), f"{pattern}: no file matches the pattern")

    def test_data_size_of_plain_and_gzip_files(self):
        text = "x1,y\n" + "1.25,2\n" * 1000
        folder = self.write_shards({"a.csv": text, "a.csv.gz": text})
        for name in ("a.csv", "a.csv.gz"):
            self.assertEqual(shards.data_size(os.path.join(folder, name)), len(text))
        self.assertLess(os.path.getsize(os.path.join(folder, "a.csv.gz")), len(text) // 10)
        self.assertEqual(shards.data_size(os.path.join(folder, "missing.csv")), 0)

    def test_a_gzip_trailer_that_cannot_hold_the_size_is_not_trusted(self):
        # cat a.gz b.gz: the trailer is the last member's, 8 bytes, below the compressed size.
        rng = random.Random(0)
        text = "x1,y\n" + "".join(f"{rng.random()},{rng.random()}\n" for _ in range(2000))
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "two.csv.gz")
        with open(path, "wb") as handle:
            handle.write(gzip.compress(text.encode()) + gzip.compress(b"0.5,1\n"))
        compressed = os.path.getsize(path)
        self.assertEqual(shards.data_size(path), shards.GZIP_CSV_RATIO * compressed)
        with gzip.open(path, "rt") as handle:
            self.assertEqual(len(handle.read()), len(text) + 6)  # still read whole


class ReadSourceTest(ShardedCsvTestCase):
    def test_shards_are_read_in_sorted_order_each_row_naming_its_file(self):
        folder = self.write_shards(
            {"p2.csv": "x,y\n5,6\n", "p1.csv.gz": "x,y\n1,2\n\n3,4\n", "p3.csv": "x , y\n7,8\n"}
        )
        table = csv_table.read_source(os.path.join(folder, "p*"))
        self.assertEqual(table.header, ["x", "y"])
        self.assertEqual(table.rows, [["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"]])
        self.assertEqual(table.lines, [2, 4, 2, 2])
        names = [os.path.basename(f) for f in table.files]
        self.assertEqual(names, ["p1.csv.gz", "p1.csv.gz", "p2.csv", "p3.csv"])
        self.assertEqual(table.cell(2, 1), f'{os.path.join(folder, "p2.csv")}:2:2 (column "y")')
        self.assertEqual(table.column_where(0), f'{os.path.join(folder, "p*")} (column "x")')

    def test_a_header_differing_from_the_first_shards_names_that_shard(self):
        folder = self.write_shards({"a.csv": "x,y\n1,2\n", "b.csv": "\ny,x\n3,4\n"})
        with self.assertRaises(data.DataError) as caught:
            csv_table.read_source(os.path.join(folder, "*.csv"))
        first, second = os.path.join(folder, "a.csv"), os.path.join(folder, "b.csv")
        self.assert_one_line_error(
            caught.exception, f'{second}:2: header "y", "x" differs from {first}\'s ("x", "y")'
        )

    def test_a_damaged_gzip_file_is_one_line(self):
        folder = self.write_shards({"a.csv.gz": "x,y\n" + "1,2\n" * 5000})
        path = os.path.join(folder, "a.csv.gz")
        with open(path, "rb") as handle:
            content = handle.read()
        for damaged, reason in (
            (content[: len(content) // 2], "Compressed file ended"),
            (b"x,y\n1,2\n", "Not a gzipped file"),
        ):
            with open(path, "wb") as handle:
                handle.write(damaged)
            with self.assertRaises(data.DataError) as caught:
                csv_table.read_source(path)
            self.assert_one_line_error(caught.exception, f"{path}: cannot read the file (", reason)


class LoadShardsTest(ShardedCsvTestCase):
    def test_load_of_a_pattern_equals_load_of_the_concatenated_file(self):
        rows = [f"{i},{i % 7 * 0.5},{(i * 37) % 11}" for i in range(60)]
        parts = {"s0.csv": rows[:25], "s1.csv.gz": rows[25:40], "s2.csv": rows[40:]}
        folder = self.write_shards({name: "a,b,y\n" + "\n".join(part) + "\n" for name, part in parts.items()})
        whole = self.write_csv("a,b,y\n" + "\n".join(rows) + "\n")
        sharded = data.load("csv:" + os.path.join(folder, "s*"), target="y", seed=3)
        single = data.load("csv:" + whole, target="y", seed=3)
        # The same statistics; the fingerprints differ (shards: the digest of their digests).
        sharded_prep, single_prep = sharded.preprocessing.to_dict(), single.preprocessing.to_dict()
        prints = sharded_prep.pop("fingerprint"), single_prep.pop("fingerprint")
        self.assertEqual(sharded_prep, single_prep)
        self.assertEqual(prints[0]["rows"], prints[1]["rows"])
        self.assertNotEqual(prints[0]["sha256"], prints[1]["sha256"])
        for name in ("train", "validation", "test"):
            np.testing.assert_array_equal(getattr(sharded, name).x, getattr(single, name).x)
            np.testing.assert_array_equal(getattr(sharded, name).y, getattr(single, name).y)

    def test_a_bad_cell_names_its_own_shard_line_and_column(self):
        folder = self.write_shards({"s0.csv": "a,y\n1,2\n3,4\n", "s1.csv.gz": "a,y\n5,6\n\nq,8\n"})
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + os.path.join(folder, "s*"), target="y")
        bad = os.path.join(folder, "s1.csv.gz")
        self.assert_one_line_error(caught.exception, f'{bad}:4:1 (column "a"): expected a number, got "q"')


if __name__ == "__main__":
    tf.test.main()
