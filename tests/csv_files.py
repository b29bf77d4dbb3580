"""Helpers shared by the tests that read CSVs: files in a fresh temporary directory, counted reads."""

import io
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


class CountingReader(io.RawIOBase):
    """Raw bytes that count how many were read, to tell a streaming reader from one that slurps.

    Wrap it in io.BufferedReader to hand it to code expecting a binary file.
    """

    def __init__(self, content: bytes):
        super().__init__()
        self._content = memoryview(content)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self._content) - self.bytes_read)
        buffer[:n] = self._content[self.bytes_read : self.bytes_read + n]
        self.bytes_read += n
        return n
