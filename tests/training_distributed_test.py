"""Distributed training: MirroredStrategy in-process, MultiWorkerMirroredStrategy as subprocesses.

conftest.py gives this process 2 logical CPUs, so `mirrored` runs here with cpu_replicas=2.  A
multi-worker cluster is two `python -m tf_backprop.cli.train --strategy=multi_worker` processes
on 127.0.0.1 ports picked by bind(0), each with its own TF_CONFIG.  Every wait has a hard
timeout; a watchdog kills any worker that outlives _TIMEOUT, so a lost peer never hangs the
tests.  Kills are triggered by reading the worker's log (its stderr pipe shrunk to one page,
so the worker is never far ahead of the reader), never by sleeping.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from unittest import mock

import numpy as np
import planted_faults
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import backprop, training
from tf_backprop.data import pipeline
from tf_backprop.training import api as training_api
from tf_backprop.training import checkpoint, config, distributed, feed
from tf_backprop.training import workdir as workdir_lib

_TIMEOUT = 240  # seconds per worker process; a run takes 10-30 s on a loaded 2-core machine
_LOST_WITHIN = 60  # a surviving worker must exit this soon after its peer was killed
_ERROR_LINE = re.compile(r"^tf-backprop-train: error: step \d+: lost contact with another worker \(.+\)")
# 480 training rows, a global batch of 20 (10 on each of 2 workers): 24 steps per epoch;
# checkpoints every 20 steps, mostly mid-epoch; 8-step chunks.  float64, so "equal" means 1e-12.
_FLAGS = (
    "--steps=600",
    "--n_samples=600",
    "--batch_size=20",
    "--checkpoint_every=20",
    "--steps_per_call=8",
    "--dtype=float64",
    "--histogram_every=0",
)
_KILL_AFTER = 100  # kill both workers once the chief has checkpointed step ≥ this
_WORKER_TIMEOUT = 10  # seconds a lone worker waits for the other before it exits 1


def _config(workdir: str, **overrides) -> config.TrainConfig:
    values = {"epochs": 3, "n_samples": 400, "workdir": workdir, "histogram_every": 0}
    values.update(overrides)
    return config.TrainConfig(**values)


def _assert_weights_close(test, expected, actual, dtype: str) -> None:
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (1e-5, 1e-7)
    test.assertEqual(len(expected), len(actual))
    for a, b in zip(expected, actual):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- mirrored
class MirroredTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.named_parameters(
        ("tape_sgd_float64", "tape", "sgd", "float64", 0.0, 1, 0),
        ("manual_sgd_float64_l2_accum", "manual", "sgd", "float64", 1e-2, 2, 3),
        ("tape_adam_float32_l2", "tape", "adam", "float32", 1e-2, 1, 3),
        ("manual_adam_float32", "manual", "adam", "float32", 0.0, 2, 0),
    )
    def test_two_replicas_equal_one_device_with_the_same_global_batch(
        self, grad_source, optimizer, dtype, l2, accum, verify_every
    ):
        common = {
            "grad_source": grad_source,
            "optimizer": optimizer,
            "dtype": dtype,
            "l2": l2,
            "grad_accum_steps": accum,
            "verify_every": verify_every,
        }
        single = training.train(
            _config(self.create_tempdir().full_path, batch_size=20, **common), progress=False
        )
        workdir = self.create_tempdir().full_path
        mirrored = training.train(
            _config(workdir, batch_size=20, strategy="mirrored", cpu_replicas=2, **common), progress=False
        )
        self.assertEqual(mirrored.steps, single.steps)
        _assert_weights_close(self, single.model.get_weights(), mirrored.model.get_weights(), dtype)
        rtol = 1e-12 if dtype == "float64" else 1e-5
        # The reported loss is the global batch's (the 1/replicas scaling counted once).
        for one, two in zip(single.history, mirrored.history):
            self.assertAllClose(two["loss"], one["loss"], rtol=rtol)
            self.assertAllClose(two["val_loss"], one["val_loss"], rtol=rtol)
        # The chief's monitoring still writes TensorBoard events and the health summary.
        self.assertNotEmpty(os.listdir(os.path.join(workdir, "tb", "train")))
        with open(os.path.join(workdir, "metrics.json")) as handle:
            self.assertIn("gradient_health", json.load(handle))

    def test_verify_every_catches_a_planted_disagreement_before_the_update(self):
        planted = {"tape": backprop.tape_step, "manual": planted_faults.flipped_sign(backprop.manual_step, 2)}
        cfg = _config(
            self.create_tempdir().full_path,
            grad_source="manual",
            verify_every=5,
            strategy="mirrored",
            cpu_replicas=2,
        )
        with self.assertRaisesRegex(training.TrainingError, r"^step 5: tape and manual .*dense_2/kernel"):
            training.train(cfg, progress=False, step_functions=planted)

    def test_non_finite_gradient_names_the_step_and_the_variable(self):
        workdir = self.create_tempdir().full_path
        cfg = _config(workdir, epochs=1, shuffle=False, batch_size=10, strategy="mirrored", cpu_replicas=2)
        datasets = training.load_datasets(cfg)
        bad_step = 4  # shuffle off: step s reads rows (s-1)·10 .. s·10-1; replica 1 takes the last 5
        datasets.train.x[(bad_step - 1) * 10 + 7] = np.nan
        with self.assertRaisesRegex(
            training.TrainingError,
            rf"^step {bad_step}: non-finite value in the gradient of dense_1/kernel; .*never saved",
        ):
            training.train(cfg, datasets, progress=False)
        self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.json")))


# ----------------------------------------------------------------------------- set-up errors
class StrategyConfigTest(parameterized.TestCase, tf.test.TestCase):
    def test_other_logical_cpu_count_is_a_clear_error(self):
        with self.assertRaisesRegex(config.ConfigError, r"cpu_replicas: 3 requested, .* 2 logical CPU"):
            distributed.make_strategy(_config("x", strategy="mirrored", cpu_replicas=3))

    def test_mirrored_without_gpu_or_cpu_replicas_is_a_clear_error(self):
        if tf.config.list_physical_devices("GPU"):
            self.skipTest("this machine has a GPU")
        with self.assertRaisesRegex(config.ConfigError, r"strategy: 'mirrored' needs GPUs .*--cpu_replicas"):
            distributed.make_strategy(_config("x", strategy="mirrored"))

    @parameterized.parameters(
        (None, r"needs the TF_CONFIG environment variable"),
        ("{not json", r"TF_CONFIG: not valid JSON"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', r"TF_CONFIG: expected a 'cluster' and a 'task'"),
        ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}', r"host:port"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', r"job 'ps' is not supported"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', r"task index 1 outside"),
    )
    def test_missing_or_invalid_tf_config_is_a_clear_error(self, tf_config, pattern):
        environ = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        if tf_config is not None:
            environ["TF_CONFIG"] = tf_config
        with mock.patch.dict(os.environ, environ, clear=True):
            with self.assertRaisesRegex(config.ConfigError, pattern):
                distributed.make_strategy(_config("x", strategy="multi_worker"))

    def test_a_batch_that_does_not_split_among_the_replicas_names_both_numbers(self):
        cfg = _config(self.create_tempdir().full_path, batch_size=15, strategy="mirrored", cpu_replicas=2)
        with self.assertRaisesRegex(
            config.ConfigError,
            r"^batch_size: the global batch of 15 rows does not split evenly among the 2 replicas",
        ):
            training.build(cfg)

    @parameterized.parameters(
        ({"cpu_replicas": 2}, "cpu_replicas: only with --strategy=mirrored"),
        ({"strategy": "mirrored", "cpu_replicas": -1}, "cpu_replicas: expected an integer"),
        ({"strategy": "mirrored", "cpu_replicas": 2, "device": "gpu"}, "device: 'gpu' contradicts"),
        ({"strategy": "multi_worker", "workdir": None}, "workdir: required with --strategy=multi_worker"),
        ({"strategy": "ring"}, "strategy: unknown name"),
    )
    def test_bad_strategy_fields_name_the_field(self, values, pattern):
        with self.assertRaisesRegex(config.ConfigError, pattern):
            config.TrainConfig(**{"workdir": "x", **values})


# ----------------------------------------------------------------------------- multi-worker
_PORT_RANGE = 2000  # ports of one test process
_next_port = itertools.count()


def _free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1, from a range of this test process's own: 20000 + 2000
    per pytest-xdist worker, below Linux's ephemeral ports (32768 up), which bind(0) and
    outgoing connections take.  Ports from bind(0), released, could reach another worker's
    cluster starting at the same moment, and TensorFlow's gRPC servers may share a port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = 20000 + _PORT_RANGE * (int(worker) if worker.isdigit() else 0)
    ports = []
    for _ in range(_PORT_RANGE):
        port = low + next(_next_port) % _PORT_RANGE
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still in TIME_WAIT from an earlier cluster
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports in {low}..{low + _PORT_RANGE - 1}")


def _shrink_pipe(stream) -> None:
    """One page of pipe, so a worker writing its log cannot run far ahead of the reader."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    except (ImportError, AttributeError, OSError):
        pass


@dataclasses.dataclass
class _Outcome:
    returncode: int
    stdout: str
    stderr: list[str]

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr (end):\n" + "\n".join(
            self.stderr[-30:]
        )


class _Cluster:
    """Two tf-backprop-train workers on localhost sharing one workdir (the chief writes it).

    Worker `watch`'s stderr is a pipe read by `wait_for`; the others' go to files.  A watchdog
    kills every worker still alive after `timeout`.  `launch`: the workers started (default all);
    `extra`: {worker: flags} added to that worker's; `verbose_tf`: TensorFlow's C++ lines shown.
    """

    def __init__(
        self,
        root: str,
        workdir: str,
        flags,
        watch: int = 0,
        workers: int = 2,
        launch=None,
        timeout=_TIMEOUT,
        extra=None,
        verbose_tf=False,
    ):
        ports, self.root = _free_ports(workers), root
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        self.ports, self.procs, self.watch, self.lines, self.files = ports, {}, watch, [], []
        for index in range(workers) if launch is None else launch:
            env = {k: v for k, v in os.environ.items() if k != "TF_BACKPROP_VERBOSE_TF"}
            if verbose_tf:  # TensorFlow's C++ lines too
                env["TF_BACKPROP_VERBOSE_TF"] = "1"
                env.pop("TF_CPP_MIN_LOG_LEVEL", None)
            env.update(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                no_proxy="localhost,127.0.0.1",
                NO_PROXY="localhost,127.0.0.1",
            )
            command = [sys.executable, "-m", "tf_backprop.cli.train", "--strategy=multi_worker"]
            stdout = self._open(index, "out")
            stderr = subprocess.PIPE if index == watch else self._open(index, "err")
            proc = subprocess.Popen(
                [*command, f"--workdir={workdir}", *flags, *(extra or {}).get(index, ())],
                env=env,
                cwd=root,
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
            self.procs[index] = proc
        _shrink_pipe(self.procs[watch].stderr)
        self.watchdog = threading.Timer(timeout, self.kill_all)
        self.watchdog.start()

    def _path(self, index: int, kind: str) -> str:
        return os.path.join(self.root, f"worker{index}.{kind}")

    def _open(self, index: int, kind: str):
        self.files.append(open(self._path(index, kind), "w"))
        return self.files[-1]

    def wait_for(self, pattern: str) -> re.Match | None:
        """Reads the watched worker's stderr until a line matches (None: it ended first)."""
        for line in self.procs[self.watch].stderr:
            self.lines.append(line.rstrip("\n"))
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def kill(self, index: int) -> None:
        self.procs[index].send_signal(signal.SIGKILL)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()

    def wait(self, index: int, timeout: float = _TIMEOUT) -> _Outcome:
        """Waits (at most `timeout` s, then kills) for worker `index`; its outcome."""
        proc = self.procs[index]
        if index == self.watch:
            self.lines += [line.rstrip("\n") for line in proc.stderr]  # drains until it exits
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        if index == self.watch:
            stderr = self.lines
        else:
            with open(self._path(index, "err")) as handle:
                stderr = handle.read().splitlines()
        with open(self._path(index, "out")) as handle:
            return _Outcome(proc.returncode, handle.read(), stderr)

    def finish(self) -> list[_Outcome]:
        outcomes = [self.wait(index) for index in self.procs]
        self.watchdog.cancel()
        self.procs[self.watch].stderr.close()
        for handle in self.files:
            handle.close()
        return outcomes


def _every_log(outcomes: list[_Outcome]) -> str:
    return "\n".join(f"=== worker {i}: {o.describe()}" for i, o in enumerate(outcomes))


def _single_device_reference(root: str) -> list[np.ndarray]:
    """The same run as _FLAGS on one device (the same global batch of 20)."""
    cfg = config.TrainConfig(
        steps=600,
        n_samples=600,
        batch_size=20,
        checkpoint_every=20,
        steps_per_call=8,
        dtype="float64",
        histogram_every=0,
        workdir=os.path.join(root, "single"),
    )
    return training.train(cfg, progress=False).model.get_weights()


class MultiWorkerTest(tf.test.TestCase):
    """Two workers; the uninterrupted run is made once and shared by the tests."""

    _reference: list[np.ndarray] | None = None

    def _run_cluster(self, workdir: str) -> list[_Outcome]:
        cluster = _Cluster(self.create_tempdir().full_path, workdir, _FLAGS)
        outcomes = cluster.finish()
        self.assertEqual([o.returncode for o in outcomes], [0] * len(outcomes), _every_log(outcomes))
        return outcomes

    def _uninterrupted(self) -> list[np.ndarray]:
        if MultiWorkerTest._reference is None:
            workdir = os.path.join(self.create_tempdir().full_path, "run")
            chief, other = self._run_cluster(workdir)
            self.assertIn("trained 600 steps", chief.stdout)
            self.assertIn("written by the chief worker", other.stdout)
            self.assertEqual(
                sorted(os.listdir(workdir)),
                [".lock", "ckpt", "config.json", "data.json", "export", "metrics.json", "tb"],
            )
            MultiWorkerTest._reference = checkpoint.load_model(workdir)[0].get_weights()
        return MultiWorkerTest._reference

    def test_two_workers_equal_one_device_with_the_same_global_batch(self):
        expected = _single_device_reference(self.create_tempdir().full_path)
        _assert_weights_close(self, expected, self._uninterrupted(), "float64")

    def test_both_killed_then_rerun_resumes_to_the_same_weights(self):
        reference = self._uninterrupted()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        cluster = _Cluster(self.create_tempdir().full_path, workdir, _FLAGS, watch=0)
        match = cluster.wait_for(r"\] checkpoint \S*ckpt-(\d+)$")
        while match and int(match.group(1)) < _KILL_AFTER:
            match = cluster.wait_for(r"\] checkpoint \S*ckpt-(\d+)$")
        cluster.kill(0)
        cluster.kill(1)
        killed = cluster.finish()
        self.assertIsNotNone(match, killed[0].describe())
        self.assertTrue(all(o.returncode == -signal.SIGKILL for o in killed), killed[0].describe())

        chief, other = self._run_cluster(workdir)
        for outcome in (chief, other):
            resumed = [line for line in outcome.stderr if line.startswith("resuming from ")]
            self.assertLen(resumed, 1, outcome.describe())
            step = int(re.search(r"at step (\d+)", resumed[0]).group(1))
            self.assertBetween(step, _KILL_AFTER, 599)  # killed mid-run, resumed from there
        _assert_weights_close(self, reference, checkpoint.load_model(workdir)[0].get_weights(), "float64")

    def test_killed_worker_makes_the_other_exit_with_one_line(self):
        for victim in (1, 0):
            with self.subTest(victim=victim):
                root = self.create_tempdir().full_path
                cluster = _Cluster(root, os.path.join(root, "run"), _FLAGS, watch=victim)
                progressed = cluster.wait_for(r"\] epoch 2: ")
                cluster.kill(victim)
                killed_at = time.monotonic()
                survivor = cluster.wait(1 - victim, timeout=_LOST_WITHIN)
                waited = time.monotonic() - killed_at
                outcomes = cluster.finish()
                self.assertIsNotNone(progressed, "the victim never logged epoch 2:\n" + _every_log(outcomes))
                self.assertLess(waited, _LOST_WITHIN, survivor.describe())
                self.assertNotIn(survivor.returncode, (0, -signal.SIGKILL), survivor.describe())
                self.assertRegex(survivor.stderr[-1], _ERROR_LINE)


# ----------------------------------------------------------------------------- streamed, two workers
_STREAM_SHARDS, _STREAM_ROWS = 4, 150
_STREAM_KILL_AFTER = 40


def _write_stream_shards(folder: str) -> str:
    """4 regression shards of 150 rows; their glob pattern."""
    rng = np.random.default_rng(0)
    for s in range(_STREAM_SHARDS):
        x = rng.uniform(-2, 2, size=(_STREAM_ROWS, 2))
        y = np.sin(x[:, 0]) * np.cos(x[:, 1]) + 0.05 * rng.standard_normal(_STREAM_ROWS)
        with open(os.path.join(folder, f"part-{s}.csv"), "w") as handle:
            handle.write(
                "x1,x2,y\n" + "".join(f"{a!r},{b!r},{c!r}\n" for (a, b), c in zip(x.tolist(), y.tolist()))
            )
    return os.path.join(folder, "part-*.csv")


def _stream_flags(pattern: str) -> tuple[str, ...]:
    # ~480 training rows, 120 per shard: each worker feeds 10 rows of the global batch of 20.
    return (
        f"--data=csv:{pattern}",
        "--target=y",
        "--stream",
        "--steps=120",
        "--batch_size=20",
        "--steps_per_call=8",
        "--checkpoint_every=20",
        "--hidden=4",
        "--dtype=float64",
        "--histogram_every=0",
    )


def _stream_config(pattern: str, workdir: str) -> config.TrainConfig:
    return config.TrainConfig(
        data=f"csv:{pattern}",
        target="y",
        stream=True,
        steps=120,
        batch_size=20,
        steps_per_call=8,
        hidden=(4,),
        dtype="float64",
        histogram_every=0,
        workdir=workdir,
    )


def _logged_shards(outcome: _Outcome) -> tuple[set[int], set[str]]:
    """(training shards this worker said it reads, the files its statistics pass scanned)."""
    trained, scanned = set(), set()
    for line in outcome.stderr:
        if match := re.search(r"input pipeline \d of 2 reads training shards \[([\d, ]*)\]", line):
            trained |= {int(s) for s in match[1].split(",") if s.strip()}
        if match := re.search(r"\] (\S+): scanned \d+ rows by the (fast|exact) reader", line):
            scanned.add(os.path.basename(match[1]))
    return trained, scanned


class StreamedMultiWorkerTest(tf.test.TestCase):
    """Two workers streaming four shards: disjoint shards, equal to one process fed the same
    global batches, and killed and rerun to the same weights."""

    def test_two_workers_read_disjoint_shards_and_equal_one_process_over_their_batches(self):
        root = self.create_tempdir().full_path
        pattern = _write_stream_shards(self.create_tempdir().full_path)
        workdir = os.path.join(root, "run")
        outcomes = _Cluster(root, workdir, _stream_flags(pattern)).finish()
        for outcome in outcomes:
            self.assertEqual(outcome.returncode, 0, outcome.describe())
        (trained0, scanned0), (trained1, scanned1) = map(_logged_shards, outcomes)
        self.assertEqual((trained0, trained1), ({0, 2}, {1, 3}))
        self.assertEqual((scanned0, scanned1), ({"part-0.csv", "part-2.csv"}, {"part-1.csv", "part-3.csv"}))
        weights = checkpoint.load_model(workdir)[0].get_weights()

        # One process over the same global batches: worker 0's 10 rows, then worker 1's.
        trainer = training.build(_stream_config(pattern, os.path.join(root, "single")))
        train, prep = trainer.datasets.train, trainer.datasets.preprocessing
        per_worker = [sum(train.shard_rows[s] for s in (w, w + 2)) // 10 for w in (0, 1)]
        steps = [
            pipeline.training_steps(
                train,
                prep,
                shards=[w, w + 2],
                seed=0,
                shuffle=True,
                batch=10,
                accum=1,
                steps_per_epoch=min(per_worker),
                dtype=tf.float64,
            )  # fmt: skip
            for w in (0, 1)
        ]
        both = tf.data.Dataset.zip(tuple(steps)).map(
            lambda a, b: tuple(tf.concat([u, v], 1) for u, v in zip(a, b))
        )
        plain = training.build(_stream_config(pattern, os.path.join(root, "plain")))
        trainer.feed = feed.StreamFeed(both, trainer.plan)
        for one in (trainer, plain):
            one.loop().run()
        _assert_weights_close(self, trainer.model.get_weights(), weights, "float64")
        # A single process streaming all shards cuts other batches: it differs.
        self.assertFalse(
            all(np.allclose(a, b, rtol=1e-6) for a, b in zip(plain.model.get_weights(), weights))
        )

    def test_both_killed_then_rerun_resume_their_own_input_to_the_same_weights(self):
        pattern = _write_stream_shards(self.create_tempdir().full_path)
        flags = _stream_flags(pattern)
        reference = os.path.join(self.create_tempdir().full_path, "run")
        for outcome in _Cluster(self.create_tempdir().full_path, reference, flags).finish():
            self.assertEqual(outcome.returncode, 0, outcome.describe())
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        cluster = _Cluster(self.create_tempdir().full_path, workdir, flags, watch=0)
        match = cluster.wait_for(r"\] checkpoint \S*ckpt-(\d+)$")
        while match and int(match.group(1)) < _STREAM_KILL_AFTER:
            match = cluster.wait_for(r"\] checkpoint \S*ckpt-(\d+)$")
        cluster.kill(0)
        cluster.kill(1)
        killed = cluster.finish()
        self.assertIsNotNone(match, killed[0].describe())
        rerun = _Cluster(self.create_tempdir().full_path, workdir, flags).finish()
        for outcome in rerun:
            self.assertEqual(outcome.returncode, 0, outcome.describe())
            resumed = [line for line in outcome.stderr if line.startswith("resuming from ")]
            self.assertLen(resumed, 1, outcome.describe())
        for w in (0, 1):  # each worker saved its own input position
            self.assertNotEmpty(os.listdir(os.path.join(workdir, "ckpt", f"input-{w}")))
        expected = checkpoint.load_model(reference)[0].get_weights()
        _assert_weights_close(self, expected, checkpoint.load_model(workdir)[0].get_weights(), "float64")

    def test_a_bad_shard_stops_every_worker_with_its_line_at_once(self):
        # Worker w scans part-w.csv; the other must not fail as if it had lost contact with it
        # (exit 1, "restart every worker") nor wait out --worker_timeout: the data's line, exit 2.
        for worker in (1, 0):
            with self.subTest(bad_shard_of_worker=worker):
                folder = self.create_tempdir().full_path
                pattern = _write_stream_shards(folder)
                bad = os.path.join(folder, f"part-{worker}.csv")
                with open(bad) as handle:
                    lines = handle.read().splitlines(keepends=True)
                lines[4] = "three," + lines[4].split(",", 1)[1]
                with open(bad, "w") as handle:
                    handle.write("".join(lines))
                root = self.create_tempdir().full_path
                workdir = os.path.join(root, "run")
                flags = (*_stream_flags(pattern), "--worker_timeout=60")
                outcomes = _Cluster(root, workdir, flags, timeout=_LOST_WITHIN * 2).finish()
                line = f'tf-backprop-train: error: {bad}:5:1 (column "x1"): expected a number, got "three"'
                for outcome in outcomes:
                    self.assertEqual(outcome.returncode, 2, outcome.describe())
                    self.assertEqual(outcome.stderr[-1], line, outcome.describe())
                self.assertFalse(os.path.exists(workdir))  # made for the run by the chief, removed

    def test_a_foreign_folder_is_refused_by_every_worker_with_its_line(self):
        # The other worker checked the folder only after the chief had opened it: it met the
        # chief's exit as a lost worker (exit 1, "restart every worker").
        root = self.create_tempdir().full_path
        workdir = os.path.join(root, "run")
        os.makedirs(workdir)
        with open(os.path.join(workdir, "notes.txt"), "w") as handle:
            handle.write("mine")
        flags = (*_stream_flags(_write_stream_shards(self.create_tempdir().full_path)), "--worker_timeout=60")
        for outcome in _Cluster(root, workdir, flags, timeout=_LOST_WITHIN * 2).finish():
            self.assertEqual(outcome.returncode, 2, outcome.describe())
            self.assertRegex(
                outcome.stderr[-1], r"--workdir: \S+/run is not empty and not a tf_backprop run folder"
            )
        self.assertEqual(os.listdir(workdir), ["notes.txt"])


class RunFolderOrderTest(tf.test.TestCase):
    """Under multi_worker no worker reads the folder while the chief writes it: a worker checking
    it then met the chief's writability probe (or a restart half moved aside) and refused a good
    folder (a CI failure).  Every worker checks first; the chief writes only after a barrier."""

    def test_the_chief_writes_nothing_before_every_worker_has_checked(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        trainer = training.build(_config(workdir))
        seen = []  # what the folder held at each barrier (the second shares the chief's failure)

        def barrier(strategy, what, *_):
            seen.append(sorted(os.listdir(workdir)) if os.path.exists(workdir) else None)

        with (
            mock.patch.object(distributed, "is_multi_worker", return_value=True),
            mock.patch.object(distributed, "barrier", side_effect=barrier),
            mock.patch.object(distributed, "first_failure", side_effect=barrier),
            mock.patch.object(workdir_lib, "check_read_only", wraps=workdir_lib.check_read_only) as checked,
        ):
            with training_api._run_folder(trainer, restart=False) as (folder, _):
                self.assertEqual(folder, workdir)
        checked.assert_called_once()
        self.assertEqual(seen, [None, [".lock", "config.json", "data.json"]])


class LockedFolderTest(tf.test.TestCase):
    def test_a_folder_locked_by_another_run_is_refused_by_every_worker_with_its_line(self):
        # Only the chief takes the lock: the other worker met its exit as a lost worker (exit 1,
        # "restart every worker"), though nothing was wrong but the folder.
        root = self.create_tempdir().full_path
        workdir = os.path.join(root, "run")
        os.makedirs(workdir)
        with open(os.path.join(workdir, ".lock"), "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # another run, as RunLock takes it
            outcomes = _Cluster(root, workdir, _FLAGS, timeout=_LOST_WITHIN * 2).finish()
        for outcome in outcomes:
            self.assertEqual(outcome.returncode, 2, outcome.describe())
            self.assertRegex(outcome.stderr[-1], r"--workdir: \S+/run is in use by another run")
        self.assertEqual(os.listdir(workdir), [".lock"])


class DisagreeingWorkersTest(tf.test.TestCase):
    """Workers started with different flags are refused, and the chief leaves no run folder: its
    config.json would refuse the corrected command's rerun as another run."""

    def test_different_flags_exit_2_and_leave_no_run_folder(self):
        root = self.create_tempdir().full_path
        workdir = os.path.join(root, "new", "run")
        cluster = _Cluster(root, workdir, _FLAGS, extra={1: ("--learning_rate=0.02",)})
        for outcome in cluster.finish():
            self.assertEqual(outcome.returncode, 2, outcome.describe())
            self.assertEqual(
                outcome.stderr[-1],
                "tf-backprop-train: error: start-up: the workers were started with different flags or "
                "data; give every worker the same command (only TF_CONFIG differs)",
            )
        self.assertFalse(os.path.exists(os.path.join(root, "new")))  # nor the parent it made


class WorkerTimeoutTest(tf.test.TestCase):
    """--worker_timeout: a worker that never starts does not block the others forever."""

    def test_ctrl_c_ends_a_worker_waiting_for_the_others(self):
        # The wait holds the interpreter in TensorFlow's C++ (from its "Started server" line):
        # Ctrl-C's KeyboardInterrupt came only after --worker_timeout.  Now SIGINT's default
        # action ends the worker at once; nothing is written yet.
        for alone in (0, 1):  # the coordination service's leader, then a follower
            with self.subTest(alone=alone):
                root = self.create_tempdir().full_path
                flags = (*_FLAGS, "--worker_timeout=240")
                cluster = _Cluster(
                    root, os.path.join(root, "run"), flags, watch=alone, launch=(alone,), verbose_tf=True
                )
                self.assertIsNotNone(cluster.wait_for(r"Started server with target"))
                start = time.monotonic()
                cluster.procs[alone].send_signal(signal.SIGINT)
                (outcome,) = cluster.finish()
                self.assertEqual(outcome.returncode, -signal.SIGINT, outcome.describe())
                self.assertLess(time.monotonic() - start, 120)  # the wait's end is 240 s away
                self.assertFalse(os.path.exists(os.path.join(root, "run")))

    def test_one_of_two_workers_alone_exits_1_naming_the_other(self):
        for alone in (0, 1):  # the chief (the coordination service's leader), then the other
            with self.subTest(alone=alone):
                root = self.create_tempdir().full_path
                flags = (*_FLAGS, f"--worker_timeout={_WORKER_TIMEOUT}")
                cluster = _Cluster(root, os.path.join(root, "run"), flags, watch=alone, launch=(alone,))
                (outcome,) = cluster.finish()  # the test's watchdog kills it (exit -9) after _TIMEOUT
                self.assertEqual(outcome.returncode, 1, outcome.describe())
                other, port = 1 - alone, cluster.ports[1 - alone]
                self.assertRegex(
                    outcome.stderr[-1],
                    rf"^tf-backprop-train: error: start-up: the other workers did not all connect within "
                    rf"{_WORKER_TIMEOUT} s; no answer from worker {other} \(127\.0\.0\.1:{port}\); start "
                    rf"every worker with the same command",
                )
                self.assertNotIn("Traceback", "\n".join(outcome.stderr))
                self.assertFalse(os.path.exists(os.path.join(root, "run")))  # nothing was written
