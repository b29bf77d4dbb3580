"""The run folder: ownership, the one-run lock, outputs checked before training, leftovers removed.

Refusals happen before training, so most tests here train nothing; the few that do are one
small epoch.  Killed CLI runs and two concurrent CLI runs are in cli_resume_test.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from unittest import mock

import checkpoint_files
import tensorflow as tf
from absl.testing import parameterized
from training_runs import small_config

from tf_backprop import training
from tf_backprop.training import checkpoint
from tf_backprop.training import workdir as workdir_lib

_TIMEOUT = 120  # seconds for a helper subprocess


def _config(workdir: str, **overrides):
    """One quick epoch, without monitoring or export unless asked."""
    return small_config(
        workdir, **{"epochs": 1, "n_samples": 200, "monitor": False, "export": False, **overrides}
    )


def _listing(folder: str) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` (relative path -> (mtime, bytes)): what a refusal must not touch."""
    states = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                states[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, handle.read())
    return states


def _mark(folder: str, cfg) -> None:
    """config.json as a run writes it first: the folder becomes a run folder with no checkpoint."""
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(checkpoint.config_document(cfg), handle)


class OwnershipTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_a_foreign_folder_is_refused_before_anything_is_written(self, restart):
        folder = self.create_tempdir()
        folder.create_file("data.json", content='{"my": "data"}')
        folder.create_file("metrics.json", content='{"my": "metrics"}')
        before = _listing(folder.full_path)
        pattern = (
            rf"^workdir: {re.escape(folder.full_path)} is not empty and not a tf_backprop run folder "
            r"\(it holds data\.json, metrics\.json\); nothing was written: use a new or empty folder"
        )
        with self.assertRaisesRegex(training.WorkdirError, pattern):
            training.train(_config(folder.full_path), restart=restart, progress=False)
        self.assertEqual(_listing(folder.full_path), before)  # not even a lock file

    def test_an_empty_path_is_refused_not_the_current_folder(self):
        cwd, before = self.create_tempdir().full_path, os.getcwd()
        os.chdir(cwd)  # empty: os.path.abspath("") would have been it, and a run trained into it
        try:
            with self.assertRaisesRegex(  # at the config's construction, before anything runs
                training.ConfigError, r"^workdir: expected a folder path, got an empty"
            ):
                training.train(_config(""), progress=False)
        finally:
            os.chdir(before)
        self.assertEqual(os.listdir(cwd), [])

    def test_a_file_is_refused(self):
        path = self.create_tempdir().create_file("run", content="my notes").full_path
        with self.assertRaisesRegex(
            training.WorkdirError, rf"^workdir: {re.escape(path)} is a file, not a folder"
        ):
            training.train(_config(path), progress=False)
        with open(path, encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "my notes")

    def test_a_wrong_folder_is_refused_before_the_data_loads(self):
        # Loading a large CSV takes seconds; a bad cell in it would be found only after.
        folder = self.create_tempdir()
        path = folder.create_file("run", content="my notes").full_path
        bad = folder.create_file("bad.csv", content="x,y\n1,2\n3,abc\n").full_path
        config = _config(path, data=f"csv:{bad}", target="y")
        with self.assertRaisesRegex(training.WorkdirError, "is a file, not a folder"):
            training.train(config, progress=False)

    def test_a_folder_under_a_file_is_one_line(self):
        parent = self.create_tempdir().create_file("notes").full_path
        with self.assertRaisesRegex(
            training.WorkdirError, r"^workdir: cannot create \S+/notes/run \(Not a directory\)$"
        ):
            training.train(_config(os.path.join(parent, "run")), progress=False)

    def test_a_parent_without_write_permission_is_one_line(self):
        cfg = _config(os.path.join(self.create_tempdir().full_path, "run"))
        datasets = training.load_datasets(cfg)
        denied = PermissionError(13, "Permission denied")
        with mock.patch.object(os, "makedirs", side_effect=denied):
            with self.assertRaisesRegex(
                training.WorkdirError, r"^workdir: cannot create \S+/run \(Permission denied\)$"
            ):
                with workdir_lib.prepared(cfg, datasets, restart=False):
                    pass

    @parameterized.named_parameters(("folder", ""), ("ckpt", "ckpt"))
    def test_a_folder_without_write_permission_is_one_line(self, where):
        if os.geteuid() == 0:
            self.skipTest("root writes into read-only folders")
        folder = self.create_tempdir().full_path
        cfg = _config(folder)
        _mark(folder, cfg)
        os.makedirs(os.path.join(folder, where), exist_ok=True)
        os.chmod(os.path.join(folder, where), 0o555)
        self.addCleanup(os.chmod, os.path.join(folder, where), 0o755)
        with self.assertRaisesRegex(
            training.WorkdirError, r"^workdir: cannot (write in|lock) \S+ \(Permission denied\)"
        ):
            training.train(cfg, progress=False)

    def test_a_run_folder_is_marked_by_its_config_json_written_first(self):
        folder = self.create_tempdir().full_path
        cfg = _config(folder)
        _mark(folder, cfg)  # a run killed right after writing its marker
        self.assertTrue(workdir_lib.is_run_folder(folder))
        workdir_lib.check_owned(folder)
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            json.dump({**checkpoint.config_document(cfg), "format": "someone.else"}, handle)
        self.assertFalse(workdir_lib.is_run_folder(folder))  # the check can fail
        with self.assertRaisesRegex(
            training.WorkdirError, r"not a tf_backprop run folder \(it holds config\.json\)"
        ):
            workdir_lib.check_owned(folder)

    def test_a_run_from_before_the_marker_is_recognised_and_resumes(self):
        folder = self.create_tempdir().full_path
        training.train(_config(folder), progress=False)
        saved = checkpoint_files.read_json(folder, "config.json")
        self.assertEqual(saved.pop("format"), "tf_backprop.run")
        saved.pop("format_version")
        saved.pop("worker_timeout")  # a field the previous version did not have
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(saved, handle)
        self.assertTrue(workdir_lib.is_run_folder(folder))
        resumed = training.train(_config(folder, epochs=2), progress=False)
        self.assertEqual(resumed.steps, 2 * 16)
        self.assertEqual(checkpoint_files.read_json(folder, "config.json")["format"], "tf_backprop.run")

    def test_an_unmarked_config_json_alone_is_not_a_run(self):
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(_config(folder).to_dict(), handle)  # the old format, without data.json or ckpt/
        self.assertFalse(workdir_lib.is_run_folder(folder))
        os.mkdir(os.path.join(folder, "ckpt"))
        self.assertTrue(workdir_lib.is_run_folder(folder))

    def test_a_killed_runs_lock_and_temporaries_count_as_empty(self):
        folder = self.create_tempdir()
        folder.create_file(".lock")
        folder.create_file(".config.json.tmp-0123456789ab", content="{")
        folder.create_file(".write-check-ab_12xyz")  # _check_writable's probe, mid-check or killed
        workdir_lib.check_owned(folder.full_path)
        folder.create_file("notes.txt")
        with self.assertRaisesRegex(training.WorkdirError, r"it holds notes\.txt\)"):
            workdir_lib.check_owned(folder.full_path)


class OutputsTest(tf.test.TestCase, parameterized.TestCase):
    """Every output path is checked before training: a conflict trains nothing."""

    @parameterized.named_parameters(
        (
            "export_not_a_saved_model",
            "export/notes.txt",
            {"export": True},
            r"export exists and is not a SavedModel",
        ),
        ("metrics_a_folder", "metrics.json/x", {}, r"metrics\.json is not a file"),
        ("ckpt_a_file", "ckpt", {}, r"ckpt is not a folder"),
        ("tensorboard_a_file", "tb/train", {"monitor": True}, r"tb/train is not a folder"),
    )
    def test_a_taken_output_path_is_refused_before_training(self, taken, overrides, pattern):
        folder = self.create_tempdir()
        cfg = _config(folder.full_path, **overrides)
        _mark(folder.full_path, cfg)
        folder.create_file(taken, content="mine")
        with self.assertRaisesRegex(training.WorkdirError, rf"^workdir: \S+{pattern}.*move it away"):
            training.train(cfg, progress=False)
        self.assertEqual(
            checkpoint_files.read_json(folder.full_path, "config.json"), checkpoint.config_document(cfg)
        )
        self.assertFalse(os.path.exists(os.path.join(folder.full_path, "data.json")))  # nothing written
        with open(os.path.join(folder.full_path, taken), encoding="utf-8") as handle:
            self.assertEqual(handle.read(), "mine")

    def test_an_export_holding_a_file_of_the_users_is_refused_before_training(self):
        folder = self.create_tempdir()
        cfg = _config(folder.full_path, export=True)
        _mark(folder.full_path, cfg)
        folder.create_file("export/saved_model.pb", content="a model")
        folder.create_file("export/notes.txt", content="mine")
        with self.assertRaisesRegex(
            training.WorkdirError,
            r"^workdir: \S+/export holds 'notes\.txt', which is not part of a SavedModel; move it away",
        ):
            training.train(cfg, progress=False)
        self.assertFalse(os.path.exists(os.path.join(folder.full_path, "data.json")))  # nothing written
        self.assertEqual(
            sorted(os.listdir(os.path.join(folder.full_path, "export"))), ["notes.txt", "saved_model.pb"]
        )

    def test_an_unwritable_output_folder_is_refused_before_training(self):
        folder = self.create_tempdir()
        cfg = _config(folder.full_path)
        _mark(folder.full_path, cfg)
        folder.create_file("ckpt/checkpoint", content="")
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if os.path.basename(dir) == "ckpt":
                raise PermissionError(13, "Permission denied")
            return real_mkstemp(*args, dir=dir, **kwargs)

        with mock.patch.object(tempfile, "mkstemp", mkstemp):
            with self.assertRaisesRegex(
                training.WorkdirError, r"^workdir: cannot write in \S+/ckpt \(Permission denied\)$"
            ):
                training.train(cfg, progress=False)

    def test_a_full_disk_at_start_up_is_a_failure_naming_the_folder(self):
        # The machine's failure (an OSError: the CLI exits 1), not the user's input (exit 2).
        for code in (errno.ENOSPC, errno.EDQUOT):
            folder = self.create_tempdir().full_path
            full = OSError(code, os.strerror(code))
            with mock.patch.object(tempfile, "mkstemp", side_effect=full):
                with self.assertRaises(OSError) as raised:
                    training.train(_config(folder), progress=False)
            self.assertNotIsInstance(raised.exception, training.WorkdirError)
            self.assertEqual(raised.exception.errno, code)
            self.assertStartsWith(raised.exception.filename, folder)
            with mock.patch.object(workdir_lib.os, "open", side_effect=full):  # the run's lock
                with self.assertRaises(OSError) as raised:
                    workdir_lib.RunLock(folder).__enter__()
            self.assertNotIsInstance(raised.exception, training.WorkdirError)
            self.assertEqual((raised.exception.errno, raised.exception.filename), (code, folder))
            lock = workdir_lib.RunLock(folder)
            with mock.patch.object(workdir_lib.os, "pwrite", side_effect=full):  # its holder record
                with self.assertRaises(OSError) as raised:
                    lock.__enter__()
            self.assertEqual((raised.exception.errno, raised.exception.filename), (code, lock.path))
            with workdir_lib.RunLock(folder):  # released
                pass


class PutBackTest(tf.test.TestCase):
    def test_a_new_parent_another_run_uses_meanwhile_is_kept(self):
        root = self.create_tempdir().full_path
        mine = os.path.join(root, "new", "deeper", "mine")
        before = workdir_lib.before_opening(mine)
        os.makedirs(mine)
        os.makedirs(os.path.join(root, "new", "theirs"))  # another run, started meanwhile
        workdir_lib.put_back(mine, before)
        self.assertEqual(os.listdir(os.path.join(root, "new")), ["theirs"])  # "deeper" was empty: gone
        before = workdir_lib.before_opening(os.path.join(root, "other", "run"))
        os.makedirs(os.path.join(root, "other", "run"))
        workdir_lib.put_back(os.path.join(root, "other", "run"), before)
        self.assertFalse(os.path.exists(os.path.join(root, "other")))


class LockTest(tf.test.TestCase):
    def test_a_locked_folder_is_refused_naming_the_holder(self):
        folder = self.create_tempdir().full_path
        with workdir_lib.RunLock(folder):
            with self.assertRaisesRegex(
                training.WorkdirError, rf"^workdir: \S+ is in use by another run \(pid {os.getpid()} on \S+\)"
            ):
                training.train(_config(folder), progress=False)
        self.assertEqual(training.train(_config(folder), progress=False).steps, 16)  # released

    def test_the_lock_is_released_when_a_run_fails(self):
        folder = self.create_tempdir().full_path
        training.train(_config(folder), progress=False)
        with self.assertRaises(training.ConfigMismatchError):
            training.train(_config(folder, hidden=(4,)), progress=False)
        with workdir_lib.RunLock(folder):
            pass

    def test_a_killed_holder_never_blocks_a_rerun(self):
        folder = self.create_tempdir().full_path
        code = (
            "import sys\n"
            "from tf_backprop.training import workdir\n"
            "workdir.RunLock(sys.argv[1]).__enter__()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        watchdog = threading.Timer(_TIMEOUT, holder.kill)
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        self.assertEqual(holder.stdout.readline(), "locked\n")
        with self.assertRaisesRegex(training.WorkdirError, rf"in use by another run \(pid {holder.pid} on "):
            workdir_lib.RunLock(folder).__enter__()
        holder.kill()  # SIGKILL: no clean-up of its own
        holder.wait(timeout=_TIMEOUT)
        holder.stdout.close()
        holder.stdin.close()
        with workdir_lib.RunLock(folder):
            pass


class LeftoversTest(tf.test.TestCase):
    """What a SIGKILL mid-save leaves is removed at start; nothing else is."""

    def test_temporaries_are_removed_and_nothing_else(self):
        folder = self.create_tempdir()
        cfg = _config(folder.full_path)
        _mark(folder.full_path, cfg)
        leftovers = [
            "ckpt/ckpt-40_temp/part-00000-of-00001.data-00000-of-00001",
            "ckpt/ckpt-40.index.tempstate1234567890",
            "ckpt/checkpoint.tmp0123456789abcdef",
            ".metrics.json.tmp-0123456789ab",
            "workertemp_1/ckpt.index",
            ".write-check-ab_12xyz",
        ]
        kept = [
            "ckpt/notes_temp",
            "ckpt/ckpt-40.index.bak",
            "keep.tmp",
            ".metrics.json.tmp-mine",
            ".write-check-mine",
            "notes.txt",
        ]
        for name in leftovers + kept:
            folder.create_file(name, content="x")
        with workdir_lib.prepared(cfg, training.load_datasets(cfg), restart=False):
            pass
        files = set(_listing(folder.full_path))
        self.assertContainsSubset(kept, files)
        self.assertEmpty([name for name in leftovers if name in files])
        self.assertFalse(os.path.exists(os.path.join(folder.full_path, "ckpt", "ckpt-40_temp")))
        self.assertFalse(os.path.exists(os.path.join(folder.full_path, "workertemp_1")))

    def test_an_export_set_aside_by_a_killed_replacement_is_put_back(self):
        folder = self.create_tempdir()
        cfg = _config(folder.full_path, export=True)
        _mark(folder.full_path, cfg)
        folder.create_file(".export.old-0123456789ab/saved_model.pb", content="model")
        folder.create_file(".export.tmp-ba9876543210/saved_model.pb", content="half")
        with workdir_lib.prepared(cfg, training.load_datasets(cfg), restart=False):
            pass
        self.assertEqual(
            sorted(_listing(folder.full_path)), [".lock", "config.json", "data.json", "export/saved_model.pb"]
        )
