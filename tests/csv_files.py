"""Helpers shared by the data tests: CSV files in a fresh temporary directory per test."""

import os

import tensorflow as tf


class CsvTestCase(tf.test.TestCase):
    """Writes CSV files into a fresh temporary directory per test."""

    def write_csv(self, text: str, name: str = "data.csv", encoding: str = "utf-8") -> str:
        """Writes `text` to `name` in a new temp dir and returns its path."""
        path = os.path.join(self.create_tempdir().full_path, name)
        with open(path, "w", newline="", encoding=encoding) as f:
            f.write(text)
        return path

    def write_indexed_csv(self, labels, name: str = "data.csv") -> str:
        """A CSV whose feature `idx` is the row number, so shuffled rows can be traced back."""
        rows = [f'{i},{0.5 * i},"{label}"' for i, label in enumerate(labels)]
        return self.write_csv("idx,x2,target\n" + "\n".join(rows) + "\n", name)

    def assert_one_line_error(self, error: Exception, *fragments: str):
        """The message is one line and contains every fragment."""
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
