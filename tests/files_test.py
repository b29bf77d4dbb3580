"""files: strict JSON (a non-finite value becomes null, named in "non_finite") and atomic writes."""

import errno
import fcntl
import gzip
import json
import math
import os
import stat
import time
from unittest import mock

import numpy as np
import tensorflow as tf

from tf_backprop import files


def strict_loads(text: str):
    """json.loads that rejects NaN, Infinity and -Infinity, as strict parsers do."""

    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


class StrictJsonTest(tf.test.TestCase):
    def test_the_strict_parser_rejects_what_json_dumps_writes_by_default(self):
        with self.assertRaisesRegex(ValueError, "Infinity"):
            strict_loads(json.dumps({"rmse": math.inf}))  # the check can fail

    def test_non_finite_values_become_null_and_are_named(self):
        payload = {
            "final": {"rmse": math.inf, "loss": 0.5, "split": "test"},
            "history": [{"loss": 1.0}, {"loss": np.float64("nan")}],
            "events": [{"gradient_norm": -math.inf}],
        }
        parsed = strict_loads(files.dumps(payload))
        self.assertIsNone(parsed["final"]["rmse"])
        self.assertEqual(parsed["final"]["loss"], 0.5)
        self.assertIsNone(parsed["history"][1]["loss"])
        self.assertEqual(
            parsed["non_finite"],
            {"final.rmse": "inf", "history[1].loss": "nan", "events[0].gradient_norm": "-inf"},
        )
        self.assertEqual(payload["final"]["rmse"], math.inf)  # the caller's payload is untouched

    def test_finite_payload_is_unchanged(self):
        payload = {"a": [1, 2.5, None, "x"], "b": {"c": True}}
        self.assertEqual(strict_loads(files.dumps(payload)), payload)

    def test_a_non_finite_value_outside_a_dict_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"\[1\]"):
            files.dumps([1.0, math.nan])

    def test_write_json_is_strict(self):
        path = os.path.join(self.create_tempdir().full_path, "metrics.json")
        files.write_json(path, {"final": {"rmse": math.inf}})
        with open(path, encoding="utf-8") as handle:
            parsed = strict_loads(handle.read())
        self.assertEqual(parsed, {"final": {"rmse": None}, "non_finite": {"final.rmse": "inf"}})


class AbandonedTemporaryTest(tf.test.TestCase):
    """A write killed midway (SIGKILL) leaves its hidden temporary; the next write of the same
    file removes it, and never a live writer's."""

    def setUp(self):
        super().setUp()
        self.folder = self.create_tempdir().full_path
        self.path = os.path.join(self.folder, "out.csv")

    def _plant(self, name: str, age_seconds: float = 3600) -> str:
        planted = os.path.join(self.folder, name)
        with open(planted, "w", encoding="utf-8") as handle:
            handle.write("half a file")
        stamp = time.time() - age_seconds
        os.utime(planted, (stamp, stamp))
        return planted

    def _write(self, text: str = "a\n") -> None:
        with files.atomic_text(self.path) as handle:
            handle.write(text)

    def test_an_old_unlocked_temporary_of_the_same_file_is_removed(self):
        self._plant(".out.csv.tmp-0123456789ab")
        self._plant(".out.csv.gz.tmp-0123456789ab")  # another file's
        self._plant(".out.csv.tmp-mine")  # not a temporary's name
        self._write()
        self.assertCountEqual(
            os.listdir(self.folder), ["out.csv", ".out.csv.gz.tmp-0123456789ab", ".out.csv.tmp-mine"]
        )

    def test_a_locked_temporary_is_a_live_writers_and_kept(self):
        planted = self._plant(".out.csv.tmp-0123456789ab")
        with open(planted, "rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another open file: flock conflicts
            self._write()
        self.assertTrue(os.path.exists(planted))

    def test_a_recent_temporary_is_kept(self):
        planted = self._plant(".out.csv.tmp-0123456789ab", age_seconds=1)
        self._write()
        self.assertTrue(os.path.exists(planted))

    def test_a_file_system_without_locks_still_writes(self):
        # Some network mounts answer flock with ENOLCK: the write goes on without the lock.
        with mock.patch.object(files.fcntl, "flock", side_effect=OSError(errno.ENOLCK, "No locks available")):
            self._write("written")
        with open(self.path, encoding="utf-8") as result:
            self.assertEqual(result.read(), "written")

    def test_a_write_in_progress_holds_its_temporary_against_another_writer(self):
        with files.atomic_text(self.path) as handle:
            handle.write("first")
            (temporary,) = [os.path.join(self.folder, n) for n in os.listdir(self.folder)]
            stamp = time.time() - 3600  # as if the write had taken an hour
            os.utime(temporary, (stamp, stamp))
            self._write("second")  # a concurrent write of the same file
            self.assertTrue(os.path.exists(temporary))
        with open(self.path, encoding="utf-8") as result:
            self.assertEqual(result.read(), "first")  # the first write finished last
        self.assertEqual(os.listdir(self.folder), ["out.csv"])


class AtomicTextTest(tf.test.TestCase):
    def test_overwrite_false_never_replaces_a_file(self):
        folder = self.create_tempdir()
        path = folder.create_file("out.csv", content="mine").full_path
        with self.assertRaises(FileExistsError):
            with files.atomic_text(path, overwrite=False) as handle:
                handle.write("new")
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "mine")
        self.assertEqual(os.listdir(folder.full_path), ["out.csv"])  # no temporary left

    def test_a_gzip_file_names_itself_in_its_header_not_the_temporary(self):
        """gzip's header recorded '.out.csv.gz.tmp-…' (review): `gunzip -N` restored that name."""
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "out.csv.gz")
        with files.atomic_text(path, compress=True) as handle:
            handle.write("a,b\n1,2\n")
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "a,b\n1,2\n")
        with open(path, "rb") as handle:
            header = handle.read(64)
        self.assertTrue(header[3] & 0x08)  # FNAME: a file name follows the 10-byte header
        self.assertEqual(header[10 : header.index(b"\0", 10)], b"out.csv")
        self.assertEqual(os.listdir(folder), ["out.csv.gz"])

    def test_overwriting_writes_through_a_link_and_keeps_the_files_permissions(self):
        # A symlinked output became a regular file and a read-only one a 644 file (review).
        folder = self.create_tempdir().full_path
        real, link = os.path.join(folder, "real.csv"), os.path.join(folder, "link.csv")
        with open(real, "w", encoding="utf-8") as handle:
            handle.write("old")
        os.chmod(real, 0o440)
        os.symlink("real.csv", link)
        with files.atomic_text(link) as handle:
            handle.write("new")
        self.assertTrue(os.path.islink(link))
        with open(real, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "new")
        self.assertEqual(stat.S_IMODE(os.stat(real).st_mode), 0o440)
        self.assertCountEqual(os.listdir(folder), ["real.csv", "link.csv"])  # no temporary left

    def test_overwrite_false_writes_a_new_file(self):
        path = os.path.join(self.create_tempdir().full_path, "out.csv")
        with files.atomic_text(path, overwrite=False) as handle:
            handle.write("new")
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "new")
