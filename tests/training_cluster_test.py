"""training.cluster: naming the workers that do not answer (a start-up that ends is tested with
real workers in training_distributed_test.py)."""

import contextlib
import socket

import tensorflow as tf

from tf_backprop.training import cluster


class SilentWorkersTest(tf.test.TestCase):
    def test_names_only_the_addresses_that_refuse_a_connection(self):
        with contextlib.ExitStack() as stack:
            listening = stack.enter_context(socket.socket())
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            closed = stack.enter_context(socket.socket())
            closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            up, down = (f"127.0.0.1:{s.getsockname()[1]}" for s in (listening, closed))
            workers = {"worker": ["127.0.0.1:1", up, down]}
            me = {"type": "worker", "index": 0}  # never probed: its own address
            self.assertEqual(cluster.silent_workers(workers, me), [f"worker 2 ({down})"])
            self.assertEqual(cluster.silent_phrase(workers, me), f"; no answer from worker 2 ({down})")
            self.assertIn(
                "every worker's address answers", cluster.silent_phrase({"worker": ["127.0.0.1:1", up]}, me)
            )

    def test_the_chief_is_task_chief_or_worker_0(self):
        self.assertTrue(cluster.is_chief_task({"worker": ["a:1", "b:2"]}, "worker", 0))
        self.assertFalse(cluster.is_chief_task({"worker": ["a:1", "b:2"]}, "worker", 1))
        self.assertTrue(cluster.is_chief_task({"chief": ["c:3"], "worker": ["a:1"]}, "chief", 0))
        self.assertFalse(cluster.is_chief_task({"chief": ["c:3"], "worker": ["a:1"]}, "worker", 0))
