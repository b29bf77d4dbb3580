"""compile_ahead: a function launched on a second thread while a block runs, joined after it,
and its failures kept quiet (the engine's use of it: training_engine_test, MultiEpochCallTest)."""

import threading
from unittest import mock

import tensorflow as tf

from tf_backprop.training import compile_ahead


class CompiledMeanwhileTest(tf.test.TestCase):
    def test_the_launch_has_run_when_the_block_ends(self):
        launched = tf.Variable(0.0)

        @tf.function(jit_compile=True)
        def add(value):
            launched.assign_add(value)

        with compile_ahead.compiled_meanwhile(add, (tf.constant(2.0),), "/CPU:0"):
            pass
        self.assertEqual(float(launched.numpy()), 2.0)

    def test_the_function_is_traced_on_this_thread_before_the_block(self):
        tracing_threads = []

        def traced(value):
            tracing_threads.append(threading.current_thread())
            return value + 1.0

        with compile_ahead.compiled_meanwhile(traced, (tf.constant(1.0),), "/CPU:0"):
            self.assertEqual(tracing_threads, [threading.current_thread()])

    def test_a_failing_launch_is_logged_and_never_reaches_the_thread_hook(self):
        # Any exception of the launch: a TensorFlow error or another (here a device name that
        # tf.device rejects with a ValueError, in the thread); the block and its caller go on.
        for device, failure in (("/CPU:0", "must be positive"), ("not a device", "not a device")):
            with self.subTest(device=device):

                def check(value):
                    tf.debugging.assert_positive(value, message="must be positive")
                    return value

                with mock.patch.object(threading, "excepthook") as hook:
                    with self.assertLogs("absl", "DEBUG") as logs:
                        with compile_ahead.compiled_meanwhile(check, (tf.constant(-1.0),), device):
                            pass
                hook.assert_not_called()
                self.assertLen(logs.records, 1)
                self.assertIn("compiling ahead of the call failed", logs.output[0])
                self.assertIn(failure, logs.output[0])


if __name__ == "__main__":
    tf.test.main()
