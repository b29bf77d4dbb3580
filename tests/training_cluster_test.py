"""training.cluster: naming the workers that do not answer (a start-up that ends is tested with
real workers in training_distributed_test.py)."""

import contextlib
import socket

import tensorflow as tf

from tf_backprop.training import cluster, tf_config


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
            self.assertEqual(
                cluster.silent_phrase({"worker": ["127.0.0.1:1", up]}, me),
                "; every worker's address answers (is one stuck, started with another TF_CONFIG, or its "
                "port held by another program?)",  # a worker whose port was taken exits; it answers
            )

    def test_a_port_another_process_listens_on_is_named_before_tensorflow_fails_on_it(self):
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            taken = f"127.0.0.1:{other.getsockname()[1]}"
            workers = {"worker": [taken, "127.0.0.1:1"]}
            with self.assertRaisesRegex(
                cluster.ConfigError, rf"^TF_CONFIG: this task's address {taken} \(worker 0\) cannot be served"
            ):
                cluster.check_own_port_free(workers, {"type": "worker", "index": 0})
        cluster.check_own_port_free(workers, {"type": "worker", "index": 0})  # closed: free again

    def test_the_chief_is_task_chief_or_worker_0(self):
        self.assertTrue(tf_config.is_chief_task({"worker": ["a:1", "b:2"]}, "worker", 0))
        self.assertFalse(tf_config.is_chief_task({"worker": ["a:1", "b:2"]}, "worker", 1))
        self.assertTrue(tf_config.is_chief_task({"chief": ["c:3"], "worker": ["a:1"]}, "chief", 0))
        self.assertFalse(tf_config.is_chief_task({"chief": ["c:3"], "worker": ["a:1"]}, "worker", 0))
